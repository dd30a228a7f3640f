"""A Bloom filter of the keys stored under some prefixes (the user x room views).

Most pairs a ranker asks about do not exist (docs/benchmark-workload.md: about 96 of 100),
and users are spread so widely that caching "absent" in L1 only floods it:
without this filter every request paid a RocksDB or Redis lookup for about 100
absent pairs. A key the filter has never seen is certainly absent; one it has
seen (or a false positive, about 0.5% at 16 bits per key) is looked up as usual.

It is only trusted once built from every durable tier (a scan of keys), and
while change notifications flow: a replica that loses its subscription stops
trusting it until it has been rebuilt. Keys only ever get added (a value that
expires merely costs a lookup).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from service import native


class PresenceFilter:
    """Bloom filter over keys starting with one of `prefixes`; 3 hashes, 16 bits per key.

    Adds are vectorised with numpy (2,000 pair keys: 1.02 -> 0.20 us per key); lookups,
    100 per request, are compiled (service/native.py): 100 took 21 us with numpy and
    0.4 us compiled with the bits in the CPU's cache; in a served request, where they
    mostly are not, about 5% of the server's profile.
    """

    HASHES = 3

    def __init__(self, prefixes: Sequence[bytes], capacity: int = 2_000_000) -> None:
        self.prefixes = tuple(prefixes)
        self.capacity = capacity
        self.bits = max(capacity * 16, 1 << 16)
        self._array = np.zeros(self.bits // 8 + 1, dtype=np.uint8)
        self.count = 0
        self.trusted = False
        self.generation = 0  # bumped each time a rebuild starts

    def __repr__(self) -> str:
        state = "trusted" if self.trusted else "not trusted"
        return f"<PresenceFilter {self.count}/{self.capacity} keys, {state}>"

    def watches(self, key: bytes) -> bool:
        """Whether `key` is under one of the filter's prefixes."""
        return key.startswith(self.prefixes)

    def add(self, keys: Iterable[bytes]) -> None:
        """Record keys that are (now) stored; keys under other prefixes are ignored."""
        prefixes = self.prefixes
        watched = [key for key in keys if key.startswith(prefixes)]
        if watched:
            index, mask = native.bloom_positions(self.bits, watched)
            np.bitwise_or.at(self._array, index, mask)
            self.count += len(watched)

    def maybe_stored(self, keys: Sequence[bytes]) -> list[int]:
        """The indexes (in order) of the keys that may be stored; the others certainly
        are not."""
        return native.maybe_stored(
            self._array, self.bits, keys if type(keys) is list else list(keys)
        )

    def clear(self) -> None:
        """Forget every key (before a rebuild)."""
        self._array = np.zeros_like(self._array)
        self.count = 0
