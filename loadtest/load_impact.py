"""Serving latency while a batch load writes into the same Redis: idle vs during the load.

    python -m loadtest.load_impact [--duration 10] [--concurrency 1] [--repetitions 3]
                                   [--out loadtest/results/load-impact.json]

Starts its own redis-server (free port), loads the demo into a data dir and that Redis
(`livefeat demo --data-dir D --redis-url URL`), and serves it (`livefeat serve --data-dir D
--redis-url URL`, pid recorded, SIGTERM to that pid at the end). Once the server is ready
and its presence filter is built, each repetition measures /v1/bundle (100 candidates,
standard workload requests, pre-encoded) with the benchmark's closed-loop HTTP/1.1 client
(loadtest.clients, in its own process), in rotating order:

- ``idle``: nothing else of ours running;
- ``load``: while `livefeat load user_room_affinity PAIRS --data-dir OTHER --redis-url URL`
  runs beside the server, as a user would run it: the server subscribes to that Redis's
  change feed, so the load paces itself (LIVEFEAT_LOAD_SERVING_ROWS_PER_S, service/load.py
  Pacer). The server holds D (RocksDB allows one process per data dir), so the load goes
  into a fresh data dir and the shared Redis. PAIRS is the demo's pair file with a newer
  event time, so every row is really written to Redis (and published to the server's
  change feed); its first `--paced-rows` rows, so that the load outlasts the window. The
  client starts once the load has made its first batch durable, and the report checks
  that the whole client run (so its measured window) lies inside the load
  (`window_inside_load`);
- ``load-full-speed``: the same with `--max-rows-per-s 0` (no pacing), the file `--copies`
  times over (each copy newer);
- ``load-rocksdb``: the full-speed load without Redis, a control: CPU contention alone,
  no Redis traffic and no change notifications.

Reported: p50/p90/p99 of each window and their ratios to idle (target: p99 during the load
at most 2x idle), server and Redis CPU over each window, Redis PING round trips from a
probe thread (how long a command waits behind the load's scripts), the server's change-feed
figures, and the load's own rows/s and CPU while serving.
"""

from __future__ import annotations

import argparse
import array
import pickle
import re
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadtest import stats
from loadtest.analysis import measure_and_publish, target_line
from loadtest.clients import RunSpec, run_client
from loadtest.load_rate import (
    TimedProcess,
    clean_env,
    command_deltas,
    fmt,
    parse_load_output,
    redis_commands,
)
from loadtest.prepare import ENCODERS, machine_info, make_requests, size_responses
from loadtest.servers import HOST, Server, livefeat_command, livefeat_server, redis_client

PAIR_VIEW = "user_room_affinity"
N_CANDIDATES, SEED = 100, 100  # the request set of loadtest.bench's 100-candidate cases
TARGET_P99_RATIO = 2.0
RESULTS = Path("loadtest/results")
WATCHED_METRICS = (
    "livefeat_change_feed_keys_total",
    "livefeat_change_feed_connected",
    "livefeat_write_behind_dropped_total",
    "livefeat_tier_errors_total",
    "livefeat_l1_rows",
    "livefeat_tier_operation_duration_seconds_bucket",
)
_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) ([-+0-9.eEinfNa]+)$")


# --------------------------------------------------------------------------- pure helpers


def parse_metrics(text: str, names: tuple[str, ...] = WATCHED_METRICS) -> dict[str, float]:
    """Samples (name{labels} -> value) of the Prometheus text whose name is in `names`."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line.strip())
        if m and m[1].split("{", 1)[0] in names:
            out[m[1]] = float(m[2])
    return out


def metric_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counters (``*_total``, histogram buckets) as after - before, gauges as after."""
    return {
        k: v - before.get(k, 0.0) if k.split("{", 1)[0].endswith(("_total", "_bucket")) else v
        for k, v in after.items()
    }


