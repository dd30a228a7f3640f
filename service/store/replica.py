"""What a replica does with other replicas' change notifications (a FeedListener)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.store.base import Items
from service.store.presence_index import PresenceIndex
from service.store.readthrough import ReadThrough
from service.store.writebehind import WriteBehind


class FeedSink:
    """Applies notifications: readers forget written keys, the presence index learns
    them, and values that came along go to the local tier (`local`, its last good copy)."""

    def __init__(
        self,
        reads: ReadThrough[Any],
        presence: PresenceIndex | None = None,
        local: WriteBehind | None = None,
    ) -> None:
        self._reads = reads
        self._presence = presence
        self._local = local

    def __repr__(self) -> str:
        return f"<FeedSink {self._reads!r}>"

    def absorb(self, items: Items, keys: Sequence[bytes]) -> None:
        """Another replica wrote `keys` (`items`: the values of some of them)."""
        self._reads.invalidate(keys)
        if self._presence is not None:
            self._presence.add(keys)
        if items and self._local is not None:
            self._local.offer(items)

    def resync(self) -> None:
        """(Re)subscribed, or told to: drop L1 and rebuild the presence filter."""
        self._reads.clear()
        if self._presence is not None:
            self._presence.rebuild()

    def lost(self) -> None:
        """Unsubscribed: what other replicas write is no longer heard. L1 could serve
        older values and the presence filter could miss new pairs: neither is used until
        the subscription is back (`resync`)."""
        self._reads.suspend()
        if self._presence is not None:
            self._presence.distrust()
