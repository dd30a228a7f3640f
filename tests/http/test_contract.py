"""The HTTP contract of docs/design.md, against a real `livefeat serve` over the small demo data.

Tests that write use ids outside the demo data (rooms 500000 and up), each test
its own, so they share the session's server without seeing each other's rows.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.settings import DEMO_REGISTRY

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

REGISTRY: dict[str, Any] = yaml.safe_load(DEMO_REGISTRY.read_text())
VIEWS: dict[str, Any] = REGISTRY["views"]
BUNDLE = REGISTRY["bundles"]["live_ranker"]
ROOM_VIEW = "room_stats"
PAIR_VIEW = "user_room_affinity"
USER_VIEW = "user_profile"
ROOM_MAX_AGE_MS = int(VIEWS[ROOM_VIEW]["max_age_s"] * 1000)
TYPE_DEFAULTS = {"int64": 0, "double": 0.0, "float": 0.0, "string": "", "bool": False}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def feature_keys(view: str) -> list[str]:
    """`view.feature` for every feature of `view`, in registry order."""
    return [f"{view}.{name}" for name in VIEWS[view]["features"]]


def default_features(view: str) -> dict[str, Any]:
    """The features a missing row of `view` is served with, per the registry."""
    out = {}
    for name, spec in VIEWS[view]["features"].items():
        if "default" in spec:
            out[f"{view}.{name}"] = spec["default"]
        elif spec["type"] == "float_vector":
            out[f"{view}.{name}"] = [0.0] * spec["dim"]
        else:
            out[f"{view}.{name}"] = TYPE_DEFAULTS[spec["type"]]
    return out


def prefixed(view: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{view}.{k}": v for k, v in values.items()}


def bundle(client: httpx.Client, user_id: int, room_ids: list[int]) -> dict[str, Any]:
    r = client.post(
        "/v1/bundle", json={"bundle": "live_ranker", "user_id": user_id, "room_ids": room_ids}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def features(client: httpx.Client, view: str, ids: list[Any]) -> list[dict[str, Any]]:
    r = client.post("/v1/features", json={"view": view, "ids": ids})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"view", "rows"}
    assert body["view"] == view
    return body["rows"]


def push(client: httpx.Client, view: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    r = client.post("/v1/push", json={"view": view, "rows": rows})
    assert r.status_code == 200, r.text
    return r.json()


def push_one(
    client: httpx.Client, view: str, entity_id: Any, event_time_ms: int, **values: Any
) -> dict[str, Any]:
    """Push one row; returns the answer."""
    return push(client, view, [{"id": entity_id, "event_time_ms": event_time_ms, "values": values}])


def debug(client: httpx.Client, view: str, entity_id: str | int) -> dict[str, Any]:
    r = client.get(f"/debug/entity/{view}/{entity_id}")
    assert r.status_code == 200, r.text
    return r.json()


def stored(client: httpx.Client, view: str, entity_id: str | int) -> dict[str, Any] | None:
    """The row RocksDB holds, as /debug/entity reports it, or None."""
    tier = debug(client, view, entity_id)["tiers"]["rocksdb"]
    return tier if tier["present"] else None


def full_room_values(seed: int) -> dict[str, Any]:
    """A value for every room_stats feature (unlike any demo value)."""
    out: dict[str, Any] = {}
    for i, (name, spec) in enumerate(VIEWS[ROOM_VIEW]["features"].items()):
        kind = spec["type"]
        if kind == "int64":
            out[name] = seed * 100 + i
        elif kind in ("double", "float"):
            out[name] = seed + i / 4
        elif kind == "string":
            out[name] = f"cat-{seed}"
        elif kind == "bool":
            out[name] = True
        else:
            out[name] = [float(seed % 7) / 2] * spec["dim"]
    return out


def log_events(text: str) -> list[str]:
    """The `event` of every JSON log line of a server's stderr."""
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(str(record.get("event")))
    return out


# --- /v1/bundle --------------------------------------------------------------------------------


