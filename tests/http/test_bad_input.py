"""Bad input against a real `livefeat serve`: a 4xx naming the field, never a 5xx, no write.

Every case that pushes uses its own room ids (510000 and up), and afterwards
/debug/entity must show RocksDB does not hold them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

ROOM = "room_stats"
PAIR = "user_room_affinity"
INT64_MAX = 2**63 - 1
VEC, DIM = "room_embedding", 32  # a float_vector of the demo registry
T = time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Case:
    """One bad request, the status and field the server must answer with, what must not exist."""

    path: str
    body: Any = None  # JSON-able, or bytes sent as they are
    status: int = 422
    field: str = ""
    not_stored: tuple[tuple[str, str], ...] = ()  # (view, debug id)
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()


def b(user_id: Any = 7, room_ids: Any = (1, 2), **more: Any) -> dict[str, Any]:
    """A bundle body."""
    body = {"bundle": "live_ranker", "user_id": user_id, "room_ids": room_ids, **more}
    if isinstance(room_ids, tuple):
        body["room_ids"] = list(room_ids)
    return body


def row(room: int, values: Any = None, **more: Any) -> dict[str, Any]:
    """A room_stats push row (valid unless told otherwise)."""
    out = {
        "id": room,
        "event_time_ms": T,
        "values": {"viewer_count": 5} if values is None else values,
    }
    out.update(more)
    return out


def p(rows: Any, view: str = ROOM, **more: Any) -> dict[str, Any]:
    """A push body."""
    return {"view": view, "rows": rows, **more}


def gone(*rooms: int, view: str = ROOM) -> tuple[tuple[str, str], ...]:
    return tuple((view, str(r)) for r in rooms)


def bad_value(room: int, values: dict[str, Any], feature: str, status: int = 422) -> Case:
    """A one-row room_stats push whose value for `feature` is refused."""
    return Case("/v1/push", p([row(room, values)]), status, f"rows[0].values.{feature}", gone(room))


def bad_event_time(room: int, event_time_ms: Any) -> Case:
    """A one-row room_stats push whose event time is refused."""
    body = p([row(room, event_time_ms=event_time_ms)])
    return Case("/v1/push", body, 422, "rows[0].event_time_ms", gone(room))


def nested(depth: int) -> Any:
    """A list nested `depth` levels deep."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def timeout_header(value: str) -> Case:
    """A valid bundle request whose X-Livefeat-Timeout-Ms header is refused."""
    return Case("/v1/bundle", b(), 400, "X-Livefeat-Timeout-Ms",
                headers=(("X-Livefeat-Timeout-Ms", value),))  # fmt: skip


def without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


