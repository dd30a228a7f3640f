"""This code against another tree of livefeat (an older commit), alternated round by
round on one machine: server CPU per request of each, and their ratio per round.

    git worktree add /tmp/livefeat-old REV
    .venv/bin/python /tmp/livefeat-old/hatch_build.py     # its generated and compiled code
    python -m loadtest.ab --other /tmp/livefeat-old [--store cold|redis|embedded]
        [--transports http grpc] [--candidates 100|500] [--rounds 10] [--duration 6]
        [--data-dir data/livefeat]

Two `livefeat serve` processes run at once: one on this tree, one with the other tree
first on PYTHONPATH (the same interpreter and dependencies, the other tree's `service`
package). With `--store cold` (the default) or `redis`, both read one redis-server of
our own holding the rows the requests read (cold: L1 off). Each round measures both
(the order alternates per round), once per transport, with the benchmark's client
process (loadtest/clients.py: bundles of 100 candidates, or 500, closed loop). On a shared,
noisy machine the median of the per-round ratios says more than either median alone:
consecutive windows of the same server differed by up to 15% (2026-12-07).

Also reported: each server's tier calls per bundle request (its /metrics), which shows
how many reads below L1 a request costs. JSON on stdout and in --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from loadtest import prepare, stats
from loadtest.clients import RunSpec, add_round_options, run_client
from loadtest.plan import TRANSPORTS
from loadtest.servers import HOST, Server, livefeat_server, redis_server, redis_url

NAMES = ("this", "other")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--other", type=Path, required=True, help="the other tree (its repository root)")
    p.add_argument("--store", choices=["cold", "redis", "embedded"], default="cold")
    p.add_argument("--transports", nargs="+", choices=list(TRANSPORTS), default=list(TRANSPORTS))
    p.add_argument("--candidates", type=int, choices=[100, 500], default=100,
                   help="candidate rooms per bundle request (the benchmark's two sizes)")  # fmt: skip
    add_round_options(p, rounds=10, duration_s=6.0)
    p.add_argument("--data-dir", type=Path, default=Path("data/livefeat"))
    p.add_argument("--out", type=Path, default=Path("loadtest/results/ab.json"))
    return p


def check_inputs(tree: Path, data_dir: Path) -> None:
    """ValueError unless `tree` holds a livefeat `service` package with its generated code
    and `data_dir` the loaded demo data (whichever size: both servers get a clone)."""
    from service.cli import DEMO_MARKER

    if not (tree / "service" / "__init__.py").is_file():
        raise ValueError(f"--other {tree}: no service/ package there")
    if not (tree / "service" / "_gen" / "livefeat").is_dir():
        raise ValueError(f"--other {tree}: no generated code; run hatch_build.py of that tree")
    if not (data_dir / DEMO_MARKER).is_file():
        raise ValueError(
            f"--data-dir {data_dir}: no demo data; run livefeat demo --data-dir {data_dir}"
        )


def tier_calls(metrics_text: str) -> dict[str, float]:
    """Reads per tier (get calls) and bundle requests answered (both front ends) in a
    /metrics page."""
    calls = prepare.parse_tier_counters(metrics_text)["calls"]
    reads = {k.split()[0]: v for k, v in calls.items() if k.endswith(" get")}
    answered = prepare.parse_requests(metrics_text)
    ok = ("/v1/bundle 200", "GetBundle OK")
    return {**reads, "bundles": sum(answered.get(route, 0.0) for route in ok)}


def summarize(rounds: list[dict[str, Any]], transports: list[str]) -> dict[str, Any]:
    """Per transport: each side's median CPU per request, and the per-round ratios
    (this / other) with their median."""
    out: dict[str, Any] = {}
    for transport in transports:
        this = [r["this"][transport] for r in rounds]
        other = [r["other"][transport] for r in rounds]
        ratios = [round(a / b, 3) for a, b in zip(this, other, strict=True)]
        out[transport] = {
            "this_ms": round(stats.median(this), 3),
            "other_ms": round(stats.median(other), 3),
            "ratios": ratios,
            "median_ratio": round(stats.median(ratios), 3),
        }
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    check_inputs(args.other, args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="livefeat-ab-"))
    requests = prepare.make_requests(args.candidates, seed=args.candidates, count=args.requests)
    files = prepare.write_request_files(work, requests, args.transports)
    servers: dict[str, Server] = {}
    redis = None
    rounds: list[dict[str, Any]] = []
    try:
        url = None
        if args.store != "embedded":
            redis = redis_server("redis", work / "redis")
            redis.start()
            redis.wait_ready(30)
            url = redis_url(redis)
        env = {"LIVEFEAT_L1_MAX_ROWS": "0"} if args.store == "cold" else {}
        for name in NAMES:
            data = work / f"data-{name}"
            prepare.clone_rocksdb(args.data_dir, data)
            if name == NAMES[0] and url is not None:
                prepare.fill_redis(data, url, requests)
            extra = {"PYTHONPATH": str(args.other.resolve())} if name == "other" else {}
            server = livefeat_server(name, data, work / f"{name}.log", url, {**env, **extra})
            servers[name] = server
            server.start()
        for server in servers.values():
            server.wait_ready(120)
        for i in range(args.rounds):
            row: dict[str, Any] = {"round": i, "this": {}, "other": {}}
            for transport in args.transports:
                for name in NAMES if i % 2 == 0 else NAMES[::-1]:
                    server = servers[name]
                    spec = RunSpec(HOST, server.port_for(transport), str(files[transport]),
                                   args.concurrency, args.warmup, args.duration,
                                   (("server", server.pid),))  # fmt: skip
                    got = run_client(spec, TRANSPORTS[transport])
                    row[name][transport] = got["server_cpu_ms_per_request"]
            print(json.dumps(row), flush=True)
            rounds.append(row)
        calls = {}
        for name, server in servers.items():
            with urllib.request.urlopen(f"http://{HOST}:{server.port}/metrics", timeout=10) as r:
                calls[name] = tier_calls(r.read().decode())
    finally:
        for server in servers.values():
            server.stop()
        if redis is not None:
            redis.stop()
    return {"work_dir": str(work), "machine": prepare.machine_info(), "other": str(args.other),
            "store": args.store, "candidates": args.candidates,
            "concurrency": args.concurrency, "duration_s": args.duration,
            "rounds": rounds, "tier_calls": calls,
            "summary": summarize(rounds, args.transports)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report = measure(args)
    except ValueError as exc:
        print(f"ab: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"summary": report["summary"], "tier_calls": report["tier_calls"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