def check_entity(entity: dict[str, Any], entity_id: Any, views: list[str]) -> None:
    """The shape of one entity: id, `view.feature` keys of exactly `views`, one status each."""
    assert set(entity) == {"id", "features", "status"}
    assert entity["id"] == entity_id
    expected = [k for v in views for k in feature_keys(v)]
    assert list(entity["features"]) == expected
    assert set(entity["status"]) == set(views)


def test_bundle_shape_values_and_statuses(client: httpx.Client) -> None:
    user_id, rooms = 7, [1, 2, 3]
    body = bundle(client, user_id, rooms)

    assert set(body) == {"bundle", "user", "rooms", "pairs"}
    assert body["bundle"] == "live_ranker"

    check_entity(body["user"], user_id, BUNDLE["user"])
    assert body["user"]["status"] == {USER_VIEW: "FOUND"}
    user_row = stored(client, USER_VIEW, user_id)
    assert user_row is not None
    assert body["user"]["features"] == prefixed(USER_VIEW, user_row["values"])

    assert [r["id"] for r in body["rooms"]] == rooms
    room_rows = features(client, ROOM_VIEW, rooms)
    for room, served in zip(body["rooms"], room_rows, strict=True):
        check_entity(room, room["id"], BUNDLE["room"])
        assert room["status"] == {ROOM_VIEW: "FOUND"}
        row = stored(client, ROOM_VIEW, room["id"])
        assert row is not None
        assert room["features"] == prefixed(ROOM_VIEW, row["values"])
        assert room["features"] == served["features"]
        assert served["status"] == room["status"]

    assert [p["id"] for p in body["pairs"]] == [[user_id, r] for r in rooms]
    for pair in body["pairs"]:
        check_entity(pair, pair["id"], BUNDLE["user_room"])
        row = stored(client, PAIR_VIEW, "{}:{}".format(*pair["id"]))
        if row is None:
            assert pair["status"] == {PAIR_VIEW: "DEFAULTED"}
            assert pair["features"] == default_features(PAIR_VIEW)
        else:
            assert pair["status"] == {PAIR_VIEW: "FOUND"}
            assert pair["features"] == prefixed(PAIR_VIEW, row["values"])
    # The demo data has pairs for user 7; at least one of these is stored.
    assert any(p["status"][PAIR_VIEW] == "FOUND" for p in body["pairs"]), body["pairs"]


def test_bundle_keeps_order_and_duplicates(client: httpx.Client) -> None:
    rooms = [3, 1, 3, 2, 3]
    body = bundle(client, 11, rooms)
    assert [r["id"] for r in body["rooms"]] == rooms
    assert [p["id"] for p in body["pairs"]] == [[11, r] for r in rooms]
    by_id = {r: features(client, ROOM_VIEW, [r])[0]["features"] for r in set(rooms)}
    for room in body["rooms"]:
        assert room["features"] == by_id[room["id"]]
    assert body["rooms"][0] == body["rooms"][2] == body["rooms"][4]


def test_bundle_missing_room_and_pair_get_registry_defaults(client: httpx.Client) -> None:
    missing = 999_999
    assert stored(client, ROOM_VIEW, missing) is None
    body = bundle(client, 7, [1, missing])
    room = body["rooms"][1]
    assert room["id"] == missing
    assert room["status"] == {ROOM_VIEW: "DEFAULTED"}
    assert room["features"] == default_features(ROOM_VIEW)
    pair = body["pairs"][1]
    assert pair["id"] == [7, missing]
    assert pair["status"] == {PAIR_VIEW: "DEFAULTED"}
    # last_visit_age_s defaults to -1 in the registry: the defaults are the registry's.
    assert pair["features"] == default_features(PAIR_VIEW)
    assert pair["features"][f"{PAIR_VIEW}.last_visit_age_s"] == -1
    assert body["rooms"][0]["status"] == {ROOM_VIEW: "FOUND"}


