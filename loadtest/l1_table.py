"""L1's lookups: the compiled table against a dict, at the sizes L1 holds (docs/design.md,
"The L1 table").

Fills a `native.Table` and a dict with the same `(expires_at, row)` entries (rows
shaped like a served row: event time, JSON, bytes, two tuples), then times batches
of `--batch` fresh keys drawn uniformly from them, reading each returned row's event
time as the status pass does. Prints the median ns per key of each, per size.

    python -m loadtest.l1_table [--sizes 1000 45000 200000] [--batch 100] [--batches 300]

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
from typing import Any

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


def measure(n: int, batch: int, batches: int) -> dict[str, float]:
    """ns per key for a table and a dict holding `n` rows."""
    table = native.Table(max(n, 500_000))
    entries: dict[bytes, tuple[float, Any]] = {}
    for i in range(n):
        key = b"lf:v1:room_stats:%d" % i
        row = (1_700_000_000_000 + i, b'"viewers":%d' % i * 8, b"", (), ())
        table.put(key, 1e12, row)
        entries[key] = (1e12, row)
    get = entries.get
    out = {}
    for _ in range(2):  # the second round is kept: the first warms allocator and caches
        out = {
            "table_ns_per_key": _time(lambda k: table.get_many(k, 1.0, MISS), n, batch, batches),
            "dict_ns_per_key": _time(lambda k: [get(x)[1] for x in k], n, batch, batches),  # type: ignore[index]
        }
    return out


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
    args = parser.parse_args()
    if args.sweep:
        print(f"native={native.IMPLEMENTATION}, {args.rows:,} entries all read, us per put")
        for limit, label in ((native.SWEEP_LIMIT, "default"), (args.rows * 4, "unbounded")):
            times = ", ".join(f"{t:.1f}" for t in sweep(args.rows, args.puts, limit))
            print(f"sweep limit {limit:>9,} ({label}): {times}")
        return
    print(f"native={native.IMPLEMENTATION}, batches of {args.batch} keys, median ns per key")
    for n in args.sizes:
        r = measure(n, args.batch, args.batches)
        print(
            f"{n:>9,} entries: table {r['table_ns_per_key']:7.1f}  dict {r['dict_ns_per_key']:7.1f}"
        )


if __name__ == "__main__":
    main()