CASES: dict[str, Case] = {
    # /v1/bundle
    "bundle-unknown": Case("/v1/bundle", {**b(), "bundle": "nope"}, 404, "bundle"),
    "bundle-user_id-string": Case("/v1/bundle", b(user_id="7"), 422, "user_id"),
    "bundle-user_id-float": Case("/v1/bundle", b(user_id=7.5), 422, "user_id"),
    "bundle-user_id-bool": Case("/v1/bundle", b(user_id=True), 422, "user_id"),
    "bundle-user_id-null": Case("/v1/bundle", b(user_id=None), 422, "user_id"),
    "bundle-user_id-missing": Case("/v1/bundle", without(b(), "user_id"), 422, "user_id"),
    "bundle-user_id-negative": Case("/v1/bundle", b(user_id=-1), 422, "user_id"),
    "bundle-user_id-over-int64": Case("/v1/bundle", b(user_id=INT64_MAX + 1), 422, "user_id"),
    "bundle-room_ids-negative": Case("/v1/bundle", b(room_ids=[1, -2]), 422, "room_ids[1]"),
    "bundle-room_ids-string": Case("/v1/bundle", b(room_ids=[1, "2"]), 422, "room_ids[1]"),
    "bundle-room_ids-float": Case("/v1/bundle", b(room_ids=[1, 2.0]), 422, "room_ids[1]"),
    "bundle-room_ids-bool": Case("/v1/bundle", b(room_ids=[1, True]), 422, "room_ids[1]"),
    "bundle-room_ids-null-item": Case("/v1/bundle", b(room_ids=[1, 2, None]), 422, "room_ids[2]"),
    "bundle-room_ids-empty": Case("/v1/bundle", b(room_ids=[]), 422, "room_ids"),
    "bundle-room_ids-not-list": Case("/v1/bundle", b(room_ids="1,2"), 422, "room_ids"),
    "bundle-room_ids-missing": Case("/v1/bundle", without(b(), "room_ids"), 422, "room_ids"),
    "bundle-room_ids-2001": Case("/v1/bundle", b(room_ids=list(range(1, 2002))), 413, "room_ids"),
    # /v1/features
    "features-unknown-view": Case("/v1/features", {"view": "nope", "ids": [1]}, 404, "view"),
    "features-ids-empty": Case("/v1/features", {"view": ROOM, "ids": []}, 422, "ids"),
    "features-ids-missing": Case("/v1/features", {"view": ROOM}, 422, "ids"),
    "features-ids-negative": Case("/v1/features", {"view": ROOM, "ids": [1, -5]}, 422, "ids[1]"),
    "features-ids-2001": Case("/v1/features", {"view": ROOM, "ids": list(range(2001))}, 413, "ids"),
    "features-pair-scalar-id": Case("/v1/features", {"view": PAIR, "ids": [7]}, 422, "ids[0]"),
    "features-pair-short": Case("/v1/features", {"view": PAIR, "ids": [[7]]}, 422, "ids[0]"),
    "features-pair-negative": Case(
        "/v1/features", {"view": PAIR, "ids": [[7, 1], [7, -1]]}, 422, "ids[1][1]"
    ),
    # /v1/push: the view and the features
    "push-unknown-view": Case(
        "/v1/push", p([row(510_001)], view="nope"), 404, "view", gone(510_001)
    ),
    "push-unknown-feature": bad_value(510_002, {"viewer_count": 1, "nope": 2}, "nope", 404),
    "push-int-as-string": bad_value(510_003, {"viewer_count": "12"}, "viewer_count"),
    "push-int-as-float": bad_value(510_004, {"viewer_count": 1.5}, "viewer_count"),
    "push-int-as-bool": bad_value(510_005, {"viewer_count": True}, "viewer_count"),
    "push-int-over-int64": bad_value(510_006, {"viewer_count": INT64_MAX + 1}, "viewer_count"),
    "push-double-as-string": bad_value(510_007, {"gift_value_1m": "1.0"}, "gift_value_1m"),
    "push-string-as-number": bad_value(510_008, {"category": 3}, "category"),
    "push-vector-short": bad_value(510_009, {VEC: [0.1] * (DIM - 1)}, VEC),
    "push-vector-long": bad_value(510_010, {VEC: [0.1] * (DIM + 1)}, VEC),
    "push-vector-string-item": bad_value(510_011, {VEC: ["x"] + [0.1] * (DIM - 1)}, VEC),
    "push-vector-not-list": bad_value(510_012, {VEC: 0.5}, VEC),
    # float_vector is float32: 1e39 is a finite JSON number that does not fit.
    "push-vector-float32-overflow": bad_value(510_013, {VEC: [1e39] + [0.0] * (DIM - 1)}, VEC),
    "push-values-empty": Case(
        "/v1/push", p([row(510_014, {})]), 422, "rows[0].values", gone(510_014)
    ),
    "push-values-missing": Case(
        "/v1/push", p([without(row(510_015), "values")]), 422, "rows[0].values", gone(510_015)
    ),
    # /v1/push: ids and event times
    "push-id-negative": Case("/v1/push", p([row(-1)]), 422, "rows[0].id"),
    "push-id-string": Case("/v1/push", p([row("510016")]), 422, "rows[0].id", gone(510_016)),
    "push-id-missing": Case("/v1/push", p([without(row(0), "id")]), 422, "rows[0].id"),
    "push-pair-scalar-id": Case(
        "/v1/push",
        p([row(510_017, {"gifts_30d": 1})], view=PAIR),
        422,
        "rows[0].id",
        gone(510_017, view=ROOM),
    ),
    "push-pair-negative-room": Case(
        "/v1/push",
        p([{**row(0, {"gifts_30d": 1}), "id": [7, -3]}], view=PAIR),
        422,
        "rows[0].id[1]",
    ),
    "push-event-time-missing": Case(
        "/v1/push",
        p([without(row(510_018), "event_time_ms")]),
        422,
        "rows[0].event_time_ms",
        gone(510_018),
    ),
    "push-event-time-negative": bad_event_time(510_019, -1),
    "push-event-time-string": bad_event_time(510_020, str(T)),
    "push-event-time-float": bad_event_time(510_021, T + 0.5),
    "push-event-time-over-int64": bad_event_time(510_022, INT64_MAX + 1),
    # /v1/push: the batch is all or nothing
    "push-row1-bad-value": Case(
        "/v1/push",
        p([row(510_030), row(510_031, {"viewer_count": "x"})]),
        422,
        "rows[1].values.viewer_count",
        gone(510_030, 510_031),
    ),
    "push-row1-unknown-feature": Case(
        "/v1/push",
        p([row(510_032), row(510_033, {"nope": 1})]),
        404,
        "rows[1].values.nope",
        gone(510_032, 510_033),
    ),
    "push-row1-no-event-time": Case(
        "/v1/push",
        p([row(510_034), without(row(510_035), "event_time_ms")]),
        422,
        "rows[1].event_time_ms",
        gone(510_034, 510_035),
    ),
    "push-row2-negative-id": Case(
        "/v1/push",
        p([row(510_036), row(510_037), row(-4)]),
        422,
        "rows[2].id",
        gone(510_036, 510_037),
    ),
    "push-row1-vector-overflow": Case(
        "/v1/push",
        p([row(510_038), row(510_039, {VEC: [-1e39] + [0.0] * (DIM - 1)})]),
        422,
        "rows[1].values.room_embedding",
        gone(510_038, 510_039),
    ),
    # /v1/push: the body's shape
    "push-rows-empty": Case("/v1/push", p([]), 422, "rows"),
    "push-rows-not-list": Case("/v1/push", p(row(510_040)), 422, "rows", gone(510_040)),
    "push-row-not-object": Case("/v1/push", p([row(510_041), 5]), 422, "rows[1]", gone(510_041)),
    "push-row-unknown-field": Case(
        "/v1/push", p([row(510_042, ttl=5)]), 422, "rows[0].ttl", gone(510_042)
    ),
    "push-unknown-top-field": Case(
        "/v1/push", p([row(510_043)], sync=True), 422, "sync", gone(510_043)
    ),
    "push-10001-rows": Case(
        "/v1/push",
        p([row(520_000 + i) for i in range(10_001)]),
        413,
        "rows",
        gone(520_000, 530_000),
    ),
    # Bodies that are not a JSON object
    "push-malformed-json": Case("/v1/push", b'{"view": "room_stats", "rows": [', 400, "body"),
    "bundle-malformed-json": Case("/v1/bundle", b'{"bundle": live_ranker}', 400, "body"),
    "features-malformed-json": Case("/v1/features", b"{", 400, "body"),
    "push-json-array": Case("/v1/push", [p([row(510_044)])], 400, "body", gone(510_044)),
    "bundle-json-array": Case("/v1/bundle", [b()], 400, "body"),
    "bundle-json-number": Case("/v1/bundle", 7, 400, "body"),
    "bundle-empty-body": Case("/v1/bundle", b"", 400, "body"),
    "bundle-not-utf8": Case("/v1/bundle", b'{"bundle": "\xff\xfe"}', 400, "body"),
    "bundle-lone-surrogate": Case("/v1/bundle", b'{"bundle": "\\ud800"}', 400, "body"),
    "bundle-nan": Case("/v1/bundle", b'{"bundle": "live_ranker", "user_id": NaN}', 400, "body"),
    "push-nested-2000-deep": Case("/v1/push", b"[" * 2000 + b"]" * 2000, 400, "body"),
    # Parsed, but deeper than orjson writes (255): the error message must not use it.
    "push-value-nested-300-deep": bad_value(510_050, {"viewer_count": nested(300)}, "viewer_count"),
    "push-vector-nested-300-deep": bad_value(510_051, {VEC: nested(300)}, VEC),
    "bundle-name-nested-300-deep": Case(
        "/v1/bundle", {**b(), "bundle": nested(300)}, 404, "bundle"
    ),
    "push-int-over-uint64": bad_value(510_052, {"viewer_count": 2**70}, "viewer_count"),
    "bundle-user_id-over-uint64": Case("/v1/bundle", b(user_id=2**70), 422, "user_id"),
    "push-long-unknown-feature": bad_value(510_053, {"x" * 100_000: 1}, "x" * 100_000, 404),
    # The read budget header
    "timeout-header-letters": timeout_header("fast"),
    "timeout-header-zero": timeout_header("0"),
    "timeout-header-negative": timeout_header("-5"),
    "timeout-header-fraction": timeout_header("2.5"),
    "timeout-header-huge": timeout_header("99999999999999999999"),
    # /debug/entity
    "debug-id-letters": Case("/debug/entity/room_stats/abc", method="GET", field="id"),
    "debug-id-negative": Case("/debug/entity/room_stats/-1", method="GET", field="id"),
    "debug-id-float": Case("/debug/entity/room_stats/1.5", method="GET", field="id"),
    "debug-id-three-parts": Case(
        "/debug/entity/user_room_affinity/1:2:3", method="GET", field="id"
    ),
    "debug-id-over-int64": Case(
        f"/debug/entity/room_stats/{INT64_MAX + 1}", method="GET", field="id"
    ),
    "debug-pair-view-single-id": Case(
        "/debug/entity/user_room_affinity/7", method="GET", field="id"
    ),
    "debug-room-view-pair-id": Case("/debug/entity/room_stats/7:1", method="GET", field="id"),
    "debug-unknown-view": Case("/debug/entity/nope/1", method="GET", status=404, field="view"),
    # str.isdigit() is true for these, int() refuses them.
    "debug-id-superscript": Case("/debug/entity/room_stats/\u00b2", method="GET", field="id"),
    "debug-id-arabic-digits": Case(
        "/debug/entity/room_stats/\u0661\u0662", method="GET", field="id"
    ),
}


