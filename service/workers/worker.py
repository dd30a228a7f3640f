"""One worker of `livefeat serve --workers N`: what differs from a single process.

- Its HTTP socket is bound with SO_REUSEPORT (as gRPC's, grpc.so_reuseport): the
  kernel spreads new connections over the workers listening on the port.
- Every HTTP answer says which worker gave it (`X-Livefeat-Worker: <index>`).
- RocksDB: worker 0 opens the data dir's database (the primary); the others open
  it as secondary instances and forward their writes to worker 0 (peers.py).
  Embedded mode: worker 0 tells every other worker about each write before it is
  acknowledged. Redis mode: each worker is a replica (Redis pub/sub keeps their
  L1s fresh, as between pods); a secondary's background fills of RocksDB (what
  Redis served, values in notifications) are dropped rather than forwarded: worker
  0 receives the same notifications and fills its own copy, and forwarding every
  read miss would cost a local call each. Secondaries catch up every second.
- Its local channel server (channel.py) listens before the store opens, so that
  worker 0 never takes a starting worker for a dead one once it could serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

from service import metrics
from service.core.service import FeatureService
from service.errors import TierUnavailable
from service.settings import Settings
from service.store.base import Tier
from service.store.rocks import RocksTier
from service.workers import channel
from service.workers.peers import PRIMARY, ForwardingTier, PeerFanout, PeerSink

# A secondary waits this long for worker 0 to create the database.
OPEN_TIMEOUT_S = 60.0
# Redis mode: how often a secondary catches up with worker 0's RocksDB.
CATCH_UP_EVERY_S = 1.0
# How often this worker's L1 size is written for the pod's livefeat_l1_rows.
GAUGE_EVERY_S = 1.0


class WorkerHeader:
    """ASGI: adds `X-Livefeat-Worker: <index>` to every HTTP answer."""

    def __init__(self, app: Any, index: int) -> None:
        self.app = app
        self._header = (b"x-livefeat-worker", str(index).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self._header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT, not yet listening. Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


class _Gate:
    """The local channel's handlers, open before the store is: they answer at once
    while it is not (it will open at a newer state than any write they hear of), and
    WRITE waits for it."""

    def __init__(
        self, sink: asyncio.Future[PeerSink | None], core: asyncio.Future[FeatureService]
    ) -> None:
        self.sink = sink
        self.core = core

    def __repr__(self) -> str:
        return f"<_Gate {'open' if self.core.done() else 'opening'}>"

    async def changed(self, payload: bytes) -> bytes:
        """CHANGED (peers.PeerSink)."""
        sink = self.sink.result() if self.sink.done() else None
        return b"" if sink is None else await sink.changed(payload)

    async def resync(self, payload: bytes) -> bytes:
        """RESYNC (peers.PeerSink)."""
        sink = self.sink.result() if self.sink.done() else None
        return b"" if sink is None else await sink.resync(payload)

    async def write(self, payload: bytes) -> bytes:
        """WRITE, embedded: as a push here (RocksDB, L1, presence, every other worker)."""
        store = (await self.core).store
        written = await store.put_many(channel.decode_items(payload))
        return bytes(1 if w else 0 for w in written)

    async def write_rocks(self, payload: bytes) -> bytes:
        """WRITE, Redis mode: into RocksDB only (Redis and its notifications did the rest)."""
        store = (await self.core).store
        written = await store.tiers[-1].put_many(channel.decode_items(payload))
        return bytes(1 if w else 0 for w in written)


class WorkerRuntime:
    """A started worker: its core, its local channel and background tasks."""

    def __init__(
        self,
        index: int,
        core: FeatureService,
        channel_server: channel.ChannelServer,
        tasks: list[asyncio.Task[None]],
    ) -> None:
        self.index = index
        self.core = core
        self._channel = channel_server
        self._tasks = tasks

    def __repr__(self) -> str:
        return f"<WorkerRuntime {self.index} {self._channel!r}>"

    def wrap(self, app: Any) -> Any:
        """The ASGI app with this worker's header."""
        return WorkerHeader(app, self.index)

    async def close(self) -> None:
        """Stop the background tasks and the local channel. Once the front ends have
        stopped and before the store closes: a worker that serves no more is skipped by
        worker 0 (nobody listens) rather than killed for failing to catch up."""
        for task in self._tasks:
            task.cancel()
        await self._channel.close()


