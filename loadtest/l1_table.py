"""L1's lookups: the compiled table against a dict, at the sizes L1 holds (docs/design.md,
"The L1 table").

Fills a `native.Table` and a dict with the same `(expires_at, row)` entries (rows
shaped like a served row: event time, JSON, bytes, two tuples), then times batches
of `--batch` fresh keys drawn uniformly from them, reading each returned row's event
time as the status pass does. Prints the median ns per key of each, per size.

    python -m loadtest.l1_table [--sizes 1000 45000 200000] [--batch 100] [--batches 300]
        [--other DIR]

With `--other DIR`, that tree's compiled table is timed too, in turn with this one's
(loadtest/native_builds.py).

With `--sweep`, the worst case of a put instead: a full table (`--rows`, default L1's
500,000) whose every entry has been read, then puts of new keys, with the default sweep
limit and without one (docs/design.md, "The L1 table"). Prints each put's microseconds.

    python -m loadtest.l1_table --sweep [--rows 500000] [--puts 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest import native_builds
from service import native

MISS = object()


def _time(lookup: Callable[[list[bytes]], list[Any]], n: int, batch: int, batches: int) -> float:
    """Median ns per key of `lookup` over `batches` batches of fresh keys."""
    per_key = []
    for _ in range(batches):
        keys = [b"lf:v1:room_stats:%d" % random.randrange(n) for _ in range(batch)]
        start = time.perf_counter_ns()
        total = 0
        for row in lookup(keys):
            total += row[0]
        per_key.append((time.perf_counter_ns() - start) / batch)
    return statistics.median(per_key)


def _table_run(table: Any, n: int, batch: int, batches: int) -> Callable[[], float]:
    return lambda: _time(lambda k: table.get_many(k, 1.0, MISS), n, batch, batches)  # type: ignore[no-any-return]


def measure(n: int, batch: int, batches: int, modules: dict[str, Any]) -> dict[str, float]:
    """Median ns per key for a dict and, per build in `modules` (native_builds.builds),
    a table holding `n` rows; the builds are timed in turn, four rounds (the first
    round warms allocator and caches, and is left out)."""
    tables = {name: module.Table(max(n, 500_000)) for name, module in modules.items()}
    entries: dict[bytes, tuple[float, Any]] = {}
    for i in range(n):
        key = b"lf:v1:room_stats:%d" % i
        row = (1_700_000_000_000 + i, b'"viewers":%d' % i * 8, b"", (), ())
        for table in tables.values():
            table.put(key, 1e12, row)
        entries[key] = (1e12, row)
    get = entries.get
    runs: dict[str, Callable[[], float]] = {
        name: _table_run(table, n, batch, batches) for name, table in tables.items()
    }
    runs["dict"] = lambda: _time(lambda k: [get(x)[1] for x in k], n, batch, batches)  # type: ignore[index]
    figures = native_builds.alternate(runs, 4)
    return {name: statistics.median(values[1:]) for name, values in figures.items()}


def sweep(rows: int, puts: int, sweep_limit: int) -> list[float]:
    """Microseconds of each of `puts` puts of new keys into a full table of `rows`
    entries, every one of them read (referenced) first."""
    table = native.Table(rows, sweep_limit)
    keys = [b"lf:v1:room_stats:%d" % i for i in range(rows)]
    for key in keys:
        table.put(key, 1e12, (0, b"", b"", (), ()))
    table.get_many(keys, 1.0, MISS)
    out = []
    for i in range(puts):
        start = time.perf_counter_ns()
        table.put(b"lf:v1:new:%d" % i, 1e12, (0, b"", b"", (), ()))
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 45_000, 200_000])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--sweep", action="store_true", help="time puts into a referenced table")
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--puts", type=int, default=5)
    parser.add_argument(
        "--other", type=Path, help="also time another tree's table (its hatch_build.py run)"
    )
    args = parser.parse_args()
    if args.sweep:
        print(f"native={native.IMPLEMENTATION}, {args.rows:,} entries all read, us per put")
        for limit, label in ((native.SWEEP_LIMIT, "default"), (args.rows * 4, "unbounded")):
            times = ", ".join(f"{t:.1f}" for t in sweep(args.rows, args.puts, limit))
            print(f"sweep limit {limit:>9,} ({label}): {times}")
        return
    try:
        modules = native_builds.builds(args.other)
    except ValueError as exc:
        raise SystemExit(f"l1_table: {exc}") from None
    print(f"batches of {args.batch} keys, median ns per key (this: {native.IMPLEMENTATION})")
    for n in args.sizes:
        r = measure(n, args.batch, args.batches, modules)
        print(f"{n:>9,} entries: " + "  ".join(f"{k} {v:7.1f}" for k, v in r.items()))


if __name__ == "__main__":
    main()
