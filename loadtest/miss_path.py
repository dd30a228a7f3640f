"""The bookkeeping of a read that misses L1, without the tier and without decoding:
`ReadThrough.get_many` of 101 keys (a user and 100 rooms) with L1 off, against a tier
that answers each read after one turn of the event loop, through a decoder that does
no work. What is left is what the store does per missed key: the dict of the misses,
single flight's claim and release (service/store/coalesce.py), the fetch task, taking
the rows and putting them in place (docs/design.md, "The compiled hot path").

Prints microseconds per read (median of `--rounds` rounds of `--reads` reads by each
of `--concurrency` readers). With `--other DIR`, the same loop runs with that tree's
`service` package first on the path (its `hatch_build.py` run), in a process of its
own, round by round in turn with this tree's, and the ratio of the medians follows.

    python -m loadtest.miss_path [--concurrency 8] [--reads 2000] [--rounds 7] [--other DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROW = (1_733_000_000_000, b'"v.f":1', b"", (), ())  # a decoded row (codec.py: Row)


class AtOnceTier:
    """A tier whose every key holds `value`, answered after one turn of the loop."""

    name = "fake"

    def __init__(self, value: bytes) -> None:
        self.value = value

    async def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        await asyncio.sleep(0)
        return [self.value] * len(keys)

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> list[bool]:
        return [True] * len(items)


class NoWorkDecoder:
    """Decodes every value to ROW, one by one or in a batch."""

    def __call__(self, buf: bytes) -> Any:
        return ROW

    def decode_rows(self, bufs: list[bytes]) -> list[Any]:
        return [ROW] * len(bufs)


def requests(count: int, rng: random.Random) -> list[list[bytes]]:
    """`count` reads of a user and 100 rooms (of 20,000), as keys."""
    return [
        [b"room_stats:1:%d" % r for r in rng.sample(range(20_000), 100)]
        + [b"user_profile:1:%d" % rng.randrange(100_000)]
        for _ in range(count)
    ]


async def measure(concurrency: int, reads: int, seed: int = 1) -> tuple[float, list[Any]]:
    """Microseconds per read by `concurrency` readers of `reads` reads each, and the
    rows of the last read (every one ROW: checked by the tests)."""
    from service.store.l1 import L1Cache
    from service.store.metered import MeteredTier
    from service.store.readthrough import ReadThrough

    store = ReadThrough(L1Cache(0, 5.0), [MeteredTier(AtOnceTier(b"x" * 300))])  # type: ignore[arg-type]
    keys = requests(1000, random.Random(seed))
    decoders = [NoWorkDecoder()] * 101
    last: list[Any] = []

    async def reader(i: int) -> None:
        nonlocal last
        for j in range(reads):
            last = await store.get_many(keys[(i * 37 + j) % len(keys)], decoders, 1.0)

    start = time.perf_counter()
    await asyncio.gather(*[reader(i) for i in range(concurrency)])
    return (time.perf_counter() - start) / (concurrency * reads) * 1e6, last


def one_round(concurrency: int, reads: int) -> float:
    import uvloop

    us, _ = uvloop.run(measure(concurrency, reads))
    return us


def other_round(tree: Path, concurrency: int, reads: int) -> float:
    """One round in a process with `tree`'s service package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    cmd = [sys.executable, __file__, "--one-round", "--concurrency", str(concurrency),
           "--reads", str(reads)]  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.miss_path", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--reads", type=int, default=2000, help="reads per reader per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--other", type=Path, help="another tree, its hatch_build.py run")
    p.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_round:  # a round of --other's, in its own process
        print(one_round(args.concurrency, args.reads))
        return
    if args.other is not None and not (args.other / "service" / "store").is_dir():
        p.error(f"--other {args.other}: no service/store there")
    this: list[float] = []
    other: list[float] = []
    for i in range(args.rounds):
        sides = [("this", this), ("other", other)] if args.other else [("this", this)]
        for name, figures in sides if i % 2 == 0 else sides[::-1]:
            if name == "this":
                figures.append(one_round(args.concurrency, args.reads))
            else:
                figures.append(other_round(args.other, args.concurrency, args.reads))
    out: dict[str, Any] = {"concurrency": args.concurrency, "keys": 101,
                           "this_us": round(statistics.median(this), 1)}  # fmt: skip
    if args.other:
        out["other_us"] = round(statistics.median(other), 1)
        out["this/other"] = round(out["this_us"] / out["other_us"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
