"""The service with Redis configured, against real redis-servers it does not share."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from service.core.registry import load_registry
from service.settings import DEMO_REGISTRY
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

BUNDLE = {"bundle": "live_ranker", "user_id": 7, "room_ids": [1, 2, 3, 4, 5]}


def bundle(url: str) -> tuple[int, dict]:
    r = httpx.post(f"{url}/v1/bundle", json=BUNDLE, timeout=10)
    return r.status_code, r.json()


def features_of(body: dict) -> list[dict]:
    return [body["user"]["features"]] + [r["features"] for r in body["rooms"]]


def test_redis_down_at_start_serves_from_rocksdb_then_reconnects(
    fresh_data_dir: Path, tmp_path: Path, start_server
) -> None:
    probe = RedisServer(tmp_path / "probe")
    port, url = probe.port, probe.url
    probe.stop()  # nothing listens on `port` now
    server = start_server(fresh_data_dir, "--redis-url", url)  # ready: RocksDB answers
    code, body = bundle(server.url)
    assert code == 200
    assert body["rooms"][0]["status"]["room_stats"] == "FOUND"
    redis = RedisServer(tmp_path / "late", port=port)
    try:
        # It reconnects by itself: soon reads go through Redis and fill it.
        deadline = time.monotonic() + 15
        key = load_registry(DEMO_REGISTRY).views["room_stats"].key(1)
        while not redis.client().exists(key):
            assert time.monotonic() < deadline, "the service never wrote to Redis"
            httpx.post(f"{server.url}/v1/features", json={"view": "room_stats", "ids": [1]})
            time.sleep(0.2)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'livefeat_tier_keys_total{result="hit",tier="redis"}' in metrics or (
            'livefeat_tier_keys_total{result="miss",tier="redis"}' in metrics
        )
    finally:
        redis.stop()


def test_redis_killed_mid_run_no_5xx_no_wrong_values(
    fresh_data_dir: Path, redis_server: RedisServer, start_server
) -> None:
    server = start_server(fresh_data_dir, "--redis-url", redis_server.url)
    code, before = bundle(server.url)
    assert code == 200
    redis_server.kill()
    for _ in range(30):  # through the failures, the open circuit and its probes
        code, body = bundle(server.url)
        assert code == 200
        assert features_of(body) == features_of(before)
        assert body["rooms"][0]["status"]["room_stats"] in ("FOUND", "STALE")
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200  # RocksDB can still answer
