"""A TCP fault proxy for tests: put it between a client and a server, switch faults at run time.

    proxy = FaultProxy(upstream_port=redis.port)   # listens on 127.0.0.1:proxy.port
    proxy.set("latency", delay_ms=150)             # every byte delivered 150 ms late
    proxy.set("jitter", delay_ms=20, jitter_ms=200)
    proxy.set("blackhole")                         # accept, read, forward nothing (both ways)
    proxy.set("drop")                              # the same, and what was read is lost
    proxy.set("reset")                             # RST every open and new connection
    proxy.set("pass")
    proxy.close()

It runs its own asyncio loop in a daemon thread, so a synchronous test drives it.
Modes apply to open connections at once (a switch to "reset" resets them all) and to
new ones. "blackhole" is a network partition: nothing gets through, and, as TCP
retransmits, what was sent meanwhile arrives once it ends. "drop" loses those bytes
for good without closing anything, which TCP itself never does (a broken middlebox
does): a client must notice a silent link by itself. Delayed bytes keep their order: each chunk is delivered at max(now + delay,
the previous chunk's time).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections import Counter
from typing import Any

MODES = ("pass", "latency", "jitter", "blackhole", "drop", "reset")
CHUNK = 64 * 1024


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """One listening port on 127.0.0.1 forwarding to 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.delay_ms = 0.0
        self.jitter_ms = 0.0
        self.counts: Counter[str] = Counter()  # accepted, reset, dropped_chunks, ...
        self._rng = random.Random(7)
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the fault proxy did not start")
        assert self._server is not None
        self.port: int = int(self._server.sockets[0].getsockname()[1])

    def __repr__(self) -> str:
        return f"<FaultProxy :{self.port} -> {self.upstream[1]} {self.mode}>"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            started.set()

        self._loop.run_until_complete(start())
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    # ---- control (any thread)

    def set(self, mode: str, delay_ms: float = 0.0, jitter_ms: float = 0.0) -> None:
        """Switch the fault; takes effect before this returns."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        done = threading.Event()

        def apply() -> None:
            self.mode, self.delay_ms, self.jitter_ms = mode, delay_ms, jitter_ms
            if mode == "reset":
                for client, upstream in list(self._conns):
                    self._reset(client, upstream)
            done.set()

        self._loop.call_soon_threadsafe(apply)
        done.wait(5)

    def close(self) -> None:
        """Stop listening, reset every connection, end the thread."""

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for client, upstream in list(self._conns):
                self._reset(client, upstream)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # ---- the loop's side

    def _reset(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter | None) -> None:
        self.counts["reset"] += 1
        _rst(client)
        if upstream is not None:
            _rst(upstream)
        self._conns.discard((client, upstream))

    def _delay_s(self) -> float:
        if self.mode == "latency":
            return self.delay_ms / 1000
        if self.mode == "jitter":
            return (self.delay_ms + self._rng.uniform(0, self.jitter_ms)) / 1000
        return 0.0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # close(): reset already
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts["accepted"] += 1
        if self.mode == "reset":
            self.counts["reset"] += 1
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.counts["upstream_refused"] += 1
            _rst(writer)
            return
        conn = (writer, up_writer)
        self._conns.add(conn)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(conn)
            for w in conn:
                w.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy src to dst through a queue of (deliver_at, bytes), in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                while self.mode == "blackhole":  # a partition: held, delivered once healed
                    await asyncio.sleep(0.005)
                if self.mode == "drop":
                    self.counts["dropped_chunks"] += 1
                    continue
                dst.write(data)
                await dst.drain()
            dst.write_eof() if dst.can_write_eof() else dst.close()

        sender = asyncio.ensure_future(deliver())
        last_due = 0.0
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    queue.put_nowait((0.0, b""))
                    break
                if self.mode == "drop":
                    self.counts["dropped_chunks"] += 1
                    continue
                if self.mode == "blackhole":
                    self.counts["held_chunks"] += 1
                last_due = max(time.monotonic() + self._delay_s(), last_due)
                queue.put_nowait((last_due, data))
            await sender
        finally:
            sender.cancel()


def drain_counts(proxy: FaultProxy) -> dict[str, Any]:
    """The proxy's counters as a plain dict (for results files)."""
    return dict(proxy.counts)
