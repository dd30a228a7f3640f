"""Views with `served_json: true`: values stored with their served section, read back
from Redis (L1 off) by a real server, are the source data, over HTTP and gRPC."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from service.client import LivefeatClient
from service.core.codec import SECTION
from service.core.registry import load_registry
from service.settings import DEMO_REGISTRY
from tests.conftest import LIVEFEAT, livefeat_env
from tests.faults.oracle import Oracle
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process


def test_values_with_a_served_section_are_served_as_stored(
    tmp_path: Path, redis_server: RedisServer, start_server
) -> None:
    doc = yaml.safe_load(DEMO_REGISTRY.read_text())
    for view in doc["views"].values():
        view["served_json"] = True
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(doc, sort_keys=False))
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [LIVEFEAT, "demo", "--small", "--registry", str(registry), "--data-dir", str(data_dir),
         "--redis-url", redis_server.url],
        capture_output=True, text=True, timeout=300, env=livefeat_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    plans = load_registry(registry).views
    stored = redis_server.client().get(plans["room_stats"].key(1))
    assert stored is not None and stored.endswith(SECTION)  # written with the section

    server = start_server(data_dir, "--registry", str(registry), "--redis-url",
                          redis_server.url, env={"LIVEFEAT_L1_MAX_ROWS": "0"})  # fmt: skip
    oracle = Oracle(data_dir / "demo-parquet")
    rng = random.Random(11)
    problems: list[str] = []
    with LivefeatClient(server.grpc_target) as client:
        for _ in range(20):
            user, rooms = oracle.request(rng, 50)
            body = httpx.post(f"{server.url}/v1/bundle", timeout=10,
                              json={"bundle": "live_ranker", "user_id": user, "room_ids": rooms})  # fmt: skip
            assert body.status_code == 200, body.text
            problems += oracle.check_http_bundle(user, rooms, body.json())
            problems += oracle.check_grpc_bundle(user, rooms, client.get_bundle(user, rooms))
    assert not problems, problems[:10]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'livefeat_tier_keys_total{result="hit",tier="redis"}' in metrics
