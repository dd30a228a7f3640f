"""Two workers against one: `livefeat serve --workers 2` vs `--workers 1`, same data,
same requests, same client, in one run (the figure is their throughput ratio).

    python -m loadtest.workers [--data-dir data/livefeat] [--stores embedded redis]
        [--transports http grpc] [--concurrency 16] [--duration 10] [--repetitions 2]
        [--client python|native|native-h2]

Per repetition, store and worker count (the order of 1 and 2 alternates per
repetition), one server starts on the demo data (Redis mode: a clone of it and a
redis-server of our own holding the rows the requests read), is measured once per
transport by the benchmark's client process (loadtest/clients.py: bundles of 100
candidates, closed loop at the given concurrency; `--client native`: the compiled
load generator of loadtest/native/, which takes less CPU from the servers;
`--client native-h2`: the same, with gRPC written with nghttp2 instead of grpc++), then
stopped by its pid. Reported per case: median throughput of each, the ratio, and the
CPU of the load generator, of the server's processes (every worker) and of Redis.
`--threads` adds each worker's CPU per thread over the measured window: the event
loop, and grpc's threads beside it, which bound what a second worker can add
(docs/benchmarks.md). JSON on stdout and in --out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from loadtest import prepare, stats
from loadtest.clients import RunSpec, run_client, stat_cpu
from loadtest.plan import TRANSPORTS
from loadtest.servers import HOST, Server, livefeat_server, redis_server, redis_url

CANDIDATES = 100
CLIENTS = {
    "python": dict(TRANSPORTS),
    "native": {"http": "native-http1", "grpc": "native-grpc"},
    "native-h2": {"http": "native-http1", "grpc": "native-grpc-h2"},
}
"""--client -> transport -> the client kind (loadtest/clients.py's CLIENTS)."""
PRESENCE_BUILT = "presence filter built"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.workers", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data-dir", type=Path, default=Path("data/livefeat"))
    p.add_argument(
        "--stores", nargs="+", choices=["embedded", "redis"], default=["embedded", "redis"]
    )
    p.add_argument("--transports", nargs="+", choices=list(TRANSPORTS), default=["http", "grpc"])
    p.add_argument(
        "--client", choices=list(CLIENTS), default="python",
        help="the load generator: loadtest/clients.py's, or the compiled one (loadtest/native/; "
        "native-h2: its gRPC calls written with nghttp2, without grpc++'s threads)",
    )  # fmt: skip
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--repetitions", type=int, default=2)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--out", type=Path, default=Path("loadtest/results/workers.json"))
    p.add_argument(
        "--threads", action="store_true",
        help="also each worker's CPU per thread (the event loop, grpc's threads, ...)",
    )  # fmt: skip
    return p


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds so far of the threads of `pid` by name: "event loop" for its main
    thread, else the thread's name (/proc/PID/task/TID/stat: grpc's "event_engine"
    pool; Python's own threads, such as grpc's completion-queue poller, carry the
    process's name), summed over the threads of one name."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name, seconds = stat_cpu(f"/proc/{pid}/task/{tid}/stat")
        except OSError:  # the thread ended
            continue
        key = "event loop" if int(tid) == pid else name
        out[key] = out.get(key, 0.0) + seconds
    return out


class ThreadSampler:
    """Per-thread CPU of `pids` from `start_s` after its start for `duration_s` (chosen
    inside the client's measured window): `result()`, in % of one core per process
    and thread name."""

    def __init__(self, pids: list[int], start_s: float, duration_s: float) -> None:
        self._pids, self._start_s, self._duration_s = pids, start_s, duration_s
        self._result: dict[str, dict[str, float]] = {}
        self._thread = threading.Thread(target=self._run, name="thread-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        time.sleep(self._start_s)
        before = {pid: thread_cpu_s(pid) for pid in self._pids}
        started = time.monotonic()
        time.sleep(self._duration_s)
        after = {pid: thread_cpu_s(pid) for pid in self._pids}
        seconds = time.monotonic() - started
        for pid in self._pids:
            used = {k: stats.cpu_percent(v - before[pid].get(k, 0.0), seconds)
                    for k, v in after[pid].items()}  # fmt: skip
            self._result[str(pid)] = {k: round(v, 1) for k, v in sorted(used.items()) if v >= 0.05}

    def result(self) -> dict[str, dict[str, float]]:
        self._thread.join()
        return self._result


def worker_pids(server: Server) -> list[int]:
    """The server's processes that serve: its workers, or itself when it has none."""
    path = Path(f"/proc/{server.pid}/task/{server.pid}/children")
    children = [int(p) for p in path.read_text().split()] if path.exists() else []
    return children or [server.pid]


def wait_all_workers(server: Server, workers: int, timeout_s: float = 180.0) -> None:
    """Every worker has built its presence filter and answers on the shared port."""
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        server.check_alive()
        built = server.log.read_text(errors="replace")[server.log_offset :].count(PRESENCE_BUILT)
        if built >= workers:
            conn = http.client.HTTPConnection(HOST, server.port, timeout=5)  # new connection
            try:
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                response.read()
                seen.add(response.getheader("X-Livefeat-Worker") or "single")
            except OSError:
                pass
            finally:
                conn.close()
            if len(seen) >= workers:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{server.name}: not every worker ready:\n{server.log_tail()}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    prepare.ensure_demo(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="livefeat-workers-"))
    requests = prepare.make_requests(CANDIDATES, seed=CANDIDATES, count=args.requests)
    files = prepare.write_request_files(work, requests, TRANSPORTS)
    redis = None
    runs: list[dict[str, Any]] = []
    try:
        if "redis" in args.stores:
            prepare.clone_rocksdb(args.data_dir, work / "data-redis")
            redis = redis_server("redis", work / "redis")
            redis.start()
            redis.wait_ready(30)
            prepare.fill_redis(work / "data-redis", redis_url(redis), requests)
        for rep in range(args.repetitions):
            for store in args.stores:
                for workers in (1, 2) if rep % 2 == 0 else (2, 1):
                    for row in run_server(args, work, files, store, workers, redis):
                        runs.append({"repetition": rep, **row})
    finally:
        if redis is not None:
            redis.stop()
    return {"work_dir": str(work), "machine": prepare.machine_info(), "runs": runs,
            "summary": summarize(runs), "concurrency": args.concurrency,
            "duration_s": args.duration, "candidates": CANDIDATES,
            "client": args.client}  # fmt: skip


