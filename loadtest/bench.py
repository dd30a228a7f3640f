"""The benchmark runner: livefeat against bare echo servers (docs/benchmark-workload.md).

    python -m loadtest.bench [--quick] [--out loadtest/results/bench.json] [--data-dir DIR]

A *case* is a target server, a pre-encoded request list and a client protocol. Each
livefeat case (HTTP or gRPC; embedded L1 + RocksDB, Redis + L1, or cold Redis with L1
off; 100 or 500 candidate rooms) has a baseline: a bare echo server on the same framework
answering with a body of the same size, driven by the same client with the same request
bytes. A baseline and the cases compared with it run together, their order rotating per
repetition, so that machine noise hits them alike; every claim is a ratio.

Modules: plan.py (cases, schedule), runner.py (setup, runs, teardown), clients.py (the
load generator, in its own process), servers.py (subprocesses, stopped by pid),
prepare.py (data, Redis, requests, echo bodies), analysis.py (medians, ratios, targets,
the table), report.py (the PNG). See loadtest/README.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from loadtest import analysis, runner
from loadtest.clients import GRPC_CHANNELS
from loadtest.plan import CASE_CHOICES, FULL_CASES, QUICK_CASES, plan_from
from loadtest.prepare import machine_info
from loadtest.servers import HOST, Server, free_port, livefeat_command

# Used by loadtest.propagation from here, where they were before the split.
__all__ = ["HOST", "Server", "free_port", "livefeat_command", "machine_info", "main", "parser"]

RESULTS = Path("loadtest/results")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="3 s runs, 1 repetition, concurrency 1 and 8, fewer cases (under a minute)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="JSON report (loadtest/results/bench.json; quick: bench-quick.json); "
        "the PNG goes beside it",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data/livefeat"),
        help="demo data dir; generated there first if missing",
    )
    p.add_argument(
        "--cases",
        nargs="+",
        choices=CASE_CHOICES,
        metavar="CASE",
        help="livefeat cases as transport-store-candidates; stores: embedded (L1 + "
        "RocksDB), redis (Redis + L1), cold (Redis, L1 off). Default: "
        f"{' '.join(FULL_CASES)}; quick: {' '.join(QUICK_CASES)}",
    )
    p.add_argument("--candidates", type=int, nargs="+", choices=[100, 500], help="keep only these")
    p.add_argument("--duration", type=float, help="seconds per measured run (20; quick 3)")
    p.add_argument(
        "--warmup",
        type=float,
        help="seconds of warm-up before each run (3, quick too: windows start on a warm L1)",
    )
    p.add_argument("--repetitions", type=int, help="runs per case and concurrency (3; quick 1)")
    p.add_argument("--concurrency", type=int, nargs="+", help="(1 8 32; quick 1 8)")
    p.add_argument("--requests", type=int, help="pre-encoded requests per set (5000; quick 2000)")
    p.add_argument(
        "--grpc-channels",
        choices=GRPC_CHANNELS,
        default="per-slot",
        help="gRPC client: one channel (TCP connection) per concurrency slot, as the HTTP "
        "client has (per-slot), or one channel shared by all slots",
    )
    p.add_argument(
        "--grpc-deadline",
        type=float,
        default=1.0,
        help="deadline of each gRPC call in s, as livefeat's client sets (0: none)",
    )
    p.add_argument(
        "--redis-rows",
        choices=["all", "requested"],
        help="rows written into the serving Redis (all; quick: those the requests read)",
    )
    p.add_argument(
        "--redis-memory",
        action=argparse.BooleanOptionalAction,
        help="measure Redis memory of users + rooms (default: yes; quick: no)",
    )
    p.add_argument("--no-png", action="store_true", help="write the JSON report only")
    return p


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    plan = plan_from(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # so the finally stops the servers
    try:
        report = runner.run(plan, args.data_dir.resolve())
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    out: Path = args.out or RESULTS / ("bench-quick.json" if args.quick else "bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(analysis.summary_table(report))
    written = [str(out)]
    if not args.no_png:
        from loadtest import report as png

        png.render(report, out.with_suffix(".png"))
        written.append(str(out.with_suffix(".png")))
    print(f"\nbench: {report['elapsed_s']:.0f} s; every figure in {' and '.join(written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
