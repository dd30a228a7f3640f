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
        tier fails.

        Tiers are written in read order, the shared one (Redis) first, and a failure stops
        there: a write Redis refused is not left in this replica's RocksDB, where it would
        be served while Redis is away and then vanish (reads going back in time). If
        RocksDB fails after Redis took the write, Redis keeps it; sending it again is
        harmless (newest event wins).

        A write once begun runs to its end even if the caller is cancelled (its client
        went away, its deadline passed): a cancelled caller would otherwise leave the
        write in part, some script calls of a batch in Redis and others not, other
        replicas untold. The caller still gets CancelledError, once the write is done,
        so that what bounds callers (the write lock, admission) bounds the write too."""
        return await _to_the_end(self._put_many(items, notify_values))

    async def _put_many(self, items: Items, notify_values: bool) -> list[bool]:
        results: list[list[bool]] = []
        try:
            for tier in self.tiers:
                results.append(await tier.put_many(items))
        finally:
            self._reads.invalidate([k for k, _ in items])
        written = [any(flags) for flags in zip(*results, strict=True)]  # type: ignore[call-overload]
        if self._presence is not None:
            self._presence.add(k for (k, _), w in zip(items, written, strict=True) if w)
        if self.publisher is not None:
            changed = [item for item, w in zip(items, written, strict=True) if w]
            await self.publisher.publish(changed, notify_values)
        return written


async def _to_the_end(work: Any) -> Any:
    """Await the coroutine `work`, which a cancellation of the caller does not stop:
    the caller waits for it all the same, then the cancellation is raised."""
    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():  # the work itself was cancelled (the loop is closing)
                raise
            cancelled = exc
            continue
        except Exception:
            if cancelled is not None:  # the caller is gone: it gets its cancellation
                raise cancelled from None
            raise
        if cancelled is not None:
            raise cancelled
        return result
