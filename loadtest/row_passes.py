"""The compiled passes that read a bundle's rows after L1 found them: statuses and ages
(`resolve`), the HTTP answer (`join_json`) and a gRPC view block (`view_block`), on
rows spread over memory as L1's are (docs/design.md, "The L1 table").

Builds a pool of room-like rows (a 41-bit event time, a JSON fragment of about 1 kB,
float32 numeric bytes, a vector, a string entry) and times each pass over `--rows`
rows drawn at random from it, microseconds per call (median of `--calls` calls per
round). With `--other DIR`, that tree's compiled module is timed too, round by round
in turn (loadtest/native_builds.py), and the two answers are checked to be the same.

    python -m loadtest.row_passes [--rows 100 500] [--pool 20000] [--other DIR]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from loadtest import native_builds
from service.core.codec import JSON
from service.core.status import Status

EVENT_TIME_MS = 1_733_000_000_000
STATUS_JSON = {s: b'"room_stats":"%s"' % s.name.encode() for s in Status}
BLOCK_HEAD = (b"\x0a\x0aroom_stats", [b"\x0a\x08category"], [b"\x0a\x0eroom_embedding"])
ROW_PARTS = (2, 3, 4)  # NUMERIC, VECTORS, STRINGS (service/core/codec.py)


def pool(size: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """`size` rows shaped like decoded room rows, allocated one after another and
    shuffled, so that consecutive picks are far apart in memory."""
    rows = [
        (
            EVENT_TIME_MS + i,
            rng.randbytes(rng.randint(400, 560)).hex().encode(),
            rng.randbytes(96),
            (rng.randbytes(128),),
            (b"\x12\x05" + rng.randbytes(5),),
        )
        for i in range(size)
    ]
    rng.shuffle(rows)
    return rows


def passes(module: ModuleType, n: int) -> dict[str, Callable[[list[Any], list[int]], Any]]:
    """Each pass over `n` rows through `module` (a build of service/_native.c)."""
    found = [Status.FOUND] * n
    statuses = tuple(Status)
    unavailable = object()
    return {
        "resolve": lambda rows, ids: module.resolve(
            rows, EVENT_TIME_MS, 10**9, None, unavailable, statuses
        ),
        "join_json": lambda rows, ids: module.join_json(
            [b'{"rooms":[', (b"", ids, b"", rows, found, STATUS_JSON, JSON), b"]}"]
        ),
        "view_block": lambda rows, ids: module.view_block(
            *BLOCK_HEAD, rows, found, [0] * n, ROW_PARTS
        ),
    }


def _timer(
    fn: Callable[[list[Any], list[int]], Any], sets: list[tuple[list[Any], list[int]]]
) -> Callable[[], float]:
    """A round of `fn` over `sets` of (rows, ids): the median microseconds of a call."""

    def run() -> float:
        per_call = []
        for rows, ids in sets:
            start = time.perf_counter_ns()
            fn(rows, ids)
            per_call.append((time.perf_counter_ns() - start) / 1000)
        return statistics.median(per_call)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--pool", type=int, default=20_000, help="rows to draw from")
    parser.add_argument("--calls", type=int, default=300, help="calls per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--other", type=Path, help="another tree, its hatch_build.py run")
    args = parser.parse_args()
    try:
        modules = native_builds.builds(args.other)
    except ValueError as exc:
        raise SystemExit(f"row_passes: {exc}") from None
    rng = random.Random(7)
    rows_pool = pool(args.pool, rng)
    print(f"us per call, median of {args.rounds} rounds of {args.calls} calls, "
          f"rows drawn from {args.pool:,}")  # fmt: skip
    for n in args.rows:
        picks = [rng.sample(range(args.pool), n) for _ in range(args.calls)]
        sets = [([rows_pool[i] for i in pick], [i + 1 for i in pick]) for pick in picks]
        per_module = {name: passes(module, n) for name, module in modules.items()}
        for pass_name in per_module["this"]:
            fns = {name: p[pass_name] for name, p in per_module.items()}
            answers = {name: fn(*sets[0]) for name, fn in fns.items()}
            if len(set(map(repr, answers.values()))) > 1:
                raise SystemExit(f"row_passes: {pass_name} answers differ between the builds")

            figures = native_builds.alternate(
                {name: _timer(fn, sets) for name, fn in fns.items()}, args.rounds
            )
            print(f"{n:>4} rows  {pass_name:<10}  {native_builds.medians(figures)}")


if __name__ == "__main__":
    main()
