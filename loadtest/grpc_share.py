"""What grpc.aio costs around a handler of a given cost, and where livefeat's gRPC stands.

The gRPC echo (loadtest/echo_grpc.py) answers GetBundle with one of livefeat's own
answers; with `--burn-us` it first spins that long in each call. The echoes of several
spins and one livefeat server (embedded, on a clone of the demo data) run side by side
and are measured in alternated rounds by one client (closed loop, 100-room requests).

The echoes' server CPU per call against their spin is nearly a line (`line`): its
intercept is what grpc.aio costs with an idle handler, and its slope what one
millisecond of handler work costs in all (1.0 where the framework's cost does not grow
with the handler's time). livefeat's CPU per call read on that line is the spin an echo
would need to cost as much (`equivalent_burn_us`). livefeat's handler time is the mean of
its own request-duration histogram for GetBundle over each of its runs (`handler_ms`, from
its /metrics before and after; the median of the rounds). With every row in L1 nothing in
the handler waits on I/O, but its thread can be preempted in it, so this is at most its
CPU. An echo spinning that long would cost `line_at_handler_ms`; what livefeat costs above
that (`beyond_ms`, so at least this much) is spent outside its handler and beyond what
grpc.aio costs around any handler that slow: its memory traffic slowing grpc's own code,
the work its answer leaves behind, its other tasks.

    python -m loadtest.grpc_share --data-dir data/livefeat [--burn-us 0 100 200]
        [--rounds 3] [--duration 5] [--client native-grpc-h2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadtest import analysis, prepare, stats
from loadtest.clients import CLIENTS as KINDS
from loadtest.clients import RunSpec, add_round_options, encoding_of, run_client
from loadtest.plan import TRANSPORTS
from loadtest.servers import HOST, Server, echo_server, livefeat_server

CANDIDATES = 100
LIVEFEAT = "livefeat"
CLIENTS = [kind for kind in KINDS if encoding_of(kind) == TRANSPORTS["grpc"]]
"""The load generators that speak gRPC (those whose requests are gRPC's)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.grpc_share", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--data-dir", type=Path, default=Path("data/livefeat"),
                   help="the loaded demo data (livefeat serves a clone of it)")  # fmt: skip
    p.add_argument("--burn-us", type=float, nargs="+", default=[0.0, 100.0, 200.0],
                   help="the echoes' spins per call, in microseconds (two or more)")  # fmt: skip
    p.add_argument("--client", choices=CLIENTS, default="native-grpc-h2",
                   help="the load generator (loadtest/clients.py, loadtest/native/)")  # fmt: skip
    add_round_options(p, rounds=3, duration_s=5.0)
    p.add_argument("--out", type=Path, default=Path("loadtest/results/grpc-share.json"))
    return p


def echo_name(burn_us: float) -> str:
    return f"echo-{burn_us:g}us"


def check_inputs(burns: list[float], data_dir: Path) -> None:
    """ValueError unless there are two spins or more, none negative, and demo data."""
    from service.cli import DEMO_MARKER

    if len(set(burns)) < 2 or min(burns) < 0:
        raise ValueError(f"--burn-us {burns}: two different spins or more, none below 0")
    if not (data_dir / DEMO_MARKER).is_file():
        raise ValueError(
            f"--data-dir {data_dir}: no demo data; run livefeat demo --data-dir {data_dir}"
        )


def summarize(rounds: list[dict[str, Any]], burns: list[float]) -> dict[str, Any]:
    """Each server's median throughput and CPU per call; the echoes' line (CPU per call
    in ms against the spin in us, least squares over their medians) and livefeat's
    equivalent spin on it (None where the line does not rise); with livefeat's handler
    time (its runs' `handler_ms`), the line there and what livefeat costs above it."""
    servers: dict[str, Any] = {}
    for name in [LIVEFEAT, *map(echo_name, burns)]:
        runs = [r[name] for r in rounds]
        servers[name] = {
            "throughput_rps": round(stats.median(r["throughput_rps"] for r in runs), 1),
            "cpu_ms": round(stats.median(r["cpu_ms"] for r in runs), 4),
        }
    xs = sorted(set(burns))
    ys = [servers[echo_name(b)]["cpu_ms"] for b in xs]
    slope, intercept = statistics.linear_regression(xs, ys)  # ms per us, ms
    livefeat_ms = servers[LIVEFEAT]["cpu_ms"]
    handlers = [r[LIVEFEAT]["handler_ms"] for r in rounds if r[LIVEFEAT].get("handler_ms")]
    handler_ms = stats.median(handlers) if handlers else None
    equivalent = (livefeat_ms - intercept) / slope if slope > 0 else None
    at_handler = None if handler_ms is None else intercept + slope * handler_ms * 1e3
    return {
        "servers": servers,
        "line": {
            "idle_handler_ms": round(intercept, 4),
            "ms_per_handler_ms": round(slope * 1e3, 3),
        },
        "equivalent_burn_us": None if equivalent is None else round(equivalent, 1),
        "handler_ms": None if handler_ms is None else round(handler_ms, 4),
        "line_at_handler_ms": None if at_handler is None else round(at_handler, 4),
        "beyond_ms": None if at_handler is None else round(livefeat_ms - at_handler, 4),
    }


