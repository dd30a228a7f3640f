"""The tiered store: one entry point over the pieces that each do one job.

    TieredStore          lifecycle (start, close) and the calls the core makes
    ├── ReadThrough      L1, then the durable tiers; fills; presence (readthrough.py)
    │   └── Coalescer    one fetch per key under way, own deadlines (coalesce.py)
    ├── Writer           every tier, then invalidation and notification (writer.py)
    ├── PresenceIndex    which pair keys exist, and when to trust that (presence_index.py)
    ├── WriteBehind      background fills, one queue per tier (writebehind.py)
    └── ChangeFeed       other replicas' writes, applied by a FeedSink (feed.py, replica.py)

Everything is built and wired in one place, service/store/factory.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from service.errors import TierError
from service.store.base import UNAVAILABLE, Items
from service.store.feed import ChangeFeed
from service.store.l1 import MISS
from service.store.metered import MeteredTier
from service.store.presence_index import PresenceIndex
from service.store.readthrough import Decoder, ReadThrough
from service.store.writebehind import WriteBehind
from service.store.writer import Writer

__all__ = ["UNAVAILABLE", "TieredStore"]
V = TypeVar("V")


class TieredStore(Generic[V]):
    """Reads (`reads`), writes (`writer`) and the background work both need."""

    def __init__(
        self,
        tiers: Sequence[MeteredTier],
        reads: ReadThrough[V],
        writer: Writer,
        fills: Sequence[WriteBehind] = (),
        presence: PresenceIndex | None = None,
        feed: ChangeFeed | None = None,
    ) -> None:
        self.tiers = tuple(tiers)
        self.reads = reads
        self.writer = writer
        self._fills = tuple(fills)
        self.presence = presence
        self._feed = feed

    def __repr__(self) -> str:
        return f"<TieredStore {self.reads!r}, {self.writer!r}, {list(self._fills)}>"

    async def read(
        self, groups: Sequence[tuple[Decoder[V], Sequence[bytes]]], timeout_s: float | None = None
    ) -> list[list[Any]]:
        """Rows per group of (decoder, keys): see ReadThrough.read."""
        return await self.reads.read(groups, timeout_s)

    async def get_many(
        self, keys: Sequence[bytes], decoders: Sequence[Decoder[V]], timeout_s: float | None = None
    ) -> list[Any]:
        """Rows aligned with `keys`: see ReadThrough.get_many."""
        return await self.reads.get_many(keys, decoders, timeout_s)

    async def put_many(self, items: Items, *, notify_values: bool = True) -> list[bool]:
        """Write durably: see Writer.put_many."""
        return await self.writer.put_many(items, notify_values=notify_values)

    async def subscribers(self) -> int:
        """Serving replicas subscribed to this store's change notifications (0 without
        Redis). Raises TierUnavailable."""
        publisher = self.writer.publisher
        return 0 if publisher is None else await publisher.subscribers()

    @property
    def publishes(self) -> bool:
        """Whether writes are announced to other replicas (a Redis is configured)."""
        return self.writer.publisher is not None

    def start(self) -> None:
        """A serving process's background work: the change feed (whose subscription
        builds the presence filter), or else the presence filter's build."""
        if self._feed is not None:
            self._feed.start()
        elif self.presence is not None:
            self.presence.rebuild()

    async def get_stored(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Stored values from the durable tiers only (bypassing L1), aligned with `keys`.

        Raises TierError if a key could not be answered by any tier.
        """
        found: dict[bytes, bytes | None] = {}
        pending = list(dict.fromkeys(keys))
        error: TierError | None = None
        for tier in self.tiers:
            if not pending:
                break
            try:
                values = await tier.get_many(pending)
            except TierError as exc:
                error = exc
                continue
            found.update((k, v) for k, v in zip(pending, values, strict=True) if v is not None)
            pending = [k for k, v in zip(pending, values, strict=True) if v is None]
        if pending and error is not None:
            raise error
        return [found.get(k) for k in keys]

    async def inspect(self, key: bytes) -> dict[str, Any]:
        """What each tier holds for `key`: L1's row (or None), each tier's bytes or error."""
        cached = self.reads.l1.get_many([key])[0]
        out: dict[str, Any] = {"l1": None if cached is MISS else cached}
        for tier in self.tiers:
            try:
                out[tier.name] = (await tier.get_many([key]))[0]
            except TierError as exc:
                out[tier.name] = exc
        return out

    async def sync(self) -> None:
        """Make every tier's writes so far durable."""
        for tier in self.tiers:
            await tier.sync()

    async def ready(self) -> bool:
        """Whether at least one durable tier can answer."""
        for tier in self.tiers:
            if await tier.ready():
                return True
        return False

    async def close(self) -> None:
        """Stop background work, write what the fills hold, close every tier."""
        if self._feed is not None:
            await self._feed.close()
        if self.presence is not None:
            await self.presence.close()
        await self.reads.close()
        if self.writer.publisher is not None:
            await self.writer.publisher.close()
        for fill in self._fills:
            await fill.drain()
        for tier in self.tiers:
            await tier.close()
