"""L1: the in-process cache of decoded rows, bounded in rows, with a TTL per entry.

Backed by `native.Table` (service/_table.h; its specification is `native.PyTable`): a
hash table whose slots hold key, value and expiry together, evicting by CLOCK, an
approximation of least-recently-used (an entry read since the hand last passed it
gets a second chance). A batch of keys is looked up with its memory reads overlapped:
with tens of thousands of rows cached, a lookup in a dict or cachebox's LRUCache spent
most of its 350-450 ns waiting on memory (docs/design.md, "The L1 table").
An entry's value may be None, a cached "not stored", so that the many pairs that do
not exist are not looked up again every request.

No expiry waves: each entry lives `ttl_s` shortened by a random part of up to
`jitter` (rows cached together, at start or by one request, expire apart), and the
store refreshes entries that are read in the last `refresh_fraction` of their life
(`due`) in the background, so hot rows are replaced before they expire instead of
missing together. The TTL stays the bound on how old a cached row can be when a
change notification is lost (docs/operations.md): an entry is never served past it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Generic, TypeVar

from service import native

V = TypeVar("V")


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS: Final[Any] = _Miss()


class L1Cache(Generic[V]):
    """At most `max_rows` entries, each living `ttl_s` seconds.

    `max_rows=0` disables it (every get misses, puts are dropped). `clock`
    returns seconds and is injected so tests can move time.
    """

    def __init__(
        self,
        max_rows: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        jitter: float = 0.2,
        refresh_fraction: float = 0.25,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.max_rows = max_rows
        self.ttl_s = ttl_s
        self.evictions = 0
        self._clock = clock
        self._jitter_s = ttl_s * jitter
        self._refresh_s = ttl_s * refresh_fraction
        self._rng = rng
        self.suspended = False  # while change notifications may be missed: no caching
        self._table = native.Table(max(max_rows, 1))

    def __repr__(self) -> str:
        return f"<L1Cache [{len(self._table)}/{self.max_rows} rows, ttl {self.ttl_s}s]>"

    def __len__(self) -> int:
        return len(self._table)

    def get_many(self, keys: Sequence[bytes]) -> list[V | Any | None]:
        """Cached values aligned with `keys`: a value, None (cached absent) or MISS; a new
        list, the caller's to change."""
        if self.suspended:
            return [MISS] * len(keys)
        return self._table.get_many(keys if type(keys) is list else list(keys), self._clock(), MISS)

    def put_many(self, items: Iterable[tuple[bytes, V | None]]) -> int:
        """Cache each (key, value); None caches "not stored". Returns how many rows
        were evicted to make room."""
        if not self.max_rows or self.suspended:
            return 0
        expires_at = self._clock() + self.ttl_s
        jitter, rng, put = self._jitter_s, self._rng, self._table.put
        evicted = 0
        for key, value in items:
            evicted += put(key, expires_at - jitter * rng(), value)
        self.evictions += evicted
        return evicted

    def peek(self, key: bytes) -> V | Any | None:
        """The value cached for `key`, expired or not (None: cached absent), or MISS;
        for a reader that checks it against the stored value (readthrough.py)."""
        entry = self._table.peek(key)
        return MISS if entry is None else entry[1]

    def replace(self, key: bytes, old: V, new: V) -> None:
        """Put `new` in place of `old` if `key` holds `old` itself, keeping its expiry
        (a row rendered again: readthrough.py); else leave the entry as it is."""
        entry = self._table.peek(key)
        if entry is not None and entry[1] is old:
            self._table.put(key, entry[0], new)

    def due(self, keys: Sequence[bytes]) -> list[bytes]:
        """Those of `keys` whose entries are in the last part of their life (to refresh
        ahead of expiry); expired and absent keys are not included."""
        now = self._clock()
        soon = now + self._refresh_s
        peek = self._table.peek
        return [k for k in keys if (e := peek(k)) is not None and now < e[0] <= soon]

    def invalidate(self, keys: Iterable[bytes]) -> None:
        """Drop `keys` so the next read goes to the tiers below."""
        if not self.max_rows:
            return
        pop = self._table.pop
        for key in keys:
            pop(key)

    def clear(self) -> None:
        """Drop everything."""
        self._table.clear()

    def suspend(self) -> None:
        """Drop everything, and cache nothing until `resume` (every read goes below)."""
        self.suspended = True
        self._table.clear()

    def resume(self) -> None:
        """Cache again (after `suspend`)."""
        self.suspended = False
