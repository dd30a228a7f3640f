"""The benchmark runner: livefeat against a bare echo server, by the protocol of BENCHMARK.md.

    python -m loadtest.bench [--quick] [--out loadtest/results/bench-http.json] [--data-dir DIR]

A *case* is a target server, a pre-encoded request list and a client protocol. Every
livefeat case has a baseline case (a bare echo server on the same framework answering
with a body of the same size, driven by the same client with the same request bytes);
runs of a case and of its baseline alternate so that machine noise hits both alike, and
every claim is a ratio between the two. The client is a lean closed-loop asyncio client
on uvloop in its own process, one keep-alive connection per concurrency slot, timing each
request with ``time.perf_counter_ns``; it measures its own CPU and the server's CPU
(``/proc/PID/stat``) over exactly the measured window. See loadtest/README.md.

Only the HTTP/1.1 client exists so far; a gRPC case adds a server kind, a request encoder
and a client (see ``ENCODERS`` and ``CLIENTS``).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import pickle
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loadtest import stats

HOST = "127.0.0.1"
BUNDLE_PATH = "/v1/bundle"
BUNDLE = "live_ranker"
N_USERS, N_ROOMS = 100_000, 20_000  # the standard workload (BENCHMARK.md)
SIZING_SAMPLES = 25  # real responses fetched to pick the echo body (the median-sized one)
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS = Path("loadtest/results")


# --------------------------------------------------------------------------- the client
# Runs in its own process: only the standard library and uvloop are imported here.


@dataclass(frozen=True)
class RunSpec:
    """One measured run of one client process against one server."""

    host: str
    port: int
    requests_file: str
    concurrency: int
    warmup_s: float
    duration_s: float
    server_pid: int
    drain_timeout_s: float = 30.0
    """After the measured window, in-flight requests get this long before they count as timeouts."""


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


WARMUP, MEASURE, STOP = 0, 1, 2


class _Run:
    """The state of one closed-loop run shared by its connections (callbacks, no tasks)."""

    def __init__(
        self, spec: RunSpec, requests: Sequence[bytes], loop: Any, protocol: Callable[[_Run], Any]
    ) -> None:
        import asyncio

        self.spec = spec
        self.protocol = protocol
        self.requests = requests
        self.loop = loop
        self.next_index = 0
        self.phase = WARMUP
        self.latencies = array.array("q")
        self.statuses: Counter[int] = Counter()
        self.body_bytes = 0
        self.warmup_completed = 0
        self.connection_errors = 0
        self.protocol_errors: Counter[str] = Counter()
        self.conns: set[Any] = set()
        self.busy: set[Any] = set()
        self.done: asyncio.Future[None] = loop.create_future()
        self.marks: dict[str, float] = {}

    def next_request(self) -> bytes:
        i = self.next_index
        self.next_index = i + 1 if i + 1 < len(self.requests) else 0
        return self.requests[i]

    def mark(self, name: str) -> None:
        self.marks[f"{name}_ns"] = time.perf_counter_ns()
        self.marks[f"{name}_client_cpu_s"] = time.process_time()
        self.marks[f"{name}_server_cpu_s"] = proc_cpu_seconds(self.spec.server_pid)

    def start_measuring(self) -> None:
        self.mark("t0")
        self.phase = MEASURE

    def stop(self) -> None:
        self.mark("t1")
        self.phase = STOP
        if not self.busy and not self.done.done():
            self.done.set_result(None)

    def completed(self, conn: Any, latency_ns: int, status: int, body_bytes: int) -> None:
        if self.phase == MEASURE:
            self.latencies.append(latency_ns)
            self.statuses[status] += 1
            self.body_bytes += body_bytes
        elif self.phase == WARMUP:
            self.warmup_completed += 1
        if self.phase == STOP:
            self.busy.discard(conn)
            if not self.busy and not self.done.done():
                self.done.set_result(None)
        else:
            conn.send(self.next_request())

    def failed(self, conn: Any, reason: str) -> None:
        """A connection broke or spoke garbage: count it, drop it, open a fresh one."""
        self.busy.discard(conn)
        self.conns.discard(conn)
        conn.close()
        if self.phase == MEASURE:
            self.protocol_errors[reason] += 1
        if self.phase == STOP:
            if not self.busy and not self.done.done():
                self.done.set_result(None)
            return
        self.connection_errors += 1
        if self.connection_errors > 1000:
            if not self.done.done():
                self.done.set_exception(RuntimeError(f"too many connection errors ({reason})"))
            return
        self.loop.create_task(self.open_and_start())

    async def connect(self) -> Any:
        """Open one more connection to the server (a ``self.protocol`` instance)."""
        _, conn = await self.loop.create_connection(
            lambda: self.protocol(self), self.spec.host, self.spec.port
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
    """One keep-alive HTTP/1.1 connection, one request in flight (an asyncio Protocol).

    Parses the status line and Content-Length, then only counts body bytes.
    """

    def __init__(self, run: _Run) -> None:
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


async def _http1_run(spec: RunSpec, requests: Sequence[bytes]) -> dict[str, Any]:
    import asyncio

    loop = asyncio.get_running_loop()
    run = _Run(spec, requests, loop, _Http1Conn)
    for _ in range(spec.concurrency):
        await run.connect()
    run.mark("start")
    for conn in list(run.conns):
        conn.send(run.next_request())
    loop.call_later(spec.warmup_s, run.start_measuring)
    loop.call_later(spec.warmup_s + spec.duration_s, run.stop)
    timeouts = 0
    try:
        await asyncio.wait_for(
            asyncio.shield(run.done), spec.warmup_s + spec.duration_s + spec.drain_timeout_s
        )
    except TimeoutError:
        timeouts = len(run.busy)
    finally:
        for conn in list(run.conns):
            run.conns.discard(conn)
            conn.close()
    return _run_result(run, timeouts)


def _run_result(run: _Run, timeouts: int) -> dict[str, Any]:
    m = run.marks
    if "t1_ns" not in m:
        raise RuntimeError("the run ended before its measured window closed")
    window_s = (m["t1_ns"] - m["t0_ns"]) / 1e9
    completed = len(run.latencies)
    non_200 = completed - run.statuses.get(200, 0)
    broken = sum(run.protocol_errors.values())
    server_cpu_s = m["t1_server_cpu_s"] - m["t0_server_cpu_s"]
    client_cpu_s = m["t1_client_cpu_s"] - m["t0_client_cpu_s"]
    return {
        "requests": completed,
        "window_s": window_s,
        "throughput_rps": stats.throughput(completed, window_s),
        "latency_ms": stats.latency_summary(run.latencies) if completed else None,
        "errors": non_200 + broken + timeouts,
        "status_counts": {str(k): v for k, v in sorted(run.statuses.items())},
        "connection_errors": dict(run.protocol_errors),
        "timeouts": timeouts,
        "client_cpu_pct": stats.cpu_percent(client_cpu_s, window_s),
        "server_cpu_pct": stats.cpu_percent(server_cpu_s, window_s),
        "server_cpu_ms_per_request": 1e3 * server_cpu_s / completed if completed else None,
        "client_cpu_ms_per_request": 1e3 * client_cpu_s / completed if completed else None,
        "mean_response_bytes": run.body_bytes / completed if completed else None,
        "warmup_requests": run.warmup_completed,
    }


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


CLIENTS: dict[str, Callable[[RunSpec, Sequence[bytes]], Any]] = {"http1": _http1_run}
"""Client protocols: the coroutine that runs one closed-loop run of pre-encoded requests."""


def encode_http1(path: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 POST request (keep-alive is the HTTP/1.1 default)."""
    return (
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), HOST.encode(), len(body), body)
    )


