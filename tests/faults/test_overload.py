"""Scenario 6: 4x the knee of concurrency (30 s; the short form 5 s), under checked reads.

The knee is measured first on the same server: closed-loop gRPC GetBundle runs
(loadtest/clients.py, in a client process of their own) at rising concurrency; the
knee is the smallest concurrency whose throughput reaches 90% of the best measured
(beyond it more callers add latency, not throughput). Then 4x that concurrency for
the fault's duration, with a 1 s deadline per call, beside the suite's checked readers
and writer. Goodput (calls answered OK within their deadline per second) and p99 are
recorded against the knee's. An overload bound answering RESOURCE_EXHAUSTED (gRPC) or
429 (HTTP) at once counts as "refused", not as an error.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.clients import RunSpec, run_client
from loadtest.prepare import encode_grpc
from tests.faults.harness import FULL, FaultServer, Oracle, run_fault
from tests.support.redis_proc import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.process]

STEPS = (1, 2, 4, 8, 16) if FULL else (1, 4)
STEP_S = 3.0 if FULL else 1.0
OVERLOAD_S = 30.0 if FULL else 5.0
DEFINED = {"OK", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}


def _run(server: FaultServer, requests: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    spec = RunSpec("127.0.0.1", server.grpc_port, str(requests), concurrency, 0.3, seconds,
                   (("server", server.pid),), drain_timeout_s=5.0, grpc_deadline_s=1.0)  # fmt: skip
    return run_client(spec, "grpc")


def _figures(run: dict[str, Any]) -> dict[str, Any]:
    ok = run["status_counts"].get("OK", 0)
    lat = run["latency_ms"] or {}
    return {
        "requests": run["requests"],
        "throughput_rps": round(run["throughput_rps"], 1),
        "goodput_rps": round(ok / run["window_s"], 1),
        "refused": run["status_counts"].get("RESOURCE_EXHAUSTED", 0),
        "status_counts": run["status_counts"],
        "connection_errors": run["connection_errors"],
        "timeouts": run["timeouts"],
        "p50_ms": round(lat.get("p50", 0), 2),
        "p99_ms": round(lat.get("p99", 0), 2),
        "server_cpu_pct": round(run["server_cpu_pct"], 1),
    }


def test_overload_4x_knee(
    fault_server: Callable[..., FaultServer],
    redis_server: RedisServer,
    oracle: Oracle,
    tmp_path: Path,
) -> None:
    server = fault_server("--redis-url", redis_server.url)
    rng = random.Random(5)
    requests = tmp_path / "requests.pickle"
    requests.write_bytes(pickle.dumps([encode_grpc(*oracle.request(rng, 100)) for _ in range(500)]))

    steps = {c: _figures(_run(server, requests, c, STEP_S)) for c in STEPS}
    best = max(s["goodput_rps"] for s in steps.values())
    knee = min(c for c, s in steps.items() if s["goodput_rps"] >= 0.9 * best)
    overload: dict[str, Any] = {}

    def start() -> None:
        overload.update(_figures(_run(server, requests, 4 * knee, OVERLOAD_S)))

    run_fault(
        "overload_4x_knee",
        server,
        oracle,
        start,
        lambda: None,
        0.0,
        extra=lambda: {
            "knee_concurrency": knee,
            "knee": steps[knee],
            "steps": {str(c): s for c, s in steps.items()},
            "overload_concurrency": 4 * knee,
            "overload": overload,
            "goodput_vs_knee": round(overload["goodput_rps"] / steps[knee]["goodput_rps"], 2),
            "p99_vs_knee": round(overload["p99_ms"] / steps[knee]["p99_ms"], 2),
        },
    )
    assert set(overload["status_counts"]) <= DEFINED, overload["status_counts"]
    assert not overload["connection_errors"], overload["connection_errors"]
