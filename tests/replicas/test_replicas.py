"""Replicas sharing one real redis-server: change notifications and newest-event-wins.

Each replica is a real `livefeat serve` process with its own data dir (a copy
of the small demo) and the same --redis-url.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer
from tests.replicas.support import replicas_of
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

VIEW = "room_stats"
PROPAGATION_BOUND_S = 3.0  # generous; the measured figure is in docs/benchmarks.md


def viewer_count(server: LiveServer, room: int) -> int:
    r = httpx.post(f"{server.url}/v1/features", json={"view": VIEW, "ids": [room]}, timeout=5)
    r.raise_for_status()
    return int(r.json()["rows"][0]["features"][f"{VIEW}.viewer_count"])


def push(server: LiveServer, room: int, count: int, event_time_ms: int) -> dict:
    row = {"id": room, "event_time_ms": event_time_ms, "values": {"viewer_count": count}}
    r = httpx.post(f"{server.url}/v1/push", json={"view": VIEW, "rows": [row]}, timeout=10)
    r.raise_for_status()
    return r.json()


def wait_for(check: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s: {check.__doc__ or ''}")
        time.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(
    demo_template: Path, tmp_path_factory: pytest.TempPathFactory, shared_redis: RedisServer
) -> Iterator[list[LiveServer]]:
    """Three replicas for the module; the tests use rooms of their own."""
    with replicas_of(demo_template, tmp_path_factory.mktemp("replicas"), shared_redis.url) as out:
        yield out


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_push_to_one_replica_is_served_by_the_others(replicas: list[LiveServer]) -> None:
    a, b, c = replicas
    for round_ in range(1, 6):
        viewer_count(b, 7), viewer_count(c, 7)  # both hold the old value in L1
        assert push(a, 7, 10_000 + round_, now_ms() + round_)["written"] == 1
        for other in (b, c):
            want = 10_000 + round_
            wait_for(lambda o=other, w=want: viewer_count(o, 7) == w, PROPAGATION_BOUND_S)


def test_a_read_on_any_replica_after_an_acknowledged_push_sees_it(
    replicas: list[LiveServer],
) -> None:
    """No waiting: the push is acknowledged only once every replica has applied it."""
    base = now_ms()
    rng = random.Random(11)
    for round_ in range(1, 61):
        writer, *readers = rng.sample(replicas, 3)
        for reader in readers:
            viewer_count(reader, 8)  # the old value sits in the reader's L1
        assert push(writer, 8, 20_000 + round_, base + round_)["written"] == 1
        assert [viewer_count(r, 8) for r in readers] == [20_000 + round_] * 2


def test_racing_writers_on_every_replica_leave_the_newest(
    replicas: list[LiveServer], shared_redis: RedisServer
) -> None:
    base = now_ms()
    times = list(range(1, 121))
    random.Random(3).shuffle(times)
    errors: list[BaseException] = []

    def writer(server: LiveServer, chunk: list[int]) -> None:
        try:
            for t in chunk:
                push(server, 42, t, base + t)  # the value is its own event-time offset
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(s, times[i::3])) for i, s in enumerate(replicas)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for server in replicas:
        wait_for(lambda s=server: viewer_count(s, 42) == 120, PROPAGATION_BOUND_S)
        entity = httpx.get(f"{server.url}/debug/entity/{VIEW}/42", timeout=5).json()
        assert entity["tiers"]["redis"]["event_time_ms"] == base + 120
        # Each replica's own RocksDB never holds an older value than it wrote or was told of;
        # the ones that saw the newest push (or its notification) hold exactly it.
        assert entity["tiers"]["rocksdb"]["event_time_ms"] <= base + 120


def test_a_replica_whose_subscription_was_cut_serves_nothing_older(
    replicas: list[LiveServer], shared_redis: RedisServer
) -> None:
    a, b, _ = replicas
    admin = shared_redis.client()
    name = f"livefeat-sub-{b.pid}"

    def subscribed() -> bool:
        return any(c.get("name") == name for c in admin.client_list())

    wait_for(subscribed, 10)
    for round_ in range(1, 4):
        viewer_count(b, 9)  # cached in B's L1
        assert _kill_by_name(admin, name) >= 1
        push(a, 9, 500 + round_, now_ms() + round_)  # most likely lost for B
        wait_for(subscribed, 10)
        # After it reconnects B has dropped its L1: it serves the new value at once.
        assert viewer_count(b, 9) == 500 + round_


def _kill_by_name(admin, name: str) -> int:
    killed = 0
    for c in admin.client_list():
        if c.get("name") == name:
            killed += admin.client_kill_filter(_id=c["id"])
    return killed