def run_server(
    args: argparse.Namespace, work: Path, files: dict[str, Path], store: str, workers: int,
    redis: Server | None,
) -> list[dict[str, Any]]:  # fmt: skip
    data = args.data_dir if store == "embedded" else work / "data-redis"
    url = redis_url(redis) if store == "redis" and redis is not None else None
    name = f"livefeat-{store}-{workers}w"
    server = livefeat_server(name, data, work / f"{name}.log", url, {}, workers=workers)
    server.start()
    out = []
    try:
        wait_all_workers(server, workers)
        servers = tuple((f"server{i}", pid) for i, pid in enumerate(worker_pids(server)))
        pids = servers + ((("redis", redis.pid),) if url and redis is not None else ())
        for transport in args.transports:
            spec = RunSpec(HOST, server.port_for(transport), str(files[transport]),
                           args.concurrency, args.warmup, args.duration, pids)  # fmt: skip
            # Inside the client's window: it starts after the client process (about 1 s).
            window = (args.warmup + 1, args.duration - 1)
            sampler = ThreadSampler([p for _, p in servers], *window) if args.threads else None
            got = run_client(spec, CLIENTS[args.client][transport])
            server_cpu = sum(got[f"{role}_cpu_pct"] for role, _ in servers)
            row = {"store": store, "transport": transport, "workers": workers,
                   "throughput_rps": got["throughput_rps"], "errors": got["errors"],
                   "p99_ms": got["latency_ms"]["p99"] if got["latency_ms"] else None,
                   "client_cpu_pct": got["client_cpu_pct"], "server_cpu_pct": server_cpu,
                   "redis_cpu_pct": got.get("redis_cpu_pct", 0.0)}  # fmt: skip
            if sampler is not None:
                row["threads_cpu_pct"] = sampler.result()
            print(json.dumps(row), flush=True)
            out.append(row)
    finally:
        server.stop()
    return out


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per store and transport: medians for 1 and 2 workers and the throughput ratio of
    the medians (`ratio`); and each repetition's own ratio (its 2-worker run against its
    1-worker run, measured minutes apart at most) with their median (`median_ratio`),
    which the drift of a shared machine over a long run moves less."""
    out = []
    for store in dict.fromkeys(r["store"] for r in runs):
        for transport in dict.fromkeys(r["transport"] for r in runs):
            row: dict[str, Any] = {"store": store, "transport": transport}
            for workers in (1, 2):
                mine = [r for r in runs if (r["store"], r["transport"], r["workers"])
                        == (store, transport, workers)]  # fmt: skip
                for key in ("throughput_rps", "client_cpu_pct", "server_cpu_pct", "redis_cpu_pct",
                            "p99_ms"):  # fmt: skip
                    row[f"{key}_{workers}w"] = round(stats.median(r[key] for r in mine), 2)
            row["ratio"] = stats.ratio(row["throughput_rps_2w"], row["throughput_rps_1w"])
            row["ratios"] = repetition_ratios(runs, store, transport)
            row["median_ratio"] = round(stats.median(row["ratios"]), 3) if row["ratios"] else None
            out.append(row)
    return out


def repetition_ratios(runs: list[dict[str, Any]], store: str, transport: str) -> list[float]:
    """Per repetition that measured both, 2-worker throughput / 1-worker throughput."""
    by_rep: dict[int, dict[int, float]] = {}
    for r in runs:
        if (r["store"], r["transport"]) == (store, transport) and "repetition" in r:
            by_rep.setdefault(r["repetition"], {})[r["workers"]] = r["throughput_rps"]
    ratios = (stats.ratio(got.get(2), got.get(1)) for _, got in sorted(by_rep.items()))
    return [round(r, 3) for r in ratios if r is not None]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["summary"]:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
