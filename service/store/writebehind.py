"""Background writes into one tier through a bounded queue: fills of Redis from
RocksDB, and of the local RocksDB from Redis and from change notifications.

No request waits on it. When the queue is full, new items are dropped and
counted (livefeat_write_behind_dropped_total): a fill is an optimisation, and
a bounded queue keeps a slow tier from growing memory without limit.

The fill of the local RocksDB (`remember`) skips what it has already written: a
row Redis serves again and again (every L1 expiry, or every read with L1 off) is
offered each time with the same header (event time and version), and RocksDB,
which keeps it as its last good copy, already has it. Without that, each such
row cost a queue entry, a RocksDB read-compare-write, and the Python of both
under the GIL the serving loop needs. A notification's newer value has another
header and is written. The memory of what was written (`native.memo`) holds the
key's hash and the 8-byte header in one 16-byte slot, for at most `remember` keys
(then it starts again), and is forgotten when a write fails (the tier may not hold
what was queued). With L1 off, every row a read serves is offered, so the check
runs compiled, a batch at a time with its memory reads prefetched
(`native.unwritten`). Over a dict of hash -> header it took about 4.5% of a cold
HTTP read's CPU, its lookups waiting on memory: four objects per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from service import metrics, native
from service.errors import TierError

Items = Sequence[tuple[bytes, bytes]]
log = logging.getLogger(__name__)


class WriteBehind:
    """A bounded queue of (key, value) items and one task writing them in batches."""

    def __init__(
        self,
        name: str,
        put: Callable[[Items], Awaitable[object]],
        max_items: int = 200_000,
        batch_items: int = 2_000,
        remember: int = 0,
    ) -> None:
        self.name = name
        self.max_items = max_items
        self._put = put
        self._batch_items = batch_items
        self._queue: list[tuple[bytes, bytes]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._remember = remember
        self._memo = native.memo(remember) if remember else None  # key -> header queued
        self._remembered = 0  # the memo's slots in use
        self._dropped = metrics.WRITE_BEHIND_DROPPED.labels(name)
        self._depth = metrics.WRITE_BEHIND_QUEUED.labels(name)

    def __repr__(self) -> str:
        return f"<WriteBehind {self.name} [{len(self._queue)}/{self.max_items} queued]>"

    def offer(self, items: Items) -> int:
        """Queue what fits; returns how many items were dropped. Never blocks."""
        memo = self._memo
        if memo is not None:  # compiled: a cold read offers every row, every time
            items = native.unwritten(memo, items if isinstance(items, list) else list(items))
            if not items:
                return 0
        room = self.max_items - len(self._queue)
        take = list(items[: max(room, 0)])
        dropped = len(items) - len(take)
        if dropped:
            self._dropped.inc(dropped)
        if take:
            if memo is not None:
                if self._remembered + len(take) > self._remember:
                    self._forget()
                # (a batch larger than the memory: its last `remember` items)
                self._remembered += native.remember(self._memo, take[-self._remember :])  # type: ignore[arg-type]
            self._queue += take
            self._depth.set(len(self._queue))
            self._idle.clear()
            self._wake.set()
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._run())
        return dropped

    def _forget(self) -> None:
        """Start the memory of what was written again, empty."""
        if self._memo is not None:
            self._memo = native.memo(self._remember)
            self._remembered = 0

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._queue[: self._batch_items]
            del self._queue[: self._batch_items]
            self._depth.set(len(self._queue))
            try:
                await self._put(batch)
            except TierError:  # counted where the tier call is recorded
                self._forget()
            except Exception:  # a bug must not end the task: later fills still matter
                self._forget()
                log.exception("a background write of %d rows into %s failed", len(batch), self.name)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until the queue is written (at most `timeout_s`), then stop the task."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
