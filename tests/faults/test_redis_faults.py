"""Redis faults under live, checked reads and writes: a fault proxy, SIGSTOP, SIGKILL, OOM.

Each scenario records its figures (build/faults/results.json, docs/reliability.md) and
asserts what livefeat guarantees: 0 wrong values, 0 acknowledged writes lost, no half
batch, every request answered with a defined outcome, recovery within 30 s.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
import redis

from tests.faults.harness import FULL, FaultServer, Oracle, WriteLog, run_fault
from tests.support.fault_proxy import FaultProxy
from tests.support.redis_proc import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.process]

HOLD_S = 10.0 if FULL else 1.0
PROXY_FAULTS: list[tuple[str, dict[str, float]]] = [
    ("pass", {}),
    ("latency", {"delay_ms": 30}),  # under the 0.1 s socket timeout: slower, still Redis
    ("latency", {"delay_ms": 150}),  # over it: reads fail over to RocksDB
    ("jitter", {"delay_ms": 0, "jitter_ms": 200}),
    ("blackhole", {}),
    ("drop", {}),
    ("reset", {}),
]
SHORT_PROXY_FAULTS = {"blackhole", "reset"}
"""The short form (make test) runs these modes only."""


def test_fault_proxy_modes(
    fault_server: Callable[..., FaultServer],
    redis_proxy: FaultProxy,
    oracle: Oracle,
) -> None:
    """Scenario 1: livefeat -> proxy -> Redis; each fault for HOLD_S, then pass-through."""
    server = fault_server("--redis-url", f"redis://127.0.0.1:{redis_proxy.port}/0")
    writes = WriteLog()
    failures = []
    for mode, knobs in PROXY_FAULTS:
        label = mode + ("_" + "_".join(f"{k}{int(v)}" for k, v in knobs.items()) if knobs else "")
        if not FULL and label not in SHORT_PROXY_FAULTS:
            continue
        try:
            run_fault(
                f"proxy_{label}",
                server,
                oracle,
                lambda m=mode, k=knobs: redis_proxy.set(m, **k),
                lambda: redis_proxy.set("pass"),
                HOLD_S,
                writes=writes,
                extra=lambda: {"proxy": dict(redis_proxy.counts)},
            )
        except AssertionError as exc:  # run every mode, then fail naming each
            failures.append(f"{label}: {exc}")
    assert not failures, "\n".join(failures)


def test_redis_sigstop(
    fault_server: Callable[..., FaultServer], redis_server: RedisServer, oracle: Oracle
) -> None:
    """Scenario 2: Redis frozen (SIGSTOP) 2 s (full: 30 s), then SIGCONT."""
    server = fault_server("--redis-url", redis_server.url)
    run_fault(
        "redis_sigstop",
        server,
        oracle,
        lambda: os.kill(redis_server.pid, signal.SIGSTOP),
        lambda: os.kill(redis_server.pid, signal.SIGCONT),
        30.0 if FULL else 2.0,
    )


def test_redis_sigkill_restart_empty(
    fault_server: Callable[..., FaultServer], redis_server: RedisServer, oracle: Oracle
) -> None:
    """Scenario 3: Redis SIGKILLed, down HOLD_S, restarted empty on the same port."""
    server = fault_server("--redis-url", redis_server.url)
    port = redis_server.port
    figures = run_fault(
        "redis_sigkill_restart",
        server,
        oracle,
        redis_server.kill,
        redis_server.restart,
        HOLD_S,
    )
    assert redis_server.port == port
    assert figures["recovery_s"] is not None


def _fill_to_oom(client: redis.Redis) -> int:
    """maxmemory a little above what is used, noeviction, then junk until Redis refuses."""
    client.config_set("maxmemory-policy", "noeviction")
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + (1 << 20))
    blob = b"x" * 4096
    for i in range(10_000):
        try:
            client.set(f"junk:{i}", blob)
        except redis.exceptions.OutOfMemoryError:
            return i
    raise AssertionError("Redis never refused a write at maxmemory")


def test_redis_maxmemory_noeviction(
    fault_server: Callable[..., FaultServer], redis_server: RedisServer, oracle: Oracle
) -> None:
    """Scenario 4: Redis full (noeviction): pushes succeed or fail cleanly; reads serve."""
    server = fault_server("--redis-url", redis_server.url)
    admin = redis_server.client()
    junk: dict[str, int] = {}

    def start() -> None:
        junk["keys"] = _fill_to_oom(admin)

    def end() -> None:
        admin.config_set("maxmemory", 0)

    run_fault(
        "redis_maxmemory_noeviction",
        server,
        oracle,
        start,
        end,
        HOLD_S * 2,
        extra=lambda: {"junk_keys_to_oom": junk.get("keys")},
    )


def test_l1_on_redis_jitter(
    fault_server: Callable[..., FaultServer], redis_proxy: FaultProxy, oracle: Oracle
) -> None:
    """Scenario 1 again with the default L1 (500,000 rows, 5 s): Redis answers late and
    out of step (jitter 0-200 ms) while the writer pushes and its rooms are read at once;
    an old value put back in L1 by a read racing a push shows as a stale read."""
    server = fault_server(
        "--redis-url",
        f"redis://127.0.0.1:{redis_proxy.port}/0",
        env={"LIVEFEAT_L1_MAX_ROWS": "500000"},
    )
    run_fault(
        "l1_on_proxy_jitter",
        server,
        oracle,
        lambda: redis_proxy.set("jitter", delay_ms=0, jitter_ms=200),
        lambda: redis_proxy.set("pass"),
        HOLD_S * 2 if FULL else HOLD_S,
        extra=lambda: {"proxy": dict(redis_proxy.counts), "l1_max_rows": 500_000},
    )
