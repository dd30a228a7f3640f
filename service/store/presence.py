"""A Bloom filter of the keys stored under some prefixes (the user x room views).

Most pairs a ranker asks about do not exist (BENCHMARK.md: about 96 of 100),
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

_MASK64 = (1 << 64) - 1


class PresenceFilter:
    """Bloom filter over keys starting with one of `prefixes`; 3 hashes, 16 bits per key."""

    HASHES = 3

    def __init__(self, prefixes: Sequence[bytes], capacity: int = 2_000_000) -> None:
        self.prefixes = tuple(prefixes)
        self.capacity = capacity
        self.bits = max(capacity * 16, 1 << 16)
        self._array = bytearray(self.bits // 8 + 1)
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
        array, bits, prefixes = self._array, self.bits, self.prefixes
        added = 0
        for key in keys:
            if key.startswith(prefixes):
                h = hash(key) & _MASK64
                h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
                p0, p1, p2 = h1 % bits, (h1 + h2) % bits, (h1 + 2 * h2) % bits
                array[p0 >> 3] |= 1 << (p0 & 7)
                array[p1 >> 3] |= 1 << (p1 & 7)
                array[p2 >> 3] |= 1 << (p2 & 7)
                added += 1
        self.count += added

    def might_contain(self, keys: Sequence[bytes]) -> list[bool]:
        """False where the key is certainly not stored; True where it may be."""
        array, bits = self._array, self.bits
        out = []
        for key in keys:
            h = hash(key) & _MASK64
            h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
            p0, p1, p2 = h1 % bits, (h1 + h2) % bits, (h1 + 2 * h2) % bits
            out.append(
                bool(array[p0 >> 3] & (1 << (p0 & 7)))
                and bool(array[p1 >> 3] & (1 << (p1 & 7)))
                and bool(array[p2 >> 3] & (1 << (p2 & 7)))
            )
        return out

    def clear(self) -> None:
        """Forget every key (before a rebuild)."""
        self._array = bytearray(len(self._array))
        self.count = 0
