"""One benchmark: prepare data and servers, run the schedule, stop every server.

Setup is ordered for the shortest wait, since only the runs are measured: the embedded
livefeat starts at once; Redis is filled, then its livefeat servers start (their presence
filters take the longest); the Redis memory figure is measured in a thread meanwhile; once
every livefeat is ready, real responses size the echo bodies and the echo servers start.
Every server is stopped, by pid, in a ``finally``.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtest import analysis, prepare
from loadtest.clients import RunSpec, run_client
from loadtest.plan import STORES, Case, Plan
from loadtest.servers import HOST, Server, echo_server, livefeat_server, redis_server, redis_url

PRESENCE_BUILT = "presence filter built"  # livefeat logs it once its filter is trusted
PRESENCE_FAILED = "presence filter not rebuilt"  # ... or this, and looks up every pair
REDIS_STORES = ("redis", "cold")


class Bench:
    """The servers, files and setup record of one benchmark run."""

    def __init__(self, plan: Plan, data_dir: Path) -> None:
        self.plan = plan
        self.data_dir = data_dir
        self.work = Path(tempfile.mkdtemp(prefix="livefeat-bench-"))
        self.started = time.monotonic()
        self.servers: dict[str, Server] = {}
        self.files: dict[tuple[int, str], str] = {}
        self.memory: Future[dict[str, Any]] | None = None
        self.memory_result: dict[str, Any] | None = None
        self.setup: dict[str, Any] = {
            "data_dir": str(data_dir),
            "work_dir": str(self.work),
            "servers": {},
            "timeline_s": {},
        }

    def note(self, step: str) -> None:
        """Record when a setup step first ended (seconds since the start)."""
        self.setup["timeline_s"].setdefault(step, round(time.monotonic() - self.started, 1))

    # ----------------------------------------------------------------------- setup

    def start_data_servers(self) -> None:
        """The embedded livefeat at once; Redis, filled, then the Redis-backed livefeat
        servers on clones of the data dir; the Redis memory figure in a thread."""
        plan, work = self.plan, self.work
        self.setup["demo_generated"] = prepare.ensure_demo(self.data_dir)
        redis_stores = [s for s in plan.stores if s in REDIS_STORES]
        clones = [*redis_stores, *(["python"] if "python" in plan.stores else [])]
        for store in clones:  # before the embedded server opens data_dir
            prepare.clone_rocksdb(self.data_dir, work / f"data-{store}")
        if "embedded" in plan.stores:
            log = work / "livefeat-embedded.log"
            self._start(livefeat_server("livefeat-embedded", self.data_dir, log, None, {}))
        if "python" in plan.stores:
            data, log = work / "data-python", work / "livefeat-python.log"
            env = {"LIVEFEAT_PURE_PYTHON": "1"}
            self._start(livefeat_server("livefeat-python", data, log, None, env))
        if plan.redis_memory:
            mem = self._start(redis_server("redis-memory", work / "redis-memory"))
            mem.wait_ready(30)
            pool = ThreadPoolExecutor(1, thread_name_prefix="redis-memory")
            parquet = self.data_dir / "demo-parquet"
            args = (mem, parquet, work / "memory-scratch")
            self.memory = pool.submit(prepare.measure_redis_memory, *args)
            pool.shutdown(wait=False)
        if not redis_stores:
            return
        redis = self._start(redis_server("redis", work / "redis"))
        redis.wait_ready(30)
        url = redis_url(redis)
        # Filled before its livefeat servers start: a Redis busy with the fill can time out
        # the scan that builds their presence filters.
        wanted = None
        if plan.redis_rows == "requested":
            wanted = [r for n in plan.candidates(redis_stores) for r in plan.requests(n)]
        self.setup["redis_fill"] = prepare.fill_redis(work / f"data-{redis_stores[0]}", url, wanted)
        self.note("redis filled")
        for store in redis_stores:
            env = {"LIVEFEAT_L1_MAX_ROWS": "0"} if store == "cold" else {}
            data, log = work / f"data-{store}", work / f"livefeat-{store}.log"
            self._start(livefeat_server(f"livefeat-{store}", data, log, url, env))

    def _start(self, server: Server) -> Server:
        self.servers[server.name] = server
        server.start()
        self.note(f"{server.name} started")
        return server

    def write_requests(self) -> None:
        """Pre-encode every request set for every client protocol that uses it."""
        t = time.monotonic()
        for case in self.plan.cases.values():
            key = (case.candidates, case.client)
            if key not in self.files:
                encode = prepare.ENCODERS[case.client]
                requests = [encode(u, r) for u, r in self.plan.requests(case.candidates)]
                path = self.work / f"{case.requests}.{case.client}.pickle"
                path.write_bytes(_pickle(requests))
                self.files[key] = str(path)
        self.setup["request_encoding_s"] = round(time.monotonic() - t, 2)
        self.note("requests encoded")

    def wait_livefeat(self, attempts: int = 3) -> None:
        """Every livefeat server answers and has built its presence filter (until then it
        looks up every pair and spends CPU on the build: nothing to measure yet).

        A build that fails (a Redis SCAN that outlasts livefeat's 0.1 s read timeout on a
        busy machine) is never retried by livefeat: the server is restarted, up to
        `attempts` starts in all, and each restart is recorded in setup.restarted.
        """
        for s in self.servers.values():
            if not s.name.startswith("livefeat-"):
                continue
            for attempt in range(1, attempts + 1):
                s.wait_ready()
                got, built = s.wait_log(PRESENCE_BUILT, PRESENCE_FAILED)
                if got == PRESENCE_BUILT:
                    self.setup.setdefault("presence_built_s", {})[s.name] = round(built, 1)
                    break
                if attempt == attempts:
                    raise RuntimeError(f"{s.name}: presence filter not built:\n{s.log_tail()}")
                self.setup.setdefault("restarted", []).append(s.name)
                print(f"bench: {s.name}: {PRESENCE_FAILED}; restarting it", flush=True)
                s.stop()
                s.ready_s = None
                s.start()
        self.note("livefeat ready")

    def start_echo_servers(self) -> None:
        """Size each echo body on real responses (embedded first), then start the echo."""
        sizing: dict[str, Any] = self.setup.setdefault("response_sizing", {})
        livefeat = [c for c in self.plan.cases.values() if c.kind == "livefeat"]
        for case in sorted(livefeat, key=lambda c: STORES.index(c.store or "embedded")):
            server = self.servers[case.server]
            requests = self.plan.requests(case.candidates)
            port = server.port_for(case.transport)
            body, sizing[case.name] = prepare.size_responses(case.transport, port, requests)
            check_served(case.name, sizing[case.name]["served_status"], self.data_dir)
            echo = self.plan.cases[case.baseline or ""]
            if echo.name not in self.servers:
                body_file = self.work / f"{echo.name}.body"
                body_file.write_bytes(body)
                log = self.work / f"{echo.name}.log"
                self._start(echo_server(echo.transport, echo.name, body_file, log))
        self.note("responses sized")

    def wait_ready(self) -> None:
        """Every server answers; the Redis memory figure is in."""
        for s in self.servers.values():
            s.wait_ready()
        self.note("servers ready")
        if self.memory is not None:
            self.memory_result = self.memory.result()
            self.servers["redis-memory"].stop()
            self.note("redis memory measured")
        for s in self.servers.values():
            self.setup["servers"][s.name] = s.describe()

    # ----------------------------------------------------------------------- runs

    def run_all(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        schedule = list(self.plan.schedule())
        for i, (rep, conc, case) in enumerate(schedule, 1):
            figures = self.run_one(case, conc)
            runs.append(
                {"case": case.name, "concurrency": conc, "repetition": rep, "figures": figures}
            )
            print(progress_line(i, len(schedule), case.name, conc, rep, figures), flush=True)
        for s in self.servers.values():
            if s.name != "redis-memory":
                s.check_alive()
            if s.name.startswith("livefeat-"):
                self.setup["servers"][s.name]["tier_counters"] = prepare.tier_counters(s.port)
        return runs

    def run_one(self, case: Case, conc: int) -> dict[str, Any]:
        plan = self.plan
        server = self.servers[case.server]
        server.check_alive()
        pids = [("server", server.pid)]
        if case.store in REDIS_STORES:
            pids.append(("redis", self.servers["redis"].pid))
        spec = RunSpec(
            HOST,
            server.port_for(case.transport),
            self.files[(case.candidates, case.client)],
            conc,
            plan.warmup_s,
            plan.duration_s,
            tuple(pids),
            grpc_channels=plan.grpc_channels,
            grpc_deadline_s=plan.grpc_deadline_s,
        )
        return run_client(spec, case.client)

    def stop_all(self) -> None:
        for s in reversed(list(self.servers.values())):
            code = s.stop()
            self.setup["servers"].setdefault(s.name, {})["exit_code"] = code


def run(plan: Plan, data_dir: Path) -> dict[str, Any]:
    """Prepare, run the schedule, stop the servers; the report (a JSON-ready dict)."""
    bench = Bench(plan, data_dir)
    print(f"bench: work dir {bench.work} (server logs, request files)", flush=True)
    report: dict[str, Any] = {
        "schema": "livefeat-bench/2",
        "machine": prepare.machine_info(),
        "protocol": plan.describe(),
        "setup": bench.setup,
    }
    try:
        bench.start_data_servers()
        bench.write_requests()
        bench.wait_livefeat()
        bench.start_echo_servers()
        bench.wait_ready()
        if bench.memory_result is not None:
            report["redis_memory"] = bench.memory_result
        names = [
            f"{s.name} pid {s.pid}" for s in bench.servers.values() if s.name != "redis-memory"
        ]
        print(
            f"bench: ready in {time.monotonic() - bench.started:.0f} s: {', '.join(names)}",
            flush=True,
        )
        runs = bench.run_all()
    finally:
        bench.stop_all()
    cases = {name: asdict(c) for name, c in plan.cases.items()}
    report["cases"] = analysis.aggregate(cases, plan.concurrency, runs)
    report["ratios"] = analysis.ratios(report["cases"])
    report["targets"] = analysis.targets(
        report["cases"], report["ratios"], report.get("redis_memory")
    )
    report["elapsed_s"] = round(time.monotonic() - bench.started, 1)
    return report


def check_served(case: str, served: dict[str, dict[str, int]], data_dir: Path) -> None:
    """Every user and room of the standard workload is stored: a sample served with any
    other status (DEFAULTED, UNAVAILABLE) measures the wrong thing, e.g. demo data written
    by a livefeat whose value layout has changed since."""
    wrong = {
        part: {s: n for s, n in served.get(part, {}).items() if s not in ("FOUND", "STALE")}
        for part in ("user", "rooms")
    }
    if any(wrong.values()):
        raise RuntimeError(
            f"{case}: users or rooms not served from storage in the sizing sample ({wrong}); "
            f"if the value layout changed, remove {data_dir} and generate it again (livefeat demo)"
        )


def _pickle(obj: Any) -> bytes:
    import pickle

    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def progress_line(i: int, n: int, case: str, conc: int, rep: int, f: dict[str, Any]) -> str:
    lat = f["latency_ms"] or {}
    num = analysis.fmt_num
    redis = f.get("redis_cpu_ms_per_request")
    return (
        f"[{i:>2}/{n}] {case:<26} c={conc:<3} rep {rep + 1}: {f['throughput_rps']:>8,.0f} req/s  "
        f"p50 {num(lat.get('p50'), '.2f')} p99 {num(lat.get('p99'), '.2f')} ms  "
        f"errors {f['errors']}  client CPU {f['client_cpu_pct']:.0f}%  "
        f"server {num(f['server_cpu_ms_per_request'], '.3f')} ms/req"
        + (f" + redis {num(redis, '.3f')}" if redis is not None else "")
    )
