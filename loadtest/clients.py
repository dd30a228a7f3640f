"""The load generator: one closed-loop run of pre-encoded requests, in its own process.

Only the standard library, uvloop and (for gRPC) grpcio are imported here: this module
is what a spawned client process loads. Two protocols:

- ``http1``: one keep-alive HTTP/1.1 connection per concurrency slot, plain asyncio
  ``Protocol``s driven by callbacks (no task or future per request); the client parses
  the status line and Content-Length and only counts body bytes.
- ``grpc``: grpc.aio calls of ``/livefeat.v1.FeatureService/GetBundle`` through a raw
  ``unary_unary`` with no serializer and no deserializer (requests are serialized
  ``GetBundleRequest`` bytes, responses stay bytes: the client does no protobuf work);
  one coroutine per slot, one channel (TCP connection) per slot or one shared by all.

Latency runs from just before the request is handed to the transport to the complete
response, timed with ``time.perf_counter_ns``. A loop timer opens the measured window
after the warm-up and closes it after the duration; only requests completed inside the
window count. At each edge the client reads its own CPU time and the CPU time of every
watched server process (``/proc/PID/stat``, all threads).
"""

from __future__ import annotations

import argparse
import array
import os
import pickle
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from loadtest import stats

CLK_TCK = os.sysconf("SC_CLK_TCK")
GET_BUNDLE = "/livefeat.v1.FeatureService/GetBundle"
GRPC_CHANNELS = ("per-slot", "shared")


def add_round_options(p: argparse.ArgumentParser, *, rounds: int, duration_s: float) -> None:
    """The options of a script that measures servers in alternated rounds of client runs
    (loadtest/ab.py, loadtest/grpc_share.py): rounds, and each run's RunSpec figures."""
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=duration_s, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--requests", type=int, default=5000)


@dataclass(frozen=True)
class RunSpec:
    """One measured run of one client process against one server."""

    host: str
    port: int
    requests_file: str
    concurrency: int
    warmup_s: float
    duration_s: float
    pids: tuple[tuple[str, int], ...]
    """Processes whose CPU is measured: ("server", pid) first, then e.g. ("redis", pid)."""
    drain_timeout_s: float = 30.0
    """After the measured window, in-flight requests get this long before they count as timeouts."""
    grpc_channels: str = "per-slot"
    grpc_deadline_s: float | None = 1.0
    refused_pause_s: float = 0.0
    """After a refusal (429, RESOURCE_EXHAUSTED) a slot waits this long before its next request."""


