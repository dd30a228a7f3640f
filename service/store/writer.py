"""Writes: every durable tier at once, newest event wins in each; then readers forget
the written keys, the presence index learns them, and other replicas are told.

The order is what makes a read after an acknowledged write see it: the keys are
forgotten in L1 and in fetches under way (readthrough.py) only once every tier has
the new value, and before `put_many` returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from service.store.base import Items
from service.store.metered import MeteredTier
from service.store.presence_index import PresenceIndex
from service.store.readthrough import ReadThrough


class Announcer(Protocol):
    """Tells other readers of the store about accepted writes: Redis pub/sub between
    replicas (feed.Publisher), or the workers of one pod (service/workers/peers.py)."""

    async def publish(self, items: Items, with_values: bool = True) -> None:
        """Announce written items; returns once readers have applied them (bounded).
        Never raises."""
        ...

    async def subscribers(self) -> int:
        """How many readers listen. Raises TierUnavailable."""
        ...

    async def close(self) -> None:
        """Release what it holds."""
        ...


class Writer:
    """Writes into `tiers`, then tells `reads`, `presence` and `publisher` (if any)."""

    def __init__(
        self,
        tiers: Sequence[MeteredTier],
        reads: ReadThrough[Any],
        presence: PresenceIndex | None = None,
        publisher: Announcer | None = None,
    ) -> None:
        self.tiers = tuple(tiers)
        self._reads = reads
        self._presence = presence
        self.publisher = publisher

    def __repr__(self) -> str:
        return f"<Writer {' + '.join(t.name for t in self.tiers)}>"

    async def put_many(self, items: Items, *, notify_values: bool = True) -> list[bool]:
        """Write to every durable tier; returns, aligned, whether each item was newer than
        what some tier held. Other replicas get the written keys, with their values (for
        their RocksDB) unless `notify_values` is False (bulk loads). Raises TierError if a
        tier fails (the others may hold the write: sending it again is harmless)."""
        try:  # every tier at once: RocksDB on its threads, Redis on the socket
            results = await asyncio.gather(
                *(t.put_many(items) for t in self.tiers), return_exceptions=True
            )
        finally:
            self._reads.invalidate([k for k, _ in items])
        for result in results:
            if isinstance(result, BaseException):
                raise result
        written = [any(flags) for flags in zip(*results, strict=True)]  # type: ignore[call-overload]
        if self._presence is not None:
            self._presence.add(k for (k, _), w in zip(items, written, strict=True) if w)
        if self.publisher is not None:
            changed = [item for item, w in zip(items, written, strict=True) if w]
            await self.publisher.publish(changed, notify_values)
        return written