def test_bundle_unknown_user_is_defaulted(client: httpx.Client) -> None:
    body = bundle(client, 888_888, [1])
    assert body["user"]["status"] == {USER_VIEW: "DEFAULTED"}
    assert body["user"]["features"] == default_features(USER_VIEW)
    assert body["rooms"][0]["status"] == {ROOM_VIEW: "FOUND"}


# --- STALE, and a push invalidating L1 -------------------------------------------------------


def test_stale_then_fresh_push(client: httpx.Client) -> None:
    room = 500_000
    # Read first: L1 now caches "not stored".
    assert bundle(client, 7, [room])["rooms"][0]["status"] == {ROOM_VIEW: "DEFAULTED"}

    old = now_ms() - 2 * ROOM_MAX_AGE_MS
    answer = push_one(client, ROOM_VIEW, room, old, viewer_count=41, category="old")
    assert answer == {"view": ROOM_VIEW, "written": 1, "ignored": 0}
    served = bundle(client, 7, [room])["rooms"][0]  # now cached
    assert served["status"] == {ROOM_VIEW: "STALE"}
    assert served["features"][f"{ROOM_VIEW}.viewer_count"] == 41
    assert served["features"][f"{ROOM_VIEW}.category"] == "old"
    assert features(client, ROOM_VIEW, [room])[0]["status"] == {ROOM_VIEW: "STALE"}

    answer = push_one(client, ROOM_VIEW, room, now_ms(), viewer_count=42, category="new")
    assert answer["written"] == 1
    served = bundle(client, 7, [room])["rooms"][0]
    assert served["status"] == {ROOM_VIEW: "FOUND"}
    assert served["features"][f"{ROOM_VIEW}.viewer_count"] == 42
    assert served["features"][f"{ROOM_VIEW}.category"] == "new"


# --- /v1/push ----------------------------------------------------------------------------------


def viewer_count(client: httpx.Client, room: int) -> Any:
    return features(client, ROOM_VIEW, [room])[0]["features"][f"{ROOM_VIEW}.viewer_count"]


def test_push_answers_counts_and_newest_event_wins(client: httpx.Client) -> None:
    room = 500_100
    t = now_ms()
    first = push_one(client, ROOM_VIEW, room, t, viewer_count=10)
    assert first == {"view": ROOM_VIEW, "written": 1, "ignored": 0}
    assert viewer_count(client, room) == 10  # now cached

    older = push_one(client, ROOM_VIEW, room, t - 1000, viewer_count=99)
    assert older == {"view": ROOM_VIEW, "written": 0, "ignored": 1}
    same = push_one(client, ROOM_VIEW, room, t, viewer_count=98)
    assert same == {"view": ROOM_VIEW, "written": 0, "ignored": 1}

    row = stored(client, ROOM_VIEW, room)
    assert row is not None
    assert row["event_time_ms"] == t
    assert row["values"]["viewer_count"] == 10
    assert viewer_count(client, room) == 10


def test_push_batch_counts_each_row(client: httpx.Client) -> None:
    a, b = 500_150, 500_151
    t = now_ms()
    push_one(client, ROOM_VIEW, a, t, viewer_count=1)
    rows = [
        {"id": a, "event_time_ms": t - 1, "values": {"viewer_count": 2}},
        {"id": b, "event_time_ms": t, "values": {"viewer_count": 3}},
    ]
    assert push(client, ROOM_VIEW, rows) == {"view": ROOM_VIEW, "written": 1, "ignored": 1}
    assert [viewer_count(client, a), viewer_count(client, b)] == [1, 3]


def test_partial_push_keeps_other_features(client: httpx.Client) -> None:
    room = 500_200
    t = now_ms()
    full = full_room_values(5)
    assert push_one(client, ROOM_VIEW, room, t, **full)["written"] == 1
    before = stored(client, ROOM_VIEW, room)
    assert before is not None
    assert before["values"] == full

    assert push_one(client, ROOM_VIEW, room, t + 1, viewer_count=7)["written"] == 1
    after = stored(client, ROOM_VIEW, room)
    assert after is not None
    assert after["event_time_ms"] == t + 1
    assert after["values"] == {**full, "viewer_count": 7}
    served = features(client, ROOM_VIEW, [room])[0]
    assert served["features"] == prefixed(ROOM_VIEW, {**full, "viewer_count": 7})


