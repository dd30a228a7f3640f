"""One RocksDB, N workers: worker 0 holds it (the primary), the others read it as
secondary instances and send their writes to worker 0 over the local channel.

    worker k (secondary)                         worker 0 (primary)
    Writer -> ForwardingTier.put_many --WRITE--> Writer -> RocksTier (synced)
                                                   -> PeerFanout --CHANGED--> every worker j != 0:
                                                        PeerSink: catch up, forget the keys in L1
    <- written flags, after every CHANGED answered <-

So a push is acknowledged, by whichever worker took it, only once every worker
has caught up and dropped the written keys from L1: a read that starts after the
acknowledgement, on any worker, reads the new value. A worker that does not
answer CHANGED within `timeout_s` is killed (SIGKILL, by the pid the supervisor
recorded) before the push is acknowledged; the supervisor starts it again.

A worker 0 that died between writing and announcing a write answered nobody,
but a retry of that push would be ignored as not newer and acknowledged: so
worker 0, when it starts, first tells every other worker to RESYNC (catch up,
drop all of L1, rebuild the presence filter) and only then takes writes.
Catching up costs (RocksTier.catch_up) about 1 ms, 3 ms more when worker 0 has
flushed or compacted since (the secondary is opened again: RocksDB's own catch-up
would keep serving an older value, docs/reliability.md, defect 9); the CHANGED round
trip as a whole is recorded in livefeat_worker_sync_duration_seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from service import metrics
from service.errors import TierUnavailable
from service.store.base import Items
from service.store.presence_index import PresenceIndex
from service.store.readthrough import ReadThrough
from service.store.rocks import RocksTier
from service.workers import channel

log = logging.getLogger(__name__)
PRIMARY = 0
# A forwarded write waits for the primary's write and its fan-out.
FORWARD_TIMEOUT_S = 5.0
# A worker that has not caught up and forgotten written keys by then is killed.
PEER_TIMEOUT_S = 1.0


def pid_path(control_dir: Path, index: int) -> Path:
    """Where the supervisor records worker `index`'s pid."""
    return control_dir / f"worker-{index}.pid"


class ForwardingTier:
    """The RocksDB tier of a secondary worker: reads its own secondary instance,
    sends writes to the primary. Raises TierUnavailable when the primary does not answer."""

    name = "rocksdb"

    def __init__(
        self, local: RocksTier, primary: Path, timeout_s: float = FORWARD_TIMEOUT_S
    ) -> None:
        self.local = local
        self._primary = primary
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"<ForwardingTier {self.local!r} writes to {self._primary.name}>"

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """From this worker's secondary instance."""
        return await self.local.get_many(keys)

    def get_many_now(self, keys: Sequence[bytes]) -> list[bytes | None] | None:
        """From this worker's secondary instance, at once (RocksTier.get_many_now)."""
        return self.local.get_many_now(keys)

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        """Written by the primary, newest event wins; returns when every worker has it."""
        payload = channel.encode_items(items)
        try:
            got = await channel.call(self._primary, channel.WRITE, payload, self._timeout_s)
        except (channel.Unreachable, channel.CallFailed, TimeoutError, OSError) as exc:
            raise TierUnavailable(self.name, f"the primary worker: {exc or 'timeout'}") from exc
        return [b == 1 for b in got]

    def scan_keys(self, prefix: bytes) -> AsyncIterator[list[bytes]]:
        """From this worker's secondary instance."""
        return self.local.scan_keys(prefix)

    async def sync(self) -> None:
        """Nothing: the primary syncs every write before answering."""

    async def ready(self) -> bool:
        """Whether the secondary instance answers."""
        return await self.local.ready()

    async def close(self) -> None:
        """Close the secondary instance."""
        await self.local.close()


class PeerFanout:
    """The primary's announcer (the Writer's publisher in embedded mode): CHANGED to
    every other worker, waiting until each has answered, or is not running, or killed."""

    def __init__(
        self, control_dir: Path, index: int, count: int, timeout_s: float = PEER_TIMEOUT_S
    ) -> None:
        self._control_dir = control_dir
        self._others = [i for i in range(count) if i != index]
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"<PeerFanout to workers {self._others}>"

    async def publish(self, items: Items, with_values: bool = True) -> None:
        """Tell every other worker which keys were written. Never raises."""
        if not items or not self._others:
            return
        started = time.perf_counter()
        payload = channel.encode_keys([k for k, _ in items])
        await asyncio.gather(*(self._tell(i, channel.CHANGED, payload) for i in self._others))
        metrics.WORKER_SYNC_SECONDS.observe(time.perf_counter() - started)

    async def resync(self) -> None:
        """Tell every other worker that anything may have been written. Never raises."""
        await asyncio.gather(*(self._tell(i, channel.RESYNC, b"") for i in self._others))

    async def _tell(self, index: int, op: int, payload: bytes) -> None:
        path = channel.socket_path(self._control_dir, index)
        try:
            await channel.call(path, op, payload, self._timeout_s)
        except channel.Unreachable:
            return  # not running, or its store not open yet: it will read the new value
        except (channel.CallFailed, TimeoutError, OSError) as exc:
            self._kill(index, exc)

    def _kill(self, index: int, exc: BaseException) -> None:
        """A worker that may still hold the old value must not serve it: end it now."""
        metrics.WORKER_KILLS.inc()
        try:
            pid = int(pid_path(self._control_dir, index).read_text())
        except (OSError, ValueError):
            log.error("worker %d did not apply a write (%r) and has no pid file", index, exc)
            return
        log.error("worker %d (pid %d) did not apply a write (%r): killing it", index, pid, exc)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def subscribers(self) -> int:
        """The other workers."""
        return len(self._others)

    async def close(self) -> None:
        """Nothing to release."""


class PeerSink:
    """A secondary worker's side of CHANGED: catch up, then forget the keys in L1 (and
    in fetches under way), and learn them in the presence filter."""

    def __init__(
        self, local: RocksTier, reads: ReadThrough[Any], presence: PresenceIndex | None
    ) -> None:
        self._local = local
        self._reads = reads
        self._presence = presence

    def __repr__(self) -> str:
        return f"<PeerSink {self._local!r}>"

    async def changed(self, payload: bytes) -> bytes:
        """CHANGED: returns once reads here see the written values. Raises TierUnavailable."""
        keys = channel.decode_keys(payload)
        await self._local.catch_up()
        self._reads.invalidate(keys)
        if self._presence is not None:
            self._presence.add(keys)
        return b""

    async def resync(self, payload: bytes) -> bytes:
        """RESYNC: catch up, forget everything in L1, rebuild the presence filter (not
        trusted until rebuilt). Raises TierUnavailable."""
        await self._local.catch_up()
        self._reads.clear()
        if self._presence is not None:
            self._presence.rebuild()
        return b""