def _handler_totals(server: Server) -> tuple[float, float]:
    """(seconds, calls) of GetBundle answered OK so far, from the server's /metrics."""
    with urllib.request.urlopen(f"http://{HOST}:{server.port}/metrics", timeout=10) as r:
        return prepare.duration_totals(r.read().decode(), "grpc", "GetBundle", "OK")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    check_inputs(args.burn_us, args.data_dir)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="livefeat-grpc-share-"))
    requests = prepare.make_requests(CANDIDATES, seed=CANDIDATES, count=args.requests)
    files = prepare.write_request_files(work, requests, ["grpc"])
    servers: dict[str, Server] = {}
    rounds: list[dict[str, Any]] = []
    try:
        data = work / "data"
        prepare.clone_rocksdb(args.data_dir, data)
        livefeat = livefeat_server(LIVEFEAT, data, work / "livefeat.log", None, {})
        servers[LIVEFEAT] = livefeat
        livefeat.start()
        livefeat.wait_ready(120)
        port = livefeat.port_for("grpc")
        body, sizing = prepare.size_responses("grpc", port, requests)
        body_file = work / "echo.body"
        body_file.write_bytes(body)
        ports = {LIVEFEAT: port}
        for burn in dict.fromkeys(args.burn_us):
            name = echo_name(burn)
            servers[name] = echo_server("grpc", name, body_file, work / f"{name}.log", burn)
            servers[name].start()
            ports[name] = servers[name].port
        for server in servers.values():
            server.wait_ready(60)
        names = list(servers)
        for i in range(args.rounds):
            row: dict[str, Any] = {"round": i}
            for name in names if i % 2 == 0 else names[::-1]:
                server = servers[name]
                spec = RunSpec(HOST, ports[name], str(files["grpc"]), args.concurrency,
                               args.warmup, args.duration, (("server", server.pid),))  # fmt: skip
                before = _handler_totals(server) if name == LIVEFEAT else None
                got = run_client(spec, args.client)
                if got["errors"]:
                    raise RuntimeError(f"{name}: {got['errors']} errors: {got['status_counts']}")
                row[name] = {
                    "throughput_rps": round(got["throughput_rps"], 1),
                    "cpu_ms": got["server_cpu_ms_per_request"],
                    "server_cpu_pct": got["server_cpu_pct"],
                    "client_cpu_pct": got["client_cpu_pct"],
                }
                if before is not None:
                    (s0, c0), (s1, c1) = before, _handler_totals(server)
                    row[name]["handler_ms"] = (
                        round((s1 - s0) / (c1 - c0) * 1e3, 4) if c1 > c0 else None
                    )
            print(json.dumps(row), flush=True)
            rounds.append(row)
    finally:
        for server in servers.values():
            server.stop()
    return {"work_dir": str(work), "machine": prepare.machine_info(), "client": args.client,
            "concurrency": args.concurrency, "duration_s": args.duration, "response": sizing,
            "burn_us": args.burn_us, "rounds": rounds,
            "summary": summarize(rounds, args.burn_us),
            "elapsed_s": round(time.monotonic() - started, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report = measure(args)
    except ValueError as exc:  # refused inputs
        print(f"grpc_share: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a server or a run failed (errors, no result)
        print(f"grpc_share: {exc}", file=sys.stderr)
        return 1
    analysis.publish(report, args.out, json.dumps(report["summary"], indent=2), "grpc_share")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
