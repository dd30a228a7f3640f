"""The presence filter's lookup (`native.maybe_stored`) at the standard workload's size
(docs/design.md, "Read path": pair keys asked of the filter before L1).

Fills a filter of the default capacity (2,000,000 keys) with 1,000,000 random pair keys,
then times the lookup of 100 fresh keys of one user (no cached hash, as a request builds
them), with the bit array left in cache and pushed out of it between lookups (a pass over
a 16 MB buffer, as the rest of a request does). Prints us per 100 keys, per round.

    python -m loadtest.presence_filter [--rounds 5] [--lookups 5000]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from service import native
from service.store.presence import PresenceFilter

USERS, ROOMS, STORED, CAPACITY, ASKED = 100_000, 20_000, 1_000_000, 2_000_000, 100


def measure(rounds: int, lookups: int) -> dict[str, list[float]]:
    """us per lookup of ASKED keys, per round: in cache and out of it."""
    rng = random.Random(1)
    bloom = PresenceFilter([b"pair:"], capacity=CAPACITY)
    bloom.add([b"pair:%d:%d" % (rng.randrange(USERS), rng.randrange(ROOMS)) for _ in range(STORED)])
    users = [rng.randrange(USERS) for _ in range(lookups)]
    asked = [[b"pair:%d:%d" % (u, rng.randrange(ROOMS)) for _ in range(ASKED)] for u in users]
    junk = np.zeros(16 << 20, dtype=np.uint8)
    out: dict[str, list[float]] = {"in cache": [], "out of cache": []}
    for _ in range(rounds):
        for kind, evict in (("in cache", False), ("out of cache", True)):
            fresh = [[bytes(bytearray(k)) for k in keys] for keys in asked]  # no cached hash
            spent = 0.0
            for keys in fresh:
                if evict:
                    junk[::64] += 1
                start = time.perf_counter()
                native.maybe_stored(bloom._array, bloom.bits, keys)
                spent += time.perf_counter() - start
            out[kind].append(round(spent / lookups * 1e6, 2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=5000)
    args = parser.parse_args()
    print(f"maybe_stored ({native.IMPLEMENTATION}), {ASKED} keys, filter of {CAPACITY:,} "
          f"holding {STORED:,}: us per lookup")  # fmt: skip
    for kind, figures in measure(args.rounds, args.lookups).items():
        print(f"  {kind:>12}: " + " ".join(f"{f:.1f}" for f in figures))


if __name__ == "__main__":
    main()