def stat_cpu(path: str) -> tuple[str, float]:
    """(name, utime + stime in seconds) from a /proc stat file: /proc/PID/stat for a
    process (all its threads), /proc/PID/task/TID/stat for one thread."""
    with open(path, "rb") as f:
        raw = f.read()
    end = raw.rindex(b")")  # "pid (comm) ...": comm may hold spaces and ")"
    fields = raw[end + 2 :].split()
    name = raw[raw.index(b"(") + 1 : end].decode(errors="replace")
    return name, (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds (from /proc/PID/stat)."""
    return stat_cpu(f"/proc/{pid}/stat")[1]


WARMUP, MEASURE, STOP = 0, 1, 2
OK_STATUSES = frozenset({"200", "OK"})
REFUSED_STATUSES = frozenset({"429", "RESOURCE_EXHAUSTED"})


class Recorder:
    """The state of one closed-loop run: phase, request cursor, samples, window marks."""

    def __init__(self, spec: RunSpec, requests: Sequence[bytes], loop: Any) -> None:
        self.spec = spec
        self.requests = requests
        self.loop = loop
        self.next_index = 0
        self.phase = WARMUP
        self.latencies = array.array("q")
        self.done_ns = array.array("q")  # completion times, for the per-second view
        self.ok_latencies = array.array("q")  # of good answers only (200, OK)
        self.statuses: Counter[str] = Counter()
        self.body_bytes = 0
        self.warmup_completed = 0
        self.protocol_errors: Counter[str] = Counter()
        self.marks: dict[str, float] = {}

    def next_request(self) -> bytes:
        i = self.next_index
        self.next_index = i + 1 if i + 1 < len(self.requests) else 0
        return self.requests[i]

    def mark(self, name: str) -> None:
        self.marks[f"{name}_ns"] = time.perf_counter_ns()
        self.marks[f"{name}_client_cpu_s"] = time.process_time()
        for role, pid in self.spec.pids:
            self.marks[f"{name}_{role}_cpu_s"] = proc_cpu_seconds(pid)

    def schedule_window(self) -> None:
        """Open the measured window after the warm-up, close it after the duration."""
        self.mark("start")
        self.loop.call_later(self.spec.warmup_s, self.start_measuring)
        self.loop.call_later(self.spec.warmup_s + self.spec.duration_s, self.stop)

    def start_measuring(self) -> None:
        self.mark("t0")
        self.phase = MEASURE

    def stop(self) -> None:
        self.mark("t1")
        self.phase = STOP

    def record(self, latency_ns: int, status: str, body_bytes: int) -> None:
        if self.phase == MEASURE:
            self.latencies.append(latency_ns)
            self.done_ns.append(time.perf_counter_ns())
            if status in OK_STATUSES:
                self.ok_latencies.append(latency_ns)
            self.statuses[status] += 1
            self.body_bytes += body_bytes
        elif self.phase == WARMUP:
            self.warmup_completed += 1

    @property
    def limit_s(self) -> float:
        return self.spec.warmup_s + self.spec.duration_s + self.spec.drain_timeout_s

    def result(self, ok_status: str, timeouts: int) -> dict[str, Any]:
        """The figures of the measured window."""
        m = self.marks
        if "t1_ns" not in m:
            raise RuntimeError("the run ended before its measured window closed")
        window_s = (m["t1_ns"] - m["t0_ns"]) / 1e9
        completed = len(self.latencies)
        not_ok = completed - self.statuses.get(ok_status, 0)
        broken = sum(self.protocol_errors.values())
        client_cpu_s = m["t1_client_cpu_s"] - m["t0_client_cpu_s"]
        out: dict[str, Any] = {
            "requests": completed,
            "window_s": window_s,
            "throughput_rps": stats.throughput(completed, window_s),
            "latency_ms": stats.latency_summary(self.latencies) if completed else None,
            "per_second": stats.per_second(self.latencies, self.done_ns, int(m["t0_ns"])),
            "ok_latency_ms": (
                stats.latency_summary(self.ok_latencies) if self.ok_latencies else None
            ),
            "errors": not_ok + broken + timeouts,
            "status_counts": dict(sorted(self.statuses.items())),
            "connection_errors": dict(self.protocol_errors),
            "timeouts": timeouts,
            "client_cpu_pct": stats.cpu_percent(client_cpu_s, window_s),
            "client_cpu_ms_per_request": per_request_ms(client_cpu_s, completed),
        }
        backend_s = 0.0
        for role, _ in self.spec.pids:
            cpu_s = m[f"t1_{role}_cpu_s"] - m[f"t0_{role}_cpu_s"]
            backend_s += cpu_s
            out[f"{role}_cpu_pct"] = stats.cpu_percent(cpu_s, window_s)
            out[f"{role}_cpu_ms_per_request"] = per_request_ms(cpu_s, completed)
        out["backend_cpu_ms_per_request"] = per_request_ms(backend_s, completed)
        out["mean_response_bytes"] = self.body_bytes / completed if completed else None
        out["warmup_requests"] = self.warmup_completed
        out["worst_second_p99_ms"] = stats.worst_second_p99(out["per_second"])
        return out


def per_request_ms(cpu_s: float, completed: int) -> float | None:
    return 1e3 * cpu_s / completed if completed else None


# --------------------------------------------------------------------------- HTTP/1.1


class _Http1Run(Recorder):
    """Connections driven by callbacks: each sends its next request from `completed`."""

    def __init__(self, spec: RunSpec, requests: Sequence[bytes], loop: Any) -> None:
        super().__init__(spec, requests, loop)
        self.connection_errors = 0
        self.conns: set[_Http1Conn] = set()
        self.busy: set[_Http1Conn] = set()
        self.done = loop.create_future()

    def stop(self) -> None:
        super().stop()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if not self.busy and not self.done.done():
            self.done.set_result(None)

    def completed(self, conn: _Http1Conn, latency_ns: int, status: int, body_bytes: int) -> None:
        self.record(latency_ns, str(status), body_bytes)
        if self.phase == STOP:
            self.busy.discard(conn)
            self._maybe_done()
        elif status == 429 and self.spec.refused_pause_s:
            self.loop.call_later(self.spec.refused_pause_s, self._resume, conn)
        else:
            conn.send(self.next_request())

    def _resume(self, conn: _Http1Conn) -> None:
        if self.phase == STOP:
            self.busy.discard(conn)
            self._maybe_done()
        elif conn in self.conns:
            conn.send(self.next_request())

    def failed(self, conn: _Http1Conn, reason: str) -> None:
        """A connection broke or spoke garbage: count it, drop it, open a fresh one."""
        self.busy.discard(conn)
        self.conns.discard(conn)
        conn.close()
        if self.phase == MEASURE:
            self.protocol_errors[reason] += 1
        if self.phase == STOP:
            self._maybe_done()
            return
        self.connection_errors += 1
        if self.connection_errors > 1000:
            if not self.done.done():
                self.done.set_exception(RuntimeError(f"too many connection errors ({reason})"))
            return
        self.loop.create_task(self.open_and_start())

    async def connect(self) -> _Http1Conn:
        _, conn = await self.loop.create_connection(
            lambda: _Http1Conn(self), self.spec.host, self.spec.port
        )
        self.conns.add(conn)
        return conn

    async def open_and_start(self) -> None:
        try:
            conn = await self.connect()
        except OSError as exc:
            if not self.done.done():
                self.done.set_exception(exc)
            return
        if self.phase != STOP:
            conn.send(self.next_request())


class _Http1Conn:
    """One keep-alive HTTP/1.1 connection, one request in flight (an asyncio Protocol)."""

    def __init__(self, run: _Http1Run) -> None:
        self.run = run
        self.transport: Any = None
        self.head = bytearray()
        self.remaining = -1  # body bytes still to come; -1 while reading the head
        self.status = 0
        self.length = 0
        self.sent_ns = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self, request: bytes) -> None:
        self.head.clear()
        self.remaining = -1
        self.run.busy.add(self)
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.remaining >= 0:
            self.remaining -= len(data)
        else:
            head = self.head
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                self.status = int(head[9:12])
                lower = bytes(head[:end]).lower()
                at = lower.index(b"\r\ncontent-length:") + 17
                stop = lower.find(b"\r\n", at)  # -1: the last header line
                self.length = int(lower[at:stop] if stop >= 0 else lower[at:])
            except ValueError:
                self.run.failed(self, "response without status or Content-Length")
                return
            self.remaining = self.length - (len(head) - end - 4)
        if self.remaining == 0:
            now = time.perf_counter_ns()
            self.remaining = -1
            self.run.completed(self, now - self.sent_ns, self.status, self.length)
        elif self.remaining < 0:
            self.run.failed(self, "more bytes than Content-Length")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.run.conns:
            self.run.failed(self, "connection lost")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def pause_writing(self) -> None:  # the kernel buffer absorbs a request; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass


async def http1_run(spec: RunSpec, requests: Sequence[bytes]) -> dict[str, Any]:
    import asyncio

    run = _Http1Run(spec, requests, asyncio.get_running_loop())
    for _ in range(spec.concurrency):
        await run.connect()
    run.schedule_window()
    for conn in list(run.conns):
        conn.send(run.next_request())
    timeouts = 0
    try:
        await asyncio.wait_for(asyncio.shield(run.done), run.limit_s)
    except TimeoutError:
        timeouts = len(run.busy)
    finally:
        for conn in list(run.conns):
            run.conns.discard(conn)
            conn.close()
    return run.result("200", timeouts)


# --------------------------------------------------------------------------- gRPC


async def grpc_run(spec: RunSpec, requests: Sequence[bytes]) -> dict[str, Any]:
    import asyncio

    import grpc

    rec = Recorder(spec, requests, asyncio.get_running_loop())
    # A local subchannel pool: otherwise channels with equal arguments share one connection.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
    n = spec.concurrency if spec.grpc_channels == "per-slot" else 1
    channels = [grpc.aio.insecure_channel(f"{spec.host}:{spec.port}", options) for _ in range(n)]
    calls = [
        ch.unary_unary(GET_BUNDLE, None, None, _registered_method=True)  # bytes in, bytes out
        for ch in channels
    ]
    deadline = spec.grpc_deadline_s

    async def slot(call: Any) -> None:
        while rec.phase != STOP:
            request = rec.next_request()
            sent = time.perf_counter_ns()
            try:
                response = await call(request, timeout=deadline)
            except grpc.aio.AioRpcError as exc:
                rec.record(time.perf_counter_ns() - sent, exc.code().name, 0)
                if exc.code().name in REFUSED_STATUSES and spec.refused_pause_s:
                    await asyncio.sleep(spec.refused_pause_s)
            else:
                rec.record(time.perf_counter_ns() - sent, "OK", len(response))

    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 10)
        rec.schedule_window()
        tasks = [asyncio.ensure_future(slot(calls[i % n])) for i in range(spec.concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=rec.limit_s)
        for task in pending:
            task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return rec.result("OK", len(pending))
    finally:
        for ch in channels:
            await ch.close()


def _native(kind: str) -> Callable[[RunSpec, Sequence[bytes]], Any]:
    """The run of the compiled load generator (loadtest/native/) for client `kind`."""

    async def run(spec: RunSpec, requests: Sequence[bytes]) -> dict[str, Any]:
        from loadtest import native

        return native.run(kind, spec, requests)

    return run


CLIENTS: dict[str, Callable[[RunSpec, Sequence[bytes]], Any]] = {
    "http1": http1_run,
    "grpc": grpc_run,
    "native-http1": _native("native-http1"),
    "native-grpc": _native("native-grpc"),
    "native-grpc-h2": _native("native-grpc-h2"),
}
"""Client protocols: the coroutine that runs one closed-loop run of pre-encoded requests.
A ``native-`` kind reads the same request files as the kind it is named after
(`encoding_of`)."""


ENCODING_OF = {"native-http1": "http1", "native-grpc": "grpc", "native-grpc-h2": "grpc"}
"""A compiled client kind -> the kind whose request files (prepare.ENCODERS) it reads."""


def encoding_of(kind: str) -> str:
    """The client kind whose request files (prepare.ENCODERS) client `kind` reads."""
    return ENCODING_OF.get(kind, kind)


def _client_process(spec: RunSpec, kind: str, out: Connection) -> None:
    """Entry point of a client process: run, then send the result dict (or an error)."""
    import gc

    import uvloop

    try:
        with open(spec.requests_file, "rb") as f:
            requests = pickle.load(f)
        gc.collect()
        gc.freeze()
        gc.disable()
        out.send({"result": uvloop.run(CLIENTS[kind](spec, requests))})
    except BaseException as exc:  # report everything to the parent, then exit
        out.send({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    finally:
        out.close()


def run_client(spec: RunSpec, kind: str) -> dict[str, Any]:
    """One run in a fresh client process (spawned: no state inherited from the parent)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_client_process, args=(spec, kind, send), daemon=True)
    proc.start()
    send.close()
    limit = spec.warmup_s + spec.duration_s + spec.drain_timeout_s + 60
    try:
        if not recv.poll(limit):
            raise RuntimeError(f"the client process gave no result within {limit:.0f} s")
        try:
            msg: dict[str, Any] = recv.recv()
        except EOFError:
            proc.join(5)
            raise RuntimeError(
                f"the client process exited (code {proc.exitcode}) without a result"
            ) from None
    finally:
        recv.close()
        proc.join(10)
        if proc.is_alive():
            proc.terminate()  # this pid only
            proc.join(5)
    if "error" in msg:
        raise RuntimeError(f"client failed: {msg['error']}\n{msg['traceback']}")
    result: dict[str, Any] = msg["result"]
    return result