class WorkerRole:
    """Worker `index` of `count`, under the supervisor whose files are in `control_dir`.

    `restarted`: the supervisor started it again after one exited (counted).
    """

    def __init__(self, index: int, count: int, control_dir: Path, restarted: bool) -> None:
        self.index = index
        self.count = count
        self.control_dir = control_dir
        self.restarted = restarted

    def __repr__(self) -> str:
        return f"<WorkerRole {self.index}/{self.count} {self.control_dir}>"

    @property
    def primary(self) -> bool:
        """Whether this worker holds the RocksDB primary."""
        return self.index == PRIMARY

    async def start(self, settings: Settings) -> WorkerRuntime:
        """Listen on the local channel, open the store as this worker's role wants, and
        build the core. Raises LivefeatError (TierUnavailable: no database in time)."""
        from service.server import build_core  # server.py imports this module's users

        if self.restarted:
            metrics.WORKER_RESTARTS.inc()
        loop = asyncio.get_running_loop()
        gate = _Gate(loop.create_future(), loop.create_future())
        embedded = not settings.redis_url
        handlers = {channel.CHANGED: gate.changed, channel.RESYNC: gate.resync}
        if self.primary:  # embedded: the whole write path; Redis mode: only RocksDB's part
            handlers[channel.WRITE] = gate.write if embedded else gate.write_rocks
        server = channel.ChannelServer(channel.socket_path(self.control_dir, self.index), handlers)
        await server.start()
        rocks = await self._open_rocks(settings)
        local: Tier = rocks
        if not self.primary:
            local = ForwardingTier(rocks, channel.socket_path(self.control_dir, PRIMARY))
        fanout = None
        if embedded and self.primary:
            fanout = PeerFanout(self.control_dir, self.index, self.count)
        core = build_core(settings, local=local, announcer=fanout, local_fills=self.primary)
        if fanout is not None:  # before taking writes (peers.py)
            await fanout.resync()
        gate.core.set_result(core)
        store = core.store
        tasks = [asyncio.create_task(_watch_supervisor(os.getppid()))]
        if self.primary:
            gate.sink.set_result(None)
        else:
            gate.sink.set_result(PeerSink(rocks, store.reads, store.presence))
            # Writes acknowledged while the sink was not set are older than this.
            await rocks.catch_up()
            if not embedded:
                tasks.append(asyncio.create_task(_catch_up_often(rocks)))
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            tasks.append(asyncio.create_task(_count_l1(store.reads.l1)))
        return WorkerRuntime(self.index, core, server, tasks)

    async def _open_rocks(self, settings: Settings) -> RocksTier:
        path = Path(settings.data_dir) / "rocksdb"
        options = {"block_cache_mb": settings.rocksdb_block_cache_mb,
                   "threads": settings.rocksdb_threads}  # fmt: skip
        if self.primary:
            return RocksTier(path, **options)  # type: ignore[arg-type]
        own = Path(settings.data_dir) / "rocksdb-secondary" / f"worker-{self.index}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OPEN_TIMEOUT_S
        while True:  # worker 0 may not have created the database yet
            try:
                return RocksTier(path, secondary=own, **options)  # type: ignore[arg-type]
            except TierUnavailable:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def _catch_up_often(rocks: RocksTier) -> None:
    while True:
        await asyncio.sleep(CATCH_UP_EVERY_S)
        with contextlib.suppress(TierUnavailable):
            await rocks.catch_up()


async def _watch_supervisor(parent: int) -> None:
    """A worker whose supervisor died (SIGKILL) drains itself instead of lingering."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


async def _count_l1(l1: Any) -> None:
    while True:
        metrics.L1_ROWS.set(len(l1))
        await asyncio.sleep(GAUGE_EVERY_S)