ENCODERS: dict[str, Callable[[int, list[int]], bytes]] = {
    "http1": lambda user, rooms: encode_http1(BUNDLE_PATH, _bundle_json(user, rooms)),
}
"""Client protocols: how one (user_id, room_ids) request is pre-encoded on the wire."""


def _bundle_json(user: int, rooms: list[int]) -> bytes:
    import orjson

    return orjson.dumps({"bundle": BUNDLE, "user_id": user, "room_ids": rooms})


# --------------------------------------------------------------------------- the parent


@dataclass(frozen=True)
class Case:
    """A target server, a pre-encoded request list and a client protocol."""

    name: str
    server: str
    requests: str
    client: str
    baseline: str | None = None
    """The name of the case this one is compared with; None for a baseline."""


@dataclass(frozen=True)
class RequestSet:
    """A deterministic list of ranker requests from the standard workload's generator."""

    name: str
    n_candidates: int
    seed: int
    count: int


@dataclass
class Server:
    """A server subprocess: started, waited for, stopped by SIGTERM to its own pid."""

    name: str
    cmd: list[str]
    port: int
    log: Path
    ready_path: str = "/readyz"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"{self.name} exited (code {code}); its log:\n{self.log_tail()}")

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Poll GET /readyz until 200; returns the seconds from start() to ready."""
        start = time.monotonic()
        url = f"http://{HOST}:{self.port}{self.ready_path}"
        while True:
            self.check_alive()
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as r,
            ):
                if r.status == 200:
                    return time.monotonic() - self.started_at
            if time.monotonic() - start > timeout_s:
                raise RuntimeError(f"{self.name} not ready after {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM to this pid, then SIGKILL to this pid if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Plan:
    """What to run: durations, repetitions, concurrencies, request sets, cases."""

    quick: bool
    duration_s: float
    warmup_s: float
    repetitions: int
    concurrency: list[int]
    candidates: list[int]
    n_requests: int
    request_sets: dict[str, RequestSet] = field(default_factory=dict)
    cases: dict[str, Case] = field(default_factory=dict)

    def schedule(self) -> Iterator[tuple[int, int, Case]]:
        """(repetition, concurrency, case): each case next to its baseline, order alternating."""
        pairs = [(c, self.cases[c.baseline]) for c in self.cases.values() if c.baseline]
        for rep in range(self.repetitions):
            for conc in self.concurrency:
                for case, base in pairs:
                    for one in (case, base) if rep % 2 == 0 else (base, case):
                        yield rep, conc, one


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def livefeat_command() -> str:
    """The `livefeat` script of this interpreter's environment (else the one on PATH)."""
    local = Path(sys.executable).parent / "livefeat"
    found = str(local) if local.exists() else shutil.which("livefeat")
    if not found:
        raise RuntimeError("no `livefeat` command: install the project (make install)")
    return found


