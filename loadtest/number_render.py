"""The compiled number rendering (service/_shortest.h) per shape of data: ns a number,
and whether the bytes are orjson's.

    python loadtest/number_render.py [--count 100000] [--repeat 15]

Run as a script (not with -m), it renders with the `service` package first on the path:
`PYTHONPATH=/tmp/old python loadtest/number_render.py` measures another tree's build
(docs/benchmarks.md, twelfth session). The standard data's numbers are random, with all
the digits their width needs; real features are often rounded (a price, a rate out of a
count, an integer kept as a double), which the shortest-decimal search renders with
more steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

if __package__ in (None, ""):  # run as a script: this tree's `service` unless PYTHONPATH says
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from service import native

Shape = Callable[[np.random.Generator, int], np.ndarray]
SHAPES: dict[str, Shape] = {
    "f64 random in [0, 1)": lambda rng, n: rng.random(n),
    "f64 random x 1000": lambda rng, n: rng.random(n) * 1000,
    "f64 2 decimals": lambda rng, n: np.round(rng.random(n) * 1000, 2),
    "f64 4 decimals": lambda rng, n: np.round(rng.random(n), 4),
    "f64 x.5": lambda rng, n: np.floor(rng.random(n) * 1000) + 0.5,
    "f64 integers": lambda rng, n: np.floor(rng.random(n) * 1e6),
    "f32 random normal": lambda rng, n: rng.standard_normal(n).astype(np.float32),
    "f32 4 decimals": lambda rng, n: np.round(rng.random(n), 4).astype(np.float32),
    "f32 x.25": lambda rng, n: (np.floor(rng.random(n) * 100) + 0.25).astype(np.float32),
}


def measure(count: int, repeat: int, seed: int = 1) -> list[tuple[str, float, bool]]:
    """Per shape: the best ns a number over `repeat` renderings of `count` numbers, and
    whether the bytes are orjson's."""
    render = native.json_numbers
    if render is None:
        raise RuntimeError("service._native is not built: nothing to measure")
    rng = np.random.default_rng(seed)
    out = []
    for name, make in SHAPES.items():
        values = make(rng, count)
        raw, width = values.tobytes(), values.dtype.itemsize
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            rendered = render(raw, width)
            best = min(best, time.perf_counter() - start)
        same = rendered == orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
        out.append((name, 1e9 * best / count, same))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args(argv)
    print(f"service from {Path(native.__file__).parent}")
    rows = measure(args.count, args.repeat)
    for name, ns, same in rows:
        print(
            f"{name:22s} {ns:6.1f} ns  {'same bytes as orjson' if same else 'DIFFERS from orjson'}"
        )
    return 0 if all(same for _, _, same in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
