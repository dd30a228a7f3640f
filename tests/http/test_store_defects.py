"""Defects found by using livefeat as a new user would, each against a real server.

- A view whose storage_ttl_s is over 49.7 days broke every Redis write (the TTL went
  to Redis as a u32 of ms): pushes answered 500 after RocksDB was written.
- A stored value the codec cannot read (cut short, or text that is not UTF-8) failed
  the whole request instead of that row.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from rocksdict import Options, Rdict

from service.core.registry import load_registry
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process
YEAR_S = 365 * 86_400
REGISTRY = f"""
entities:
  user: {{key: user_id}}
  room: {{key: room_id}}
views:
  profile:
    entity: user
    max_age_s: 86400
    storage_ttl_s: {YEAR_S}
    features:
      country: {{type: string, default: ""}}
      spend: {{type: double}}
  live:
    entity: room
    max_age_s: 30
    storage_ttl_s: 3600
    features:
      title: {{type: string, default: "?"}}
      viewers: {{type: int64}}
bundles:
  b:
    user: [profile]
    room: [live]
"""
NOW_MS = 1_764_000_000_000


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    return path


def push(url: str, view: str, rows: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/v1/push", json={"view": view, "rows": rows}, timeout=10)


def test_a_view_kept_a_year_is_written_to_redis_with_its_ttl(
    registry: Path, redis_server: RedisServer, tmp_path: Path, start_server
) -> None:
    server = start_server(tmp_path / "data", "--registry", str(registry),
                          "--redis-url", redis_server.url)  # fmt: skip
    row = {"id": 7, "event_time_ms": NOW_MS, "values": {"country": "日本", "spend": 1.5}}
    answer = push(server.url, "profile", [row])
    assert answer.status_code == 200, answer.text
    assert answer.json()["written"] == 1
    key = load_registry(registry).views["profile"].key(7)
    ttl_ms = redis_server.client().pttl(key)
    assert YEAR_S * 1000 - 60_000 < ttl_ms <= YEAR_S * 1000
    got = httpx.post(f"{server.url}/v1/features", json={"view": "profile", "ids": [7]}).json()
    assert got["rows"][0]["features"] == {"profile.country": "日本", "profile.spend": 1.5}


@pytest.mark.parametrize(
    "damage",
    [lambda v: v[:5], lambda v: v[:-2] + b"\xff\xfe", lambda v: v + b"extra", lambda v: b""],
    ids=["shorter-than-the-header", "broken-utf8-tail", "trailing-bytes", "empty"],
)
def test_a_value_that_cannot_be_decoded_is_served_as_missing_not_a_500(
    damage, registry: Path, tmp_path: Path, start_server
) -> None:
    data = tmp_path / "data"
    server = start_server(data, "--registry", str(registry))
    rows = [{"id": i, "event_time_ms": NOW_MS, "values": {"title": f"room {i} ✓", "viewers": i}}
            for i in (1, 2)]  # fmt: skip
    assert push(server.url, "live", rows).status_code == 200
    server.stop()
    key = load_registry(registry).views["live"].key(2)
    db = Rdict(str(data / "rocksdb"), Options(raw_mode=True))
    db[key] = damage(db[key])
    db.close()
    server = start_server(data, "--registry", str(registry))
    answer = httpx.post(f"{server.url}/v1/bundle", json={"bundle": "b", "user_id": 1,
                                                          "room_ids": [1, 2]})  # fmt: skip
    assert answer.status_code == 200, answer.text
    rooms = answer.json()["rooms"]
    assert rooms[0]["features"] == {"live.title": "room 1 ✓", "live.viewers": 1}
    assert rooms[1]["status"] == {"live": "DEFAULTED"}
    assert rooms[1]["features"] == {"live.title": "?", "live.viewers": 0}
    # A partial push over the damaged value builds on the defaults instead of failing.
    row = {"id": 2, "event_time_ms": NOW_MS + 1, "values": {"viewers": 5}}
    assert push(server.url, "live", [row]).status_code == 200
    got = httpx.post(f"{server.url}/v1/features", json={"view": "live", "ids": [2]}).json()
    assert got["rows"][0]["features"] == {"live.title": "?", "live.viewers": 5}