def test_partial_push_of_new_row_fills_defaults(client: httpx.Client) -> None:
    room = 500_250
    push_one(client, ROOM_VIEW, room, now_ms(), gift_value_1m=2.5)
    served = features(client, ROOM_VIEW, [room])[0]
    assert served["status"] == {ROOM_VIEW: "FOUND"}
    assert served["features"] == {**default_features(ROOM_VIEW), f"{ROOM_VIEW}.gift_value_1m": 2.5}


def test_push_pair_view(client: httpx.Client) -> None:
    user, room = 7, 500_300
    values = {"watch_sec_30d": 120, "gifts_30d": 2, "last_visit_age_s": 30}
    answer = push_one(client, PAIR_VIEW, [user, room], now_ms(), **values)
    assert answer == {"view": PAIR_VIEW, "written": 1, "ignored": 0}
    row = stored(client, PAIR_VIEW, f"{user}:{room}")
    assert row is not None
    assert row["values"] == values
    [served] = features(client, PAIR_VIEW, [[user, room]])
    expected = {"features": prefixed(PAIR_VIEW, values), "status": {PAIR_VIEW: "FOUND"}}
    assert served == {"id": [user, room], **expected}
    assert bundle(client, user, [room])["pairs"][0] == served
    # The same room for another user is still missing.
    other = bundle(client, user + 1, [room])["pairs"][0]
    assert other["status"] == {PAIR_VIEW: "DEFAULTED"}


# --- durability and shutdown -------------------------------------------------------------------


def test_push_survives_restart(fresh_data_dir: Path, start_server: Callable[[Path], Any]) -> None:
    room = 500_400
    first = start_server(fresh_data_dir)
    with httpx.Client(base_url=first.url, timeout=10.0) as c:
        push_one(c, ROOM_VIEW, room, now_ms(), viewer_count=4242, category="durable")
    code = first.stop()  # SIGTERM: drain, close the store (log "stopped"), exit normally
    assert "stopped" in log_events(first.stderr()), first.stderr()
    assert code == 0, f"exit status {code}; stderr:\n{first.stderr()}"

    second = start_server(fresh_data_dir)
    with httpx.Client(base_url=second.url, timeout=10.0) as c:
        served = bundle(c, 7, [room])["rooms"][0]
        row = stored(c, ROOM_VIEW, room)
    assert served["status"] == {ROOM_VIEW: "FOUND"}
    assert served["features"][f"{ROOM_VIEW}.viewer_count"] == 4242
    assert served["features"][f"{ROOM_VIEW}.category"] == "durable"
    assert row is not None
    assert row["values"]["viewer_count"] == 4242


# --- /v1/features ------------------------------------------------------------------------------


def test_features_room_view(client: httpx.Client) -> None:
    ids = [5, 9, 5, 999_998]
    rows = features(client, ROOM_VIEW, ids)
    assert [r["id"] for r in rows] == ids
    for row in rows:
        check_entity(row, row["id"], [ROOM_VIEW])
    for row in rows[:3]:
        assert row["status"] == {ROOM_VIEW: "FOUND"}
        got = stored(client, ROOM_VIEW, row["id"])
        assert got is not None
        assert row["features"] == prefixed(ROOM_VIEW, got["values"])
    assert rows[3]["status"] == {ROOM_VIEW: "DEFAULTED"}
    assert rows[3]["features"] == default_features(ROOM_VIEW)


