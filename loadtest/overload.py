"""Overload: does goodput hold past the knee? One `livefeat serve`, closed-loop clients.

    python -m loadtest.overload [--data-dir data/livefeat] [--transport http|grpc]
        [--max-in-flight N...] [--admission adaptive|fixed] [--refused-pause-ms MS]
        [--knee N] [--duration S] [--repetitions R] [--out loadtest/results/overload.json]

1. With no bound (LIVEFEAT_MAX_IN_FLIGHT=0), concurrency 1, 2, 4, ... 32: the
   knee is the lowest concurrency whose throughput reaches 90% of the best
   (`--knee N` skips the sweep and measures the knee at N).
2. One server with no bound and one per bound (`--max-in-flight`, default: the
   server's default; `--admission`, default adaptive): on each, runs at the knee's
   concurrency and at 4x it alternate `--repetitions` times, so that the ratios
   compare runs of one sitting on a shared machine: the medians of goodput (good
   answers/s) and of the p99 of good answers at 4x, against those at the knee on
   the server with no bound.

Pass: with a bound, goodput >= 90% of the knee's and p99 <= 3x the knee's.
A refused slot waits `--refused-pause-ms` before its next request (0: it retries
at once, the worst case for the server; callers should back off, or try
another replica). The embedded store (L1 + RocksDB), 100 candidates per bundle.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import tempfile
from pathlib import Path
from typing import Any

from loadtest import prepare
from loadtest.clients import RunSpec, run_client
from loadtest.servers import HOST, livefeat_server
from service.settings import Settings

CONCURRENCIES = (1, 2, 4, 8, 16, 32)
KNEE_FRACTION = 0.9
CLIENT = {"http": "http1", "grpc": "grpc"}


def measure(server: Any, transport: str, requests: str, conc: int, args: Any) -> dict[str, Any]:
    """One closed-loop run; its goodput and the latency of good answers."""
    spec = RunSpec(HOST, server.port_for(transport), requests, conc, args.warmup, args.duration,
                   (("server", server.pid),), grpc_deadline_s=5.0,
                   refused_pause_s=args.refused_pause_ms / 1000)  # fmt: skip
    got = run_client(spec, CLIENT[transport])
    ok = got["status_counts"].get("200" if transport == "http" else "OK", 0)
    lat = got["ok_latency_ms"] or {}
    return {
        "concurrency": conc,
        "goodput_rps": round(ok / got["window_s"], 1),
        "refused": sum(
            v for k, v in got["status_counts"].items() if k in ("429", "RESOURCE_EXHAUSTED")
        ),
        "status_counts": got["status_counts"],
        "ok_p50_ms": lat.get("p50"),
        "ok_p99_ms": lat.get("p99"),
        "server_cpu_pct": got.get("server_cpu_pct"),
    }


def verdict(knee: list[dict[str, Any]], over: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions: goodput and p99 of good answers at 4x against the knee."""

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    out = {"goodput_vs_knee": round(med(over, "goodput_rps") / med(knee, "goodput_rps"), 3),
           "p99_vs_knee": round(med(over, "ok_p99_ms") / med(knee, "ok_p99_ms"), 2)}  # fmt: skip
    out["pass"] = out["goodput_vs_knee"] >= 0.9 and out["p99_vs_knee"] <= 3.0
    return out


def with_server(data_dir: Path, work: Path, max_in_flight: int, run: Any,
                admission: str = "fixed") -> Any:  # fmt: skip
    env = {"LIVEFEAT_MAX_IN_FLIGHT": str(max_in_flight), "LIVEFEAT_ADMISSION": admission,
           "LIVEFEAT_LOG_LEVEL": "warning"}  # fmt: skip
    server = livefeat_server(f"livefeat-{max_in_flight}", data_dir, work / "serve.log", None, env)
    server.start()
    try:
        server.wait_ready()
        return run(server)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path("data/livefeat"))
    p.add_argument("--transport", choices=sorted(CLIENT), default="http")
    p.add_argument("--max-in-flight", type=int, nargs="+", default=[Settings().max_in_flight])
    p.add_argument(
        "--admission",
        choices=("adaptive", "fixed"),
        default=Settings().admission,
        help="how the bounded runs bound (the unbounded runs: no bound)",
    )
    p.add_argument("--refused-pause-ms", type=float, default=0.0)
    p.add_argument("--knee", type=int, help="the knee's concurrency (no sweep)")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument(
        "--repetitions",
        type=int,
        default=3,
        help="knee and 4x windows alternated this many times per server",
    )
    p.add_argument("--out", type=Path, default=Path("loadtest/results/overload.json"))
    args = p.parse_args(argv)
    prepare.ensure_demo(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="overload-") as tmp:
        work = Path(tmp)
        encode = prepare.ENCODERS[CLIENT[args.transport]]
        requests = work / "requests.pickle"
        requests.write_bytes(
            pickle.dumps([encode(u, r) for u, r in prepare.make_requests(100, 100, 2000)])
        )

        def sweep(server: Any) -> list[dict[str, Any]]:
            rows = []
            for conc in (args.knee,) if args.knee else CONCURRENCIES:
                rows.append(measure(server, args.transport, str(requests), conc, args))
                print(json.dumps(rows[-1]), flush=True)
            return rows

        def paired(bound: int, knee_conc: int) -> dict[str, Any]:
            """The knee's concurrency and 4x it, alternated on one server: a same-run ratio."""

            def run(server: Any) -> dict[str, Any]:
                got: dict[str, Any] = {"knee": [], "over": []}
                for _ in range(args.repetitions):
                    for kind, conc in (("knee", knee_conc), ("over", 4 * knee_conc)):
                        got[kind].append(measure(server, args.transport, str(requests), conc, args))
                        print(json.dumps({"max_in_flight": bound, "at": kind, **got[kind][-1]}),
                              flush=True)  # fmt: skip
                return got

            got = with_server(args.data_dir, work, bound, run,
                              args.admission if bound else "fixed")  # fmt: skip
            return got

        curve = with_server(args.data_dir, work, 0, sweep)
        best = max(r["goodput_rps"] for r in curve)
        knee = next(r for r in curve if r["goodput_rps"] >= KNEE_FRACTION * best)
        print(f"knee: concurrency {knee['concurrency']}; measuring at {4 * knee['concurrency']}",
              flush=True)  # fmt: skip
        unbounded = paired(0, knee["concurrency"])
        bounded = {bound: paired(bound, knee["concurrency"]) for bound in args.max_in_flight}

    # Against the unbounded server's knee: a bound that refuses at the knee's own
    # concurrency does not lower the reference. (Its own knee runs are in the report.)
    reference = unbounded["knee"]
    verdicts = {str(b): verdict(reference, g["over"]) for b, g in bounded.items()}
    for b, g in bounded.items():
        verdicts[str(b)]["refused_at_knee"] = sum(r["refused"] for r in g["knee"])
    report = {"transport": args.transport, "admission": args.admission,
              "refused_pause_ms": args.refused_pause_ms, "repetitions": args.repetitions,
              "curve": curve, "knee": knee, "unbounded": unbounded,
              "bounded": {str(b): g for b, g in bounded.items()},
              "verdict_unbounded": verdict(reference, unbounded["over"]),
              "verdict_bounded": verdicts}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({"unbounded": report["verdict_unbounded"], "bounded": verdicts}))
    return 0 if any(v["pass"] for v in verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