def redis_get_quantiles(deltas: dict[str, float]) -> dict[str, Any] | None:
    """The server's own Redis reads over a window, from its tier histogram's bucket deltas:
    how many, and the bucket bound (ms) under which 50% and 99% of them finished."""
    series = "livefeat_tier_operation_duration_seconds_bucket{"
    buckets = []
    for name, count in deltas.items():
        if name.startswith(series) and 'tier="redis"' in name and 'op="get"' in name:
            le = re.search(r'le="([^"]+)"', name)
            if le:
                buckets.append((float(le[1]), count))
    buckets.sort()
    if not buckets or not buckets[-1][1]:
        return None
    total = buckets[-1][1]
    out: dict[str, Any] = {"count": total}
    for q, key in ((0.5, "p50_under_ms"), (0.99, "p99_under_ms")):
        bound = next(le for le, c in buckets if c >= q * total)
        out[key] = None if bound == float("inf") else bound * 1000
    return out


def overlap(window: tuple[float, float], span: tuple[float, float]) -> float:
    """The fraction of `window` that lies inside `span` (0 for an empty window)."""
    length = window[1] - window[0]
    if length <= 0:
        return 0.0
    inside = min(window[1], span[1]) - max(window[0], span[0])
    return max(inside, 0.0) / length


def p99_ratio(
    load: dict[str, Any] | None, idle: dict[str, Any] | None, q: str = "p99"
) -> float | None:
    """Latency percentile `q` during the load over idle (None if either is missing)."""
    if not load or not idle:
        return None
    return stats.ratio(load.get(q), idle.get(q))


# --------------------------------------------------------------------------- setup