def test_features_pair_view(client: httpx.Client) -> None:
    ids = [[7, 1], [7, 2], [1, 1], [999_000, 1]]
    rows = features(client, PAIR_VIEW, ids)
    assert [r["id"] for r in rows] == ids
    for row in rows:
        check_entity(row, row["id"], [PAIR_VIEW])
        got = stored(client, PAIR_VIEW, "{}:{}".format(*row["id"]))
        if got is None:
            assert row["status"] == {PAIR_VIEW: "DEFAULTED"}
            assert row["features"] == default_features(PAIR_VIEW)
        else:
            assert row["status"] == {PAIR_VIEW: "FOUND"}
            assert row["features"] == prefixed(PAIR_VIEW, got["values"])
    assert rows[0]["status"] == {PAIR_VIEW: "FOUND"}  # (7, 1) is in the demo data
    assert rows[3]["status"] == {PAIR_VIEW: "DEFAULTED"}


def test_features_user_view(client: httpx.Client) -> None:
    [row] = features(client, USER_VIEW, [7])
    check_entity(row, 7, [USER_VIEW])
    got = stored(client, USER_VIEW, 7)
    assert got is not None
    assert row["features"] == prefixed(USER_VIEW, got["values"])


# --- /debug, /v1/registry, probes, /metrics, docs ------------------------------------------


def test_debug_entity_reports_each_tier(client: httpx.Client) -> None:
    features(client, ROOM_VIEW, [4])  # now in L1
    body = debug(client, ROOM_VIEW, 4)
    assert body["view"] == ROOM_VIEW
    assert set(body["tiers"]) >= {"l1", "rocksdb"}
    rocks, l1 = body["tiers"]["rocksdb"], body["tiers"]["l1"]
    assert rocks["present"] is True
    assert set(rocks["values"]) == set(VIEWS[ROOM_VIEW]["features"])
    assert rocks["age_ms"] >= 0
    assert l1["present"] is True
    assert l1["event_time_ms"] == rocks["event_time_ms"]
    missing = debug(client, ROOM_VIEW, 999_997)["tiers"]["rocksdb"]
    assert missing["present"] is False


def test_registry_document(client: httpx.Client) -> None:
    r = client.get("/v1/registry")
    assert r.status_code == 200
    assert r.json() == REGISTRY


def test_healthz_and_readyz(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def _samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_metrics_prometheus_text_without_ids(client: httpx.Client) -> None:
    secret_room, secret_user = 123_456, 654_321
    bundle(client, secret_user, [1, secret_room])
    features(client, ROOM_VIEW, [secret_room])
    debug(client, ROOM_VIEW, secret_room)

    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)  # parses as Prometheus text
    names = {s.name for s in samples}
    assert {
        "livefeat_requests_total",
        "livefeat_tier_keys_total",
        "livefeat_served_rows_total",
        "livefeat_l1_rows",
    } <= names

    def labelled(name: str) -> list[dict[str, str]]:
        return [s.labels for s in samples if s.name == name]

    assert any(lb.get("route") == "/v1/bundle" for lb in labelled("livefeat_requests_total"))
    tiers = {lb.get("tier") for lb in labelled("livefeat_tier_keys_total")}
    assert {"l1", "rocksdb"} <= tiers
    served = labelled("livefeat_served_rows_total")
    assert {(lb["view"], lb["status"]) for lb in served} >= {
        (ROOM_VIEW, "FOUND"),
        (ROOM_VIEW, "DEFAULTED"),
        (USER_VIEW, "DEFAULTED"),
    }

    values = {v for s in samples for v in s.labels.values()}
    for secret in (str(secret_room), str(secret_user)):
        assert not any(secret in v for v in values), secret
        assert f'"{secret}"' not in r.text


def test_docs_and_openapi(client: httpx.Client) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in ("/v1/bundle", "/v1/features", "/v1/push", "/v1/registry"):
        assert path in paths
    assert "post" in paths["/v1/bundle"]


@pytest.mark.parametrize("path", ["/nope", "/v1/bundles"], ids=["unknown-path", "near-miss"])
def test_unknown_route_is_404(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 404
