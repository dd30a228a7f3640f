"""A read that starts after a push was acknowledged, on any worker, sees it.

Pushes go to whichever worker the kernel picks (a new connection each), and each
is followed at once by reads over new connections until every worker has
answered; every read must return the pushed value. Embedded mode (worker 0 holds
RocksDB, the other reads it as a secondary) and Redis mode (each worker a replica).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer
from tests.support.redis_proc import RedisServer
from tests.workers.support import children, get, post, reach_every_worker, worker_of, worker_pid

pytestmark = pytest.mark.process
VIEW = "room_stats"
ROUNDS = 40


def push(server: LiveServer, room: int, count: int, event_time_ms: int) -> int:
    """Push viewer_count; the worker that took it."""
    row = {"id": room, "event_time_ms": event_time_ms, "values": {"viewer_count": count}}
    r = post(server, "/v1/push", {"view": VIEW, "rows": [row]})
    assert r.status_code == 200, r.text
    assert r.json()["written"] == 1
    return worker_of(r)


def read_everywhere(server: LiveServer, room: int, workers: int) -> dict[int, list[int]]:
    """viewer_count read over new connections until each worker answered (bounded)."""
    got: dict[int, list[int]] = {}
    for _ in range(200):
        r = post(server, "/v1/features", {"view": VIEW, "ids": [room]})
        assert r.status_code == 200, r.text
        value = int(r.json()["rows"][0]["features"][f"{VIEW}.viewer_count"])
        got.setdefault(worker_of(r), []).append(value)
        if len(got) == workers:
            break
    return got


def dead(pid: int, timeout_s: float = 5.0) -> bool:
    """Whether `pid` is a zombie or gone (within `timeout_s`: SIGKILL lands asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat[stat.rindex(")") + 2] in "ZX":
            return True
        time.sleep(0.01)
    return False


def check_read_after_push(server: LiveServer, room: int) -> None:
    assert reach_every_worker(server, 2) == {0, 1}
    base = time.time_ns() // 1_000_000
    pushed_by: set[int] = set()
    read_everywhere(server, room, 2)  # the old value sits in both workers' L1
    for round_ in range(1, ROUNDS + 1):
        want = 30_000 + round_
        pushed_by.add(push(server, room, want, base + round_))
        got = read_everywhere(server, room, 2)
        assert set(got) == {0, 1}
        assert got == {w: [want] * len(v) for w, v in got.items()}, f"round {round_}"
    assert pushed_by == {0, 1}  # pushes taken by the primary and by the secondary


def test_embedded_read_after_push_on_every_worker(
    start_server: Callable[..., LiveServer], fresh_data_dir: Path
) -> None:
    server = start_server(fresh_data_dir, "--workers", "2")
    check_read_after_push(server, 11)


def test_redis_read_after_push_on_every_worker(
    start_server: Callable[..., LiveServer], fresh_data_dir: Path, redis_server: RedisServer
) -> None:
    server = start_server(fresh_data_dir, "--workers", "2", "--redis-url", redis_server.url)
    check_read_after_push(server, 12)


def test_a_worker_that_does_not_apply_a_push_is_killed_before_the_push_is_acknowledged(
    start_server: Callable[..., LiveServer], fresh_data_dir: Path
) -> None:
    """Worker 1 stopped (SIGSTOP) cannot forget the old value: worker 0 kills it."""
    server = start_server(fresh_data_dir, "--workers", "2")
    assert reach_every_worker(server, 2) == {0, 1}
    read_everywhere(server, 13, 2)  # the old value in worker 1's L1
    stopped = worker_pid(server, 1)
    os.kill(stopped, signal.SIGSTOP)
    row = {"id": 13, "event_time_ms": time.time_ns() // 1_000_000, "values": {"viewer_count": 7}}
    taken_by = None
    while taken_by is None:  # a connection the stopped worker accepted fails when it dies
        try:
            r = httpx.post(f"{server.url}/v1/push", json={"view": VIEW, "rows": [row]}, timeout=3)
        except httpx.TransportError:
            continue
        assert r.status_code == 200, r.text
        taken_by = worker_of(r)
    assert taken_by == 0
    assert dead(stopped)  # SIGKILLed before the answer (gone, or a zombie being reaped)
    # Its other threads may still be exiting (a connection the kernel queued to its
    # socket meanwhile is reset): go on once the supervisor has reaped it.
    deadline = time.monotonic() + 30
    while stopped in children(server.pid):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    metrics = get(server, "/metrics").text
    assert re.search(r"^livefeat_worker_kills_total 1\.0$", metrics, re.M), metrics
    assert reach_every_worker(server, 2) == {0, 1}  # started again
    got = read_everywhere(server, 13, 2)
    assert got == {w: [7] * len(v) for w, v in got.items()}