def newer_pairs_file(
    source: Path, dest: Path, event_time_ms: int, copies: int = 1, rows: int | None = None
) -> int:
    """Write the pair view's Parquet `copies` times over into `dest`, copy i with every
    event_time set to `event_time_ms + i` (each copy newer than the last, so every row of
    every copy is written), cut after `rows` rows if given. Returns the rows written."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    i = table.schema.get_field_index("event_time")
    left = int(table.num_rows) * copies if rows is None else rows
    with pq.ParquetWriter(dest, table.schema) as writer:
        for copy in range(copies):
            part = table.slice(0, min(left, table.num_rows))
            if not part.num_rows:
                break
            column = pa.array(np.full(part.num_rows, event_time_ms + copy, dtype=np.int64))
            writer.write_table(part.set_column(i, "event_time", column), row_group_size=100_000)
            left -= part.num_rows
    return (int(table.num_rows) * copies if rows is None else rows) - left


PRESENCE_BUILT, PRESENCE_FAILED = "presence filter built", "presence filter not rebuilt"


def wait_presence(server: Server, timeout_s: float = 300.0) -> str | None:
    """Wait until the server's presence filter is built (None) or its build failed (the
    log line). RuntimeError on timeout."""
    start = time.monotonic()
    while True:
        server.check_alive()
        for line in server.log.read_text(errors="replace").splitlines():
            if PRESENCE_BUILT in line:
                return None
            if PRESENCE_FAILED in line:
                return line
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"{server.name}: presence filter neither built nor failed")
        time.sleep(0.1)


def start_server(data_dir: Path, work: Path, redis_url: str, attempts: int = 3) -> Any:
    """`livefeat serve` on `data_dir` and Redis, ready and with its presence filter built.

    The filter's build scans Redis with the serving client's short socket timeout and, on
    a busy machine, can fail (the server then looks every pair up). Such a server is
    stopped and started again, up to `attempts` times; the last one is kept either way.
    Returns (server, its description).
    """
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        log = work / f"livefeat-{attempt}.log"
        server = livefeat_server("livefeat", data_dir, log, redis_url, {})
        server.start()
        try:
            ready_s = server.wait_ready()
            failed = wait_presence(server)
        except BaseException:
            server.stop()
            raise
        if failed is None or attempt == attempts:
            built_s = time.monotonic() - server.started_at - ready_s
            return server, {
                **server.describe(),
                "log": str(log),
                "presence_filter_built_after_ready_s": None if failed else round(built_s, 2),
                "presence_filter_failures": [*failures, *([failed] if failed else [])],
            }
        failures.append(failed)
        print(f"load_impact: presence filter not built ({failed}); restarting the server",
              flush=True)  # fmt: skip
        server.stop()
    raise AssertionError("unreachable")


def log_count(server: Server, needle: str) -> int:
    return server.log.read_text(errors="replace").count(needle)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
        return parse_metrics(r.read().decode())


def load_has_written(data_dir: Path) -> bool:
    """Whether a load into `data_dir` has made a batch durable (its checkpoint exists)."""
    return any((data_dir / "loads").glob("*.json"))


class RedisProbe:
    """PING round trips to Redis from a thread, every `interval_s`: how long a command
    waits behind what Redis is busy with (a load's scripts, for instance)."""

    def __init__(self, port: int, interval_s: float = 0.005) -> None:
        self._client = redis_client(port)
        self._interval_s = interval_s
        self._samples = array.array("q")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter_ns()
            self._client.ping()
            self._samples.append(time.perf_counter_ns() - t)
            self._stop.wait(self._interval_s)

    def __enter__(self) -> RedisProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self._client.close()

    def summary(self) -> dict[str, Any] | None:
        return stats.latency_summary(self._samples) if self._samples else None


# --------------------------------------------------------------------------- the windows


def window(spec: RunSpec, server: Server, redis_port: int) -> dict[str, Any]:
    """One measured client run, with the server's and Redis's side of it.

    `client_run_ns` spans the whole client process (spawn, warm-up, window, exit): the
    measured window lies inside it."""
    metrics0 = scrape(server.port)
    subs0 = log_count(server, "change feed subscribed")
    commands0 = redis_commands(probe_client := redis_client(redis_port))
    with RedisProbe(redis_port) as probe:
        t0 = time.perf_counter_ns()
        fig = run_client(spec, "http1")
        fig["client_run_ns"] = [t0, time.perf_counter_ns()]
    fig["redis_ping_ms"] = probe.summary()
    fig["redis_commands"] = command_deltas(commands0, redis_commands(probe_client))
    probe_client.close()
    deltas = metric_deltas(metrics0, scrape(server.port))
    fig["server_redis_get"] = redis_get_quantiles(deltas)
    fig["server_metrics"] = {
        k: v
        for k, v in deltas.items()
        if not k.startswith("livefeat_tier_operation_duration_seconds_bucket")
    }
    fig["change_feed_resubscriptions"] = log_count(server, "change feed subscribed") - subs0
    return fig


def load_window(
    spec: RunSpec,
    server: Server,
    redis_port: int,
    pairs: Path,
    data_dir: Path,
    redis_url: str | None,
    extra_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Start the load, wait until it has written a batch, measure a window, wait for the load.

    With `redis_url` None the load writes RocksDB only: a control that shows what sharing
    the CPU costs without any Redis traffic or change notifications.
    """
    cmd = [livefeat_command(), "load", PAIR_VIEW, str(pairs), "--data-dir", str(data_dir)]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    cmd += extra_args
    load = TimedProcess(cmd, clean_env())
    try:
        while not load_has_written(data_dir):
            if not load.running():
                break
            if time.perf_counter_ns() - load.t0_ns > 120e9:
                raise RuntimeError("the load made no batch durable within 120 s")
            time.sleep(0.02)
        writing_ns = time.perf_counter_ns()
        fig = window(spec, server, redis_port)
        done = load.wait(600)
    finally:
        if load.running():
            load.proc.terminate()  # this pid only
            load.wait(30)
    if done["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done['returncode']}):\n{done['stderr']}")
    parsed = parse_load_output(done["stdout"]) or {}
    # The window lies inside the client run: the run inside the load is enough (conservative).
    c0, c1 = fig.pop("client_run_ns")
    inside = overlap((c0, c1), (writing_ns, load.t1_ns))
    cpu = done["cpu_user_s"] + done["cpu_sys_s"]
    fig["load"] = {
        "rows": parsed.get("rows"),
        "written": parsed.get("written"),
        "wall_s": done["wall_s"],
        "rows_per_s": stats.ratio(parsed.get("rows"), done["wall_s"]),
        "cli_rows_per_s": parsed.get("cli_rows_per_s"),
        "cpu_s": cpu,
        "cpu_pct": stats.cpu_percent(cpu, done["wall_s"]),
        "machine_busy_cores": done["machine_busy_cores"],
        "started_writing_after_s": (writing_ns - load.t0_ns) / 1e9,
        "client_run_ends_before_load_exit_s": (load.t1_ns - c1) / 1e9,
        "client_run_fraction_inside_load": inside,
        "cli_output": done["stdout"].strip(),
    }
    fig["window_inside_load"] = inside >= 0.999
    return fig


# --------------------------------------------------------------------------- the run


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from service.cli import DEMO_MARKER
    from tests.support.redis_proc import RedisServer

    started = time.monotonic()
    report: dict[str, Any] = {"schema": "livefeat-load-impact/1", "machine": machine_info()}
    work = Path(tempfile.mkdtemp(prefix="livefeat-load-impact-"))
    print(f"load_impact: work dir {work}", flush=True)
    setup: dict[str, Any] = {"work_dir": str(work)}
    report["setup"] = setup
    redis = RedisServer(work)
    server: Server | None = None
    runs: list[dict[str, Any]] = []
    try:
        setup["redis"] = {"pid": redis.pid, "port": redis.port}
        data_dir = work / "serve"
        demo = TimedProcess([livefeat_command(), "demo", "--data-dir", str(data_dir),
                             "--redis-url", redis.url], clean_env()).wait(900)  # fmt: skip
        if demo["returncode"] != 0:
            raise RuntimeError(f"livefeat demo failed:\n{demo['stderr']}")
        marker = (data_dir / DEMO_MARKER).read_text()
        demo_event_ms = int(marker.rsplit("event_time_ms=", 1)[1])
        setup["demo"] = {"wall_s": round(demo["wall_s"], 1), "marker": marker.strip(),
                         "output": demo["stdout"].strip().splitlines()}  # fmt: skip
        print(f"load_impact: demo loaded in {demo['wall_s']:.0f} s", flush=True)

        requests = make_requests(N_CANDIDATES, SEED, args.requests)
        requests_file = work / "requests.pickle"
        with requests_file.open("wb") as f:
            pickle.dump([ENCODERS["http1"](u, r) for u, r in requests], f)
        server, setup["server"] = start_server(data_dir, work, redis.url)
        ready_s = setup["server"]["ready_s"]
        presence_s = setup["server"]["presence_filter_built_after_ready_s"]
        _, setup["response_sizing"] = size_responses("http", server.port, requests)
        print(f"load_impact: server pid {server.pid} ready in {ready_s:.1f} s, presence filter "
              f"built {fmt(presence_s, '.1f')} s later", flush=True)  # fmt: skip

        pids = (("server", server.pid), ("redis", redis.pid))
        spec = RunSpec(HOST, server.port, str(requests_file), args.concurrency, args.warmup,
                       args.duration, pids)  # fmt: skip
        kinds = ["idle", "load"] + [k for k in ("load-full-speed", "load-rocksdb")
                                    if k not in (args.skip or [])]  # fmt: skip
        for rep in range(args.repetitions):
            for kind in kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]:  # rotated
                server.check_alive()
                if kind == "idle":
                    fig = window(spec, server, redis.port)
                    fig.pop("client_run_ns")
                else:
                    event_ms = max(time.time_ns() // 1_000_000, demo_event_ms + 1)
                    pairs = work / "pairs-newer.parquet"
                    source = data_dir / "demo-parquet" / f"{PAIR_VIEW}.parquet"
                    rows = args.paced_rows if kind == "load" else None
                    # The control runs about twice as fast: twice the rows to outlast a window.
                    copies = args.copies * (2 if kind == "load-rocksdb" else 1)
                    n = newer_pairs_file(source, pairs, event_ms, copies, rows)
                    other = work / f"load-rep{rep}-{kind}"
                    url = None if kind == "load-rocksdb" else redis.url
                    flags = ("--max-rows-per-s", "0") if kind == "load-full-speed" else ()
                    fig = load_window(spec, server, redis.port, pairs, other, url, flags)
                    fig["load"].update(file_rows=n, copies=copies, event_time_ms=event_ms)
                    shutil.rmtree(other, ignore_errors=True)
                    pairs.unlink(missing_ok=True)
                runs.append({"kind": kind, "repetition": rep, "figures": fig})
                lat, ping = fig["latency_ms"] or {}, fig["redis_ping_ms"] or {}
                gets = fig["server_redis_get"] or {}
                extra = ""
                if "load" in fig:
                    ld = fig["load"]
                    extra = (f"  load {fmt(ld['cli_rows_per_s'], ',.0f')} rows/s, window inside "
                             f"load: {fig['window_inside_load']}")  # fmt: skip
                print(f"  rep {rep + 1} {kind:<15} {fig['throughput_rps']:>6,.0f} req/s  p50 "
                      f"{fmt(lat.get('p50'), '.2f')}  p99 {fmt(lat.get('p99'), '.2f')} ms  "
                      f"errors {fig['errors']}  Redis PING p99 {fmt(ping.get('p99'), '.2f')} ms"
                      f"  server's Redis reads p99 < {fmt(gets.get('p99_under_ms'), '.1f')} ms"
                      f"{extra}", flush=True)  # fmt: skip
        server.check_alive()
    finally:
        if server is not None:
            setup.setdefault("server", {})["exit_code"] = server.stop()
        redis.stop()
    report["protocol"] = {
        "requests": "RequestGenerator(100_000, 20_000, 100 candidates, seed=100), "
        f"{args.requests} pre-encoded POST /v1/bundle, cycled",
        "client": "loadtest.clients http1: closed loop, keep-alive, its own process",
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "repetitions": args.repetitions,
        "windows": {
            "idle": "the server alone",
            "load": f"livefeat load {PAIR_VIEW} into a fresh data dir and the server's Redis, "
            "as it runs by default: paced (LIVEFEAT_LOAD_SERVING_ROWS_PER_S) because a serving "
            "replica subscribes to that Redis's change feed",
            "load-full-speed": "the same with --max-rows-per-s 0: no pacing",
            "load-rocksdb": "the same load at full speed into a fresh data dir, no Redis "
            "(control: CPU contention alone)",
        },
        "load_file": f"the demo's {PAIR_VIEW} file {args.copies} time(s) over (twice that for "
        "load-rocksdb), each copy with a "
        "newer event_time than the last (every row written), so the load outlasts the window; "
        f"for the paced load its first {args.paced_rows:,} rows",
        "order": "per repetition, every window kind, rotated",
        "window_start": "once the load has made its first batch durable (its checkpoint file)",
        "redis_ping_ms": "PING round trips from the parent, every 5 ms, over the client run",
        "median": "per figure, over repetitions",
    }
    report["runs"] = runs
    kinds_run = list(dict.fromkeys(r["kind"] for r in runs))
    report["median"] = {
        kind: stats.median_of_runs([_numeric(r["figures"]) for r in runs if r["kind"] == kind])
        for kind in kinds_run
    }
    idle = report["median"].get("idle", {}).get("latency_ms")
    report["ratios"] = {}
    for kind in kinds_run:
        if kind == "idle":
            continue
        during = report["median"][kind].get("latency_ms")
        report["ratios"][kind] = {q: p99_ratio(during, idle, q) for q in ("p50", "p90", "p99")}
        report["ratios"][kind]["p99_per_repetition"] = [
            p99_ratio(_lat(runs, kind, rep), _lat(runs, "idle", rep))
            for rep in range(args.repetitions)
        ]
    value = report["ratios"].get("load", {}).get("p99")
    report["targets"] = [{
        "target": "p99 of /v1/bundle during a load into RocksDB+Redis (default pacing) / idle "
                  "p99",
        "value": value,
        "limit": f"<= {TARGET_P99_RATIO:g}",
        "ok": None if value is None else value <= TARGET_P99_RATIO,
        "every_window_inside_load": all(r["figures"]["window_inside_load"]
                                        for r in runs if r["kind"] == "load"),
    }]  # fmt: skip
    report["windows_inside_load"] = {
        kind: [r["figures"]["window_inside_load"] for r in runs if r["kind"] == kind]
        for kind in kinds_run
        if kind != "idle"
    }
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _lat(runs: list[dict[str, Any]], kind: str, rep: int) -> dict[str, Any] | None:
    for r in runs:
        if r["kind"] == kind and r["repetition"] == rep:
            lat: dict[str, Any] | None = r["figures"]["latency_ms"]
            return lat
    return None


def _numeric(fig: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fig.items() if k not in ("cli_output", "window_inside_load")} | (
        {"load": {k: v for k, v in fig["load"].items() if k != "cli_output"}}
        if "load" in fig
        else {}
    )


def summary_table(report: dict[str, Any]) -> str:
    head = (f"{'window':<15} {'req/s':>6} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
            f"{'max ms':>7} {'errors':>6} {'server':>6} {'Redis':>6} {'client':>6} "
            f"{'PING p99':>8}")  # fmt: skip
    lines = [head, f"{'':<15} {'':>6} {'':>7} {'':>7} {'':>7} {'':>7} {'':>6} {'CPU %':>6} "
             f"{'CPU %':>6} {'CPU %':>6} {'ms':>8}", "-" * len(head)]  # fmt: skip
    for kind, m in report["median"].items():
        lat, ping = m.get("latency_ms") or {}, m.get("redis_ping_ms") or {}
        lines.append(
            f"{kind:<15} {fmt(m.get('throughput_rps'), ',.0f'):>6} "
            f"{fmt(lat.get('p50'), '.2f'):>7} {fmt(lat.get('p90'), '.2f'):>7} "
            f"{fmt(lat.get('p99'), '.2f'):>7} {fmt(lat.get('max'), '.2f'):>7} "
            f"{fmt(m.get('errors'), '.0f'):>6} {fmt(m.get('server_cpu_pct'), '.0f'):>6} "
            f"{fmt(m.get('redis_cpu_pct'), '.0f'):>6} "
            f"{fmt(m.get('client_cpu_pct'), '.0f'):>6} {fmt(ping.get('p99'), '.2f'):>8}"
        )
    lines.append("")
    for kind, r in report["ratios"].items():
        per = ", ".join(fmt(x, ".2f") for x in r["p99_per_repetition"])
        lines.append(f"{kind} / idle: p50 {fmt(r['p50'], '.2f')}, p90 {fmt(r['p90'], '.2f')}, "
                     f"p99 {fmt(r['p99'], '.2f')} (p99 per repetition: {per})")  # fmt: skip
    for kind, m in report["median"].items():
        ld = m.get("load")
        if ld:
            lines.append(
                f"{kind}: {fmt(ld.get('rows'), ',.0f')} rows at "
                f"{fmt(ld.get('cli_rows_per_s'), ',.0f')} rows/s (CLI timer; "
                f"{fmt(ld.get('rows_per_s'), ',.0f')} end to end), load CPU "
                f"{fmt(ld.get('cpu_pct'), '.0f')}% of a core, machine "
                f"{fmt(ld.get('machine_busy_cores'), '.2f')} cores busy"
            )
    for kind, m in report["median"].items():
        script = (m.get("redis_commands") or {}).get("evalsha")
        mget = (m.get("redis_commands") or {}).get("mget") or {}
        if script:
            lines.append(
                f"{kind}: Redis ran {fmt(script.get('calls'), ',.0f')} write scripts of "
                f"{fmt(script.get('usec_per_call'), ',.0f')} us each (nothing else runs "
                f"meanwhile); the server's MGETs took {fmt(mget.get('usec_per_call'), ',.0f')} us"
            )
    lines += ["", "targets"]
    lines += [
        target_line(t, fmt(t["value"], ".2f"),
                    f"; every window inside its load: {t['every_window_inside_load']}")
        for t in report["targets"]
    ]  # fmt: skip
    p = report["protocol"]
    lines.append(f"\nmedians of {p['repetitions']} repetition(s) of {p['duration_s']:g} s "
                 f"(after {p['warmup_s']:g} s warm-up) at concurrency {p['concurrency']}; "
                 "CPU over the window; Redis PING over the whole client run")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure, print the table, write the JSON report."""
    p = argparse.ArgumentParser(prog="python -m loadtest.load_impact",
                                description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "load-impact.json")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per window (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before each window (2)")
    p.add_argument("--concurrency", type=int, default=1, help="client connections (1)")
    p.add_argument("--repetitions", type=int, default=3, help="idle/load pairs (3)")
    p.add_argument("--requests", type=int, default=2000, help="pre-encoded requests (2000)")
    p.add_argument(
        "--copies",
        type=int,
        default=3,
        help="the pair file this many times over, so the full-speed load outlasts a window (3)",
    )
    p.add_argument(
        "--paced-rows",
        type=int,
        default=300_000,
        help="rows of the paced load's file (300,000: 30 s at 10,000 rows/s)",
    )
    p.add_argument(
        "--skip",
        action="append",
        choices=("load-full-speed", "load-rocksdb"),
        help="skip a window kind (repeatable): the unpaced load, the control without Redis",
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    args = p.parse_args(argv)
    return measure_and_publish("load_impact", measure, summary_table, args)


if __name__ == "__main__":
    raise SystemExit(main())