def ensure_demo(data_dir: Path) -> bool:
    """Run `livefeat demo` into data_dir unless its demo marker is there; True if it ran."""
    from service.cli import DEMO_MARKER

    if (data_dir / DEMO_MARKER).exists():
        return False
    print(f"bench: no demo data in {data_dir}: running livefeat demo (about 10 s)", flush=True)
    subprocess.run([livefeat_command(), "demo", "--data-dir", str(data_dir)], check=True)
    return True


def make_requests(rs: RequestSet) -> list[tuple[int, list[int]]]:
    from service.workload import RequestGenerator

    gen = RequestGenerator(N_USERS, N_ROOMS, rs.n_candidates, seed=rs.seed)
    return gen.requests(rs.count)


def fetch_bundle(port: int, body: bytes) -> bytes:
    req = urllib.request.Request(
        f"http://{HOST}:{port}{BUNDLE_PATH}",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200:
            raise RuntimeError(f"/v1/bundle answered {r.status}")
        data: bytes = r.read()
        return data


def size_response(
    port: int, requests: list[tuple[int, list[int]]], n_candidates: int
) -> tuple[bytes, dict[str, Any]]:
    """Real /v1/bundle responses for the first requests: the median-sized one, and a summary."""
    import orjson

    bodies = [fetch_bundle(port, _bundle_json(u, r)) for u, r in requests[:SIZING_SAMPLES]]
    sizes = sorted(len(b) for b in bodies)
    chosen = min(bodies, key=lambda b: (abs(len(b) - sizes[len(sizes) // 2]), len(b)))
    statuses: dict[str, Counter[str]] = {"user": Counter(), "rooms": Counter(), "pairs": Counter()}
    for body in bodies:
        doc = orjson.loads(body)
        if len(doc["rooms"]) != n_candidates:
            raise RuntimeError(f"asked for {n_candidates} rooms, got {len(doc['rooms'])}")
        for part, entities in (
            ("user", [doc["user"]]),
            ("rooms", doc["rooms"]),
            ("pairs", doc["pairs"]),
        ):
            for e in entities:
                statuses[part].update(e["status"].values())
    summary = {
        "samples": len(bodies),
        "bytes_min": sizes[0],
        "bytes_median": sizes[len(sizes) // 2],
        "bytes_max": sizes[-1],
        "echo_body_bytes": len(chosen),
        "served_status": {k: dict(v) for k, v in statuses.items()},
    }
    return chosen, summary


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    git: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        root = Path(__file__).resolve().parents[1]
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", "-C", str(root), *a], capture_output=True, text=True, check=True
        ).stdout.strip()
        git = {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git,
        "livefeat_env": {k: v for k, v in os.environ.items() if k.startswith("LIVEFEAT_")},
    }


def run_client(spec: RunSpec, kind: str) -> dict[str, Any]:
    """One run in a fresh client process (spawned: no state inherited from this one)."""
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


def plan_from(args: argparse.Namespace) -> Plan:
    quick = args.quick
    plan = Plan(
        quick=quick,
        duration_s=args.duration or (3.0 if quick else 20.0),
        warmup_s=args.warmup if args.warmup is not None else (1.0 if quick else 3.0),
        repetitions=args.repetitions or (1 if quick else 3),
        concurrency=args.concurrency or ([1, 8] if quick else [1, 8, 32]),
        candidates=args.candidates or [100, 500],
        n_requests=args.requests or (2000 if quick else 5000),
    )
    for n in plan.candidates:
        rs = RequestSet(f"bundle-{n}", n, seed=n, count=plan.n_requests)
        plan.request_sets[rs.name] = rs
        echo = Case(f"echo-http-{n}", f"echo-{n}", rs.name, "http1")
        plan.cases[f"livefeat-http-{n}"] = Case(
            f"livefeat-http-{n}", "livefeat", rs.name, "http1", baseline=echo.name
        )
        plan.cases[echo.name] = echo
    return plan


def aggregate(plan: Plan, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per case and concurrency: the raw runs and their per-figure medians."""
    cases: dict[str, Any] = {}
    for case in plan.cases.values():
        by_conc: dict[str, Any] = {}
        for conc in plan.concurrency:
            mine = [r for r in runs if r["case"] == case.name and r["concurrency"] == conc]
            if mine:
                figures = [r["figures"] for r in mine]
                by_conc[str(conc)] = {"median": stats.median_of_runs(figures), "runs": mine}
        cases[case.name] = {**asdict(case), "concurrency": by_conc}
    return cases


def _fig(cases: dict[str, Any], case: str, conc: int, *path: str) -> float | None:
    node: Any = cases.get(case, {}).get("concurrency", {}).get(str(conc), {}).get("median")
    for p in path:
        node = node.get(p) if isinstance(node, dict) else None
    return node if isinstance(node, int | float) else None


def ratios(plan: Plan, cases: dict[str, Any]) -> dict[str, Any]:
    """Case / baseline at the same concurrency, from the medians."""
    out: dict[str, Any] = {}
    for case in plan.cases.values():
        if not case.baseline:
            continue
        per: dict[str, Any] = {}
        for conc in plan.concurrency:
            a, b = case.name, case.baseline
            per[str(conc)] = {
                "throughput": stats.ratio(
                    _fig(cases, a, conc, "throughput_rps"), _fig(cases, b, conc, "throughput_rps")
                ),
                "p50": stats.ratio(
                    _fig(cases, a, conc, "latency_ms", "p50"),
                    _fig(cases, b, conc, "latency_ms", "p50"),
                ),
                "p99": stats.ratio(
                    _fig(cases, a, conc, "latency_ms", "p99"),
                    _fig(cases, b, conc, "latency_ms", "p99"),
                ),
                "server_cpu_per_request": stats.ratio(
                    _fig(cases, a, conc, "server_cpu_ms_per_request"),
                    _fig(cases, b, conc, "server_cpu_ms_per_request"),
                ),
            }
        out[f"{case.name}/{case.baseline}"] = {
            "case": case.name,
            "baseline": case.baseline,
            "concurrency": per,
        }
    return out


def targets(plan: Plan, cases: dict[str, Any], rat: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of BENCHMARK.md this run can check (warm path, embedded store)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, higher_is_better: bool) -> None:
        ok = None if value is None else (value >= limit if higher_is_better else value <= limit)
        op = ">=" if higher_is_better else "<="
        out.append({"target": name, "value": value, "limit": f"{op} {limit}", "ok": ok})

    for key, r in rat.items():
        per = r["concurrency"]
        if "8" in per:
            add(f"{key} throughput at concurrency 8", per["8"]["throughput"], 0.8, True)
        if "1" in per:
            add(f"{key} p99 at concurrency 1", per["1"]["p99"], 2.0, False)
    if {100, 500} <= set(plan.candidates):
        a, b = "livefeat-http-500", "livefeat-http-100"
        for conc in plan.concurrency:
            cpu = stats.ratio(
                _fig(cases, a, conc, "server_cpu_ms_per_request"),
                _fig(cases, b, conc, "server_cpu_ms_per_request"),
            )
            add(f"500/100 candidates, server CPU per request, concurrency {conc}", cpu, 3.0, False)
        p50 = stats.ratio(
            _fig(cases, a, 1, "latency_ms", "p50"), _fig(cases, b, 1, "latency_ms", "p50")
        )
        if 1 in plan.concurrency:
            add("500/100 candidates, p50 latency at concurrency 1", p50, 3.0, False)
    return out


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def summary_table(plan: Plan, report: dict[str, Any]) -> str:
    cases = report["cases"]
    head = (
        f"{'case':<20} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'p99.9 ms':>9} {'errors':>6} {'client':>7} {'server':>8} {'srv ms':>7} "
        f"{'resp KB':>8}"
    )
    lines = [
        head,
        f"{'':<20} {'':>4} {'':>8} {'':>8} {'':>8} {'':>8} {'':>9} {'':>6} "
        f"{'CPU %':>7} {'CPU %':>8} {'CPU/req':>7}",
        "-" * len(head),
    ]
    for case in plan.cases.values():
        for conc in plan.concurrency:
            m = cases[case.name]["concurrency"].get(str(conc), {}).get("median")
            if not m:
                continue
            lat = m.get("latency_ms") or {}
            kb = m.get("mean_response_bytes")
            lines.append(
                f"{case.name:<20} {conc:>4} {_num(m.get('throughput_rps'), ',.0f'):>8} "
                f"{_num(lat.get('p50'), '.2f'):>8} {_num(lat.get('p90'), '.2f'):>8} "
                f"{_num(lat.get('p99'), '.2f'):>8} {_num(lat.get('p99.9'), '.2f'):>9} "
                f"{_num(m.get('errors'), '.0f'):>6} {_num(m.get('client_cpu_pct'), '.0f'):>7} "
                f"{_num(m.get('server_cpu_pct'), '.0f'):>8} "
                f"{_num(m.get('server_cpu_ms_per_request'), '.3f'):>7} "
                f"{_num(None if kb is None else kb / 1024, '.1f'):>8}"
            )
    lines += [
        "",
        f"{'livefeat / echo':<36} {'conc':>4} {'throughput':>10} {'p50':>6} {'p99':>6} "
        f"{'server CPU/req':>14}",
    ]
    for key, r in report["ratios"].items():
        for conc, x in r["concurrency"].items():
            lines.append(
                f"{key:<36} {conc:>4} {_num(x['throughput'], '.2f'):>10} "
                f"{_num(x['p50'], '.2f'):>6} {_num(x['p99'], '.2f'):>6} "
                f"{_num(x['server_cpu_per_request'], '.2f'):>14}"
            )
    lines += ["", "targets (BENCHMARK.md)"]
    for t in report["targets"]:
        mark = {True: "ok  ", False: "MISS", None: "n/a "}[t["ok"]]
        lines.append(f"  {mark} {t['target']}: {_num(t['value'], '.2f')} ({t['limit']})")
    reps = plan.repetitions
    lines.append(
        f"\nmedians of {reps} run{'s' * (reps > 1)} of {plan.duration_s:g} s "
        f"(after {plan.warmup_s:g} s warm-up); "
        "CPU % of one core; srv CPU/req: server CPU ms per request"
    )
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    plan = plan_from(args)
    data_dir: Path = args.data_dir.resolve()
    work = Path(tempfile.mkdtemp(prefix="livefeat-bench-"))
    print(f"bench: work dir {work} (server logs, request files)", flush=True)
    report: dict[str, Any] = {
        "schema": "livefeat-bench/1",
        "machine": machine_info(),
        "protocol": {
            "quick": plan.quick,
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "repetitions": plan.repetitions,
            "concurrency": plan.concurrency,
            "requests_per_set": plan.n_requests,
            "request_sets": {k: asdict(v) for k, v in plan.request_sets.items()},
            "workload": {"n_users": N_USERS, "n_rooms": N_ROOMS, "bundle": BUNDLE},
            "percentiles": "nearest rank, in ms, over every request completed in the window",
            "median": "per figure, over repetitions",
            "order": "per repetition and concurrency: each case next to its baseline, "
            "alternating which goes first",
        },
        "setup": {"data_dir": str(data_dir), "work_dir": str(work)},
    }
    ran_demo = ensure_demo(data_dir)
    report["setup"]["demo_generated"] = ran_demo
    servers: dict[str, Server] = {}
    try:
        lf = Server("livefeat", [], free_port(), work / "livefeat.log")
        lf.cmd = [
            livefeat_command(),
            "serve",
            "--data-dir",
            str(data_dir),
            "--http-host",
            HOST,
            "--http-port",
            str(lf.port),
            "--grpc-port",
            str(free_port()),
        ]
        servers["livefeat"] = lf
        lf.start()
        t = time.monotonic()
        requests = {name: make_requests(rs) for name, rs in plan.request_sets.items()}
        gen_s = time.monotonic() - t
        files: dict[tuple[str, str], str] = {}
        for case in plan.cases.values():
            key = (case.requests, case.client)
            if key not in files:
                path = work / f"{case.requests}.{case.client}.pickle"
                encode = ENCODERS[case.client]
                with path.open("wb") as f:
                    pickle.dump([encode(u, r) for u, r in requests[case.requests]], f)
                files[key] = str(path)
        ready_s = lf.wait_ready()
        report["setup"]["livefeat"] = {
            "pid": lf.pid,
            "port": lf.port,
            "cmd": lf.cmd,
            "ready_s": round(ready_s, 2),
        }
        report["setup"]["request_generation_s"] = round(gen_s, 2)
        sizing: dict[str, Any] = {}
        for name, rs in plan.request_sets.items():
            body, sizing[name] = size_response(lf.port, requests[name], rs.n_candidates)
            body_file = work / f"echo-{rs.n_candidates}.body"
            body_file.write_bytes(body)
            echo = Server(
                f"echo-{rs.n_candidates}", [], free_port(), work / f"echo-{rs.n_candidates}.log"
            )
            echo.cmd = [
                sys.executable,
                "-m",
                "loadtest.echo_http",
                "--host",
                HOST,
                "--port",
                str(echo.port),
                "--body-file",
                str(body_file),
            ]
            servers[echo.name] = echo
            echo.start()
        report["setup"]["response_sizing"] = sizing
        for s in servers.values():
            if s.name != "livefeat":
                s.wait_ready()
                report["setup"][s.name] = {"pid": s.pid, "port": s.port, "cmd": s.cmd}
        print(
            f"bench: servers ready ({', '.join(f'{s.name} pid {s.pid}' for s in servers.values())}); "
            f"{sum(len(v) for v in requests.values())} requests generated in {gen_s:.1f} s",
            flush=True,
        )
        del requests

        runs: list[dict[str, Any]] = []
        schedule = list(plan.schedule())
        for i, (rep, conc, case) in enumerate(schedule, 1):
            server = servers[case.server]
            server.check_alive()
            spec = RunSpec(
                HOST,
                server.port,
                files[(case.requests, case.client)],
                conc,
                plan.warmup_s,
                plan.duration_s,
                server.pid,
            )
            figures = run_client(spec, case.client)
            runs.append(
                {"case": case.name, "concurrency": conc, "repetition": rep, "figures": figures}
            )
            lat = figures["latency_ms"] or {}
            print(
                f"[{i:>2}/{len(schedule)}] {case.name:<18} c={conc:<3} rep {rep + 1}: "
                f"{figures['throughput_rps']:>8,.0f} req/s  p50 {_num(lat.get('p50'), '.2f')} "
                f"p99 {_num(lat.get('p99'), '.2f')} ms  errors {figures['errors']}  "
                f"client CPU {figures['client_cpu_pct']:.0f}%  "
                f"server {_num(figures['server_cpu_ms_per_request'], '.3f')} ms/req",
                flush=True,
            )
        for s in servers.values():
            s.check_alive()
    finally:
        for s in reversed(list(servers.values())):
            code = s.stop()
            report["setup"].setdefault(s.name, {})["exit_code"] = code
    report["cases"] = aggregate(plan, runs)
    report["ratios"] = ratios(plan, report["cases"])
    report["targets"] = targets(plan, report["cases"], report["ratios"])
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["_plan"] = plan
    return report


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="3 s runs, 1 repetition, concurrency 1 and 8 (under a minute)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="JSON report (loadtest/results/bench-http.json; quick: bench-http-quick.json)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data/livefeat"),
        help="demo data dir; generated there first if missing",
    )
    p.add_argument("--duration", type=float, help="seconds per measured run (20; quick 3)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before each run (3; quick 1)")
    p.add_argument("--repetitions", type=int, help="runs per case and concurrency (3; quick 1)")
    p.add_argument("--concurrency", type=int, nargs="+", help="(1 8 32; quick 1 8)")
    p.add_argument("--candidates", type=int, nargs="+", choices=[100, 500], help="(100 500)")
    p.add_argument("--requests", type=int, help="pre-encoded requests per set (5000; quick 2000)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # so the finally stops the servers
    try:
        report = bench(args)
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    plan = report.pop("_plan")
    if args.out is None:
        args.out = RESULTS / ("bench-http-quick.json" if args.quick else "bench-http.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(summary_table(plan, report))
    print(f"\nbench: {report['elapsed_s']:.0f} s; every figure in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
