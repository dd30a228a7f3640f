"""HTTP reads have a deadline: a stalled Redis costs a request its budget, not the socket's.

A real `livefeat serve` over a real redis-server that the test freezes with
SIGSTOP (and thaws with SIGCONT before stopping it). The Redis socket timeout
is set to 5 s, so a request that waited for the socket would take 5 s; with
the deadline it answers within its budget, the rows Redis held up served as
defaults marked UNAVAILABLE.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process

SOCKET_TIMEOUT_S = 5.0
DEFAULT_BUDGET_S = 0.3


@pytest.fixture
def frozen_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, thawed again before it is stopped."""
    redis = RedisServer(tmp_path / "redis")
    try:
        yield redis
    finally:
        if redis.alive:
            os.kill(redis.pid, signal.SIGCONT)
        redis.stop()


def bundle(url: str, rooms: list[int], headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"bundle": "live_ranker", "user_id": 7, "room_ids": rooms}
    return httpx.post(f"{url}/v1/bundle", json=body, headers=headers, timeout=30)


def test_reads_answer_within_the_budget_while_redis_is_frozen(
    fresh_data_dir: Path, start_server, frozen_redis: RedisServer
) -> None:
    server = start_server(
        fresh_data_dir, "--redis-url", frozen_redis.url,
        env={"LIVEFEAT_REDIS_SOCKET_TIMEOUT_S": str(SOCKET_TIMEOUT_S),
             "LIVEFEAT_HTTP_TIMEOUT_S": str(DEFAULT_BUDGET_S)},
    )  # fmt: skip
    warm = bundle(server.url, [1, 2])  # Redis answers: values from RocksDB, found
    assert warm.status_code == 200, warm.text
    assert [r["status"]["room_stats"] for r in warm.json()["rooms"]] == ["FOUND", "FOUND"]

    os.kill(frozen_redis.pid, signal.SIGSTOP)
    cases = [
        ([11, 12, 13], None, DEFAULT_BUDGET_S),
        ([21, 22, 23], {"X-Livefeat-Timeout-Ms": "50"}, 0.05),
    ]
    for rooms, headers, budget_s in cases:
        start = time.monotonic()
        r = bundle(server.url, rooms, headers)
        elapsed = time.monotonic() - start
        assert r.status_code == 200, r.text
        # Far below the socket timeout: the budget, plus process and HTTP overhead.
        assert elapsed < budget_s + 1.0 < SOCKET_TIMEOUT_S, (elapsed, headers)
        rows = r.json()["rooms"]
        assert [row["id"] for row in rows] == rooms
        assert {row["status"]["room_stats"] for row in rows} == {"UNAVAILABLE"}, rows
        assert all(row["features"]["room_stats.viewer_count"] == 0 for row in rows)
    # Rows read before the freeze are still in L1: served as found.
    again = bundle(server.url, [1, 2], {"X-Livefeat-Timeout-Ms": "50"})
    assert [r["status"]["room_stats"] for r in again.json()["rooms"]] == ["FOUND", "FOUND"]