def send(client: httpx.Client, case: Case) -> httpx.Response:
    if case.method == "GET":
        return client.get(case.path)
    headers = dict(case.headers)
    if isinstance(case.body, bytes):
        headers["content-type"] = "application/json"
        return client.post(case.path, content=case.body, headers=headers)
    return client.post(case.path, json=case.body, headers=headers)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_refused_with_the_field_named(client: httpx.Client, case: Case) -> None:
    r = send(client, case)
    assert r.status_code < 500, f"{r.status_code}: {r.text}"
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "field", "reason", "request_id"}, body
    assert body["field"] == case.field, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["reason"], str) and body["reason"]
    for view, entity_id in case.not_stored:
        got = client.get(f"/debug/entity/{view}/{entity_id}")
        assert got.status_code == 200, got.text
        assert got.json()["tiers"]["rocksdb"] == {"present": False}, (view, entity_id)


def test_refused_push_leaves_a_stored_row_unchanged(client: httpx.Client) -> None:
    """A bad batch that also updates an existing row changes nothing of it."""
    room = 510_100
    ok = client.post("/v1/push", json=p([row(room, {"viewer_count": 1}, event_time_ms=T)]))
    assert ok.status_code == 200, ok.text
    bad = client.post(
        "/v1/push",
        json=p(
            [
                row(room, {"viewer_count": 2}, event_time_ms=T + 1),
                row(room + 1, {"viewer_count": "two"}),
            ]
        ),
    )
    assert bad.status_code == 422, bad.text
    stored = client.get(f"/debug/entity/{ROOM}/{room}").json()["tiers"]["rocksdb"]
    assert stored["event_time_ms"] == T
    assert stored["values"]["viewer_count"] == 1
    served = client.post("/v1/features", json={"view": ROOM, "ids": [room]}).json()
    assert served["rows"][0]["features"][f"{ROOM}.viewer_count"] == 1


def test_server_still_serves_after_bad_input(client: httpx.Client) -> None:
    r = client.post("/v1/bundle", json=b(room_ids=[1]))
    assert r.status_code == 200
    assert r.json()["rooms"][0]["status"] == {ROOM: "FOUND"}


@pytest.mark.parametrize("depth", [254, 256, 500, 900, 990, 1000, 1010, 1020, 1022, 1023, 1030])
def test_deeply_nested_rows_are_refused_not_crashed(client: httpx.Client, depth: int) -> None:
    """orjson refuses bodies near 1,000 levels with RecursionError (not JSONDecodeError):
    a 400 naming `body`; shallower bodies parse and are refused as bad rows (422)."""
    raw = b'{"view": "room_stats", "rows": ' + b"[" * depth + b"]" * depth + b"}"
    r = client.post("/v1/push", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert r.json()["field"] == ("body" if r.status_code == 400 else "rows[0]"), r.text
