"""One message -> one checked row or a BadMessage naming the reason and the field."""

from __future__ import annotations

import orjson
import pytest

from service.core.registry import load_registry
from service.kafka.messages import REASONS, BadMessage, MessageParser
from service.settings import DEMO_REGISTRY

NOW = 1_800_000_000_000
REGISTRY = load_registry(DEMO_REGISTRY)
ROOMS = MessageParser(REGISTRY.views["room_stats"], 300_000, lambda: NOW)
PAIRS = MessageParser(REGISTRY.views["user_room_affinity"], 300_000, lambda: NOW)


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


def test_a_room_message_becomes_its_row() -> None:
    got = ROOMS.parse(b"5", body(room_id=5, event_time_ms=NOW, viewer_count=12, gift_value_1m=2))
    assert got == (
        REGISTRY.views["room_stats"].key(5),
        NOW,
        {"viewer_count": 12, "gift_value_1m": 2.0},
    )


def test_a_pair_message_is_keyed_user_colon_room() -> None:
    got = PAIRS.parse(b"7:123", body(user_id=7, room_id=123, event_time_ms=NOW, gifts_30d=3))
    assert got == (REGISTRY.views["user_room_affinity"].key(7, 123), NOW, {"gifts_30d": 3})


BAD = [
    (b"5", b"", "not_json", "value"),
    (b"5", b"{not json", "not_json", "value"),
    (b"5", b"\xff\xfe", "not_json", "value"),
    (b"5", b"[1, 2]", "not_object", "value"),
    (b"5", body(event_time_ms=NOW, viewer_count=1), "bad_key", "room_id"),
    (b"5", body(room_id="5", event_time_ms=NOW, viewer_count=1), "bad_key", "room_id"),
    (b"5", body(room_id=-5, event_time_ms=NOW, viewer_count=1), "bad_key", "room_id"),
    (b"6", body(room_id=5, event_time_ms=NOW, viewer_count=1), "key_mismatch", "key"),
    (None, body(room_id=5, event_time_ms=NOW, viewer_count=1), "key_mismatch", "key"),
    (b"5", body(room_id=5, viewer_count=1), "bad_event_time", "event_time_ms"),
    (b"5", body(room_id=5, event_time_ms=1.5e12, viewer_count=1), "bad_event_time", "event_time_ms"),
    (b"5", body(room_id=5, event_time_ms=-1, viewer_count=1), "bad_event_time", "event_time_ms"),
    (b"5", body(room_id=5, event_time_ms=2**48, viewer_count=1), "bad_event_time", "event_time_ms"),
    (b"5", body(room_id=5, event_time_ms=NOW + 300_001, viewer_count=1), "bad_event_time", "event_time_ms"),
    (b"5", body(room_id=5, event_time_ms=NOW, viewers=1), "unknown_feature", "viewers"),
    (b"5", body(room_id=5, event_time_ms=NOW, viewer_count="1"), "bad_value", "viewer_count"),
    (b"5", body(room_id=5, event_time_ms=NOW, viewer_count=True), "bad_value", "viewer_count"),
    (b"5", body(room_id=5, event_time_ms=NOW, room_embedding=[1.0]), "bad_value", "room_embedding"),
    (b"5", body(room_id=5, event_time_ms=NOW, gift_value_1m=None), "bad_value", "gift_value_1m"),
    (b"5", body(room_id=5, event_time_ms=NOW), "no_features", "value"),
    (b"7", body(user_id=7, event_time_ms=NOW, gifts_30d=1), "bad_key", "room_id"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "value", "reason", "field"), BAD)
def test_a_bad_message_names_reason_and_field(
    key: bytes | None, value: bytes, reason: str, field: str
) -> None:
    parser = PAIRS if b"user_id" in value else ROOMS
    got = parser.parse(key, value)
    assert isinstance(got, BadMessage)
    assert (got.reason, got.field) == (reason, field), got.detail
    assert got.reason in REASONS and got.detail


def test_the_future_limit_follows_the_injected_clock() -> None:
    clock = [NOW]
    parser = MessageParser(REGISTRY.views["room_stats"], 1000, lambda: clock[0])
    message = body(room_id=5, event_time_ms=NOW + 5000, viewer_count=1)
    assert isinstance(parser.parse(b"5", message), BadMessage)
    clock[0] = NOW + 4000
    assert not isinstance(parser.parse(b"5", message), BadMessage)
