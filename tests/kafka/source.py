"""Source messages for the Kafka tests, and the oracle: what a view must hold after them.

Values are exactly representable in float32 (multiples of 1/8), so what is served
can be compared with what was sent with ==.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from service.core.registry import ViewPlan

Message = tuple[bytes | None, bytes]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def values_for(plan: ViewPlan, rnd: random.Random, partial: bool) -> dict[str, Any]:
    features = plan.codec.features
    if partial:
        features = rnd.sample(features, rnd.randint(1, 3))
    out: dict[str, Any] = {}
    for f in features:
        if f.type == "int64":
            out[f.name] = rnd.randint(0, 10**6)
        elif f.type in ("double", "float"):
            out[f.name] = rnd.randint(0, 80_000) / 8
        elif f.type == "string":
            out[f.name] = rnd.choice(["music", "games", "chat", "sport"])
        elif f.type == "bool":
            out[f.name] = rnd.random() < 0.5
        else:
            out[f.name] = [rnd.randint(-64, 64) / 8 for _ in range(f.dim)]
    return out


def room_updates(
    plan: ViewPlan, rnd: random.Random, rooms: int, updates: int, base_ms: int
) -> list[tuple[int, int, dict[str, Any]]]:
    """(room, event_time_ms, values): `updates` per room in a shuffled order; event times
    mostly rising, some older (to be ignored); a third partial."""
    out = []
    for room in range(1, rooms + 1):
        for _ in range(updates):
            out.append(
                (room, base_ms + rnd.randint(0, 60_000), values_for(plan, rnd, rnd.random() < 0.33))
            )
    rnd.shuffle(out)
    return out


def encode(plan: ViewPlan, room: int, event_time_ms: int, values: dict[str, Any]) -> Message:
    body = {plan.key_columns[0]: room, "event_time_ms": event_time_ms, **values}
    return str(room).encode(), orjson.dumps(body)


def bad_messages(plan: ViewPlan, base_ms: int) -> list[tuple[str, Message]]:
    """(reason, message) of every kind a consumer must refuse."""
    key = plan.key_columns[0]

    def body(**fields: Any) -> bytes:
        return orjson.dumps(fields)

    return [
        ("not_json", (b"1", b"{oops")),
        ("not_object", (b"1", b'"a string"')),
        ("bad_key", (b"1", body(event_time_ms=base_ms, viewer_count=1))),
        ("key_mismatch", (b"2", body(**{key: 1}, event_time_ms=base_ms, viewer_count=1))),
        ("bad_event_time", (b"1", body(**{key: 1}, event_time_ms="yesterday", viewer_count=1))),
        ("bad_event_time", (b"1", body(**{key: 1}, event_time_ms=now_ms() + 86_400_000, viewer_count=1))),
        ("unknown_feature", (b"1", body(**{key: 1}, event_time_ms=base_ms, viewers=1))),
        ("bad_value", (b"1", body(**{key: 1}, event_time_ms=base_ms, viewer_count="many"))),
        ("no_features", (b"1", body(**{key: 1}, event_time_ms=base_ms))),
    ]  # fmt: skip


def expected(
    plan: ViewPlan, updates: list[tuple[int, int, dict[str, Any]]]
) -> dict[int, tuple[int, dict[str, Any]]]:
    """room -> (event time, every feature's value) after the updates, applied in order:
    newest event wins, features left out keep their values."""
    state: dict[int, tuple[int, dict[str, Any]]] = {}
    for room, t, values in updates:
        before = state.get(room, (-1, dict(plan.codec.default_values)))
        if t > before[0]:
            state[room] = (t, {**before[1], **values})
    return state
