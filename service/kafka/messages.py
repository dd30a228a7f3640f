"""One Kafka message checked into one row of a view, or refused as a `BadMessage`.

A message's value is a JSON object: the view's key column(s) by name (`user_id`,
`room_id`), `event_time_ms` (integer ms) and features by name (features left out
keep their stored values, as for a push). Its key is the entity id as text
(`"123"`, or `"7:123"` for a pair) and must name the same entity as the body.

Every message is checked on its own, so that one bad message never refuses the
good ones of its batch; a refusal names a reason (a small fixed set: it is a
metric label) and the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from service.core.codec import (
    EVENT_TIME_MAX,
    FLOAT32_MAX,
    INT64_MAX,
    INT64_MIN,
    MAX_STRING_BYTES,
    Feature,
    check_value,
)
from service.core.registry import ViewPlan

# (storage key, event_time_ms, checked values): what FeatureService.write_checked takes.
CheckedRow = tuple[bytes, int, dict[str, Any]]

REASONS = (
    "not_json",  # the value is not UTF-8 JSON (or is empty: a tombstone)
    "not_object",  # JSON, but not an object
    "bad_key",  # a key column is missing, or not an id (an integer in 0..2**63-1)
    "key_mismatch",  # the message key is missing or names another entity than the body
    "bad_event_time",  # event_time_ms missing, not an integer, or out of range
    "unknown_feature",  # a field that is neither a key column nor a feature of the view
    "bad_value",  # a feature value of the wrong type or out of range
    "no_features",  # nothing to write
)


@dataclass(frozen=True, slots=True)
class BadMessage:
    """Why a message was refused: `reason` (one of REASONS), `field` (the body's field
    name, "key" for the message key, "value" for the whole value) and a `detail`."""

    reason: str
    field: str
    detail: str


class MessageParser:
    """Checks messages for one view. `clock_ms` gives wall-clock ms (injected for tests);
    event times more than `max_future_ms` ahead of it are refused: under newest-event-wins
    one such row would hide every later update of its entity."""

    def __init__(self, plan: ViewPlan, max_future_ms: int, clock_ms: Callable[[], int]) -> None:
        self.plan = plan
        self.max_future_ms = max_future_ms
        self._clock_ms = clock_ms
        self._features = {f.name: f for f in plan.codec.features}
        self._keys = plan.key_columns
        self._kinds: dict[str, str] = {f.name: _KIND[f.type] for f in plan.codec.features}
        self._kinds.update(dict.fromkeys([*plan.key_columns, "event_time_ms"], _SKIP))

    def __repr__(self) -> str:
        return f"<MessageParser {self.plan.name} keys={list(self._keys)}>"

    def parse(self, key: bytes | None, value: bytes | None) -> CheckedRow | BadMessage:
        """The checked row of one message, or why it is refused (never raises)."""
        if not value:
            return BadMessage("not_json", "value", "empty value (a tombstone?)")
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return BadMessage("not_json", "value", f"not valid UTF-8 JSON: {exc}")
        if not isinstance(body, dict):
            return BadMessage("not_object", "value", f"expected a JSON object, got {type(body).__name__}")  # fmt: skip
        ids = []
        for column in self._keys:
            got = body.get(column)
            if type(got) is not int or not 0 <= got <= INT64_MAX:
                why = "missing" if column not in body else f"not an id in 0..2**63-1: {got!r}"
                return BadMessage("bad_key", column, why)
            ids.append(got)
        text = ":".join(str(i) for i in ids)
        if key is None or key != text.encode():
            shown = "none" if key is None else repr(key.decode("utf-8", "replace"))
            return BadMessage("key_mismatch", "key", f"message key {shown}, body says {text!r}")
        event_time = body.get("event_time_ms")
        if type(event_time) is not int or not 0 <= event_time <= EVENT_TIME_MAX:
            why = "missing" if event_time is None else f"expected integer ms in 0..2**48-1, got {event_time!r}"  # fmt: skip
            return BadMessage("bad_event_time", "event_time_ms", why)
        ahead = event_time - self._clock_ms()
        if ahead > self.max_future_ms:
            return BadMessage("bad_event_time", "event_time_ms", f"{ahead} ms in the future")
        values: dict[str, Any] = {}
        kinds = self._kinds
        for name, raw in body.items():
            kind = kinds.get(name)
            # The common, valid shapes inline (no call per feature: a stream brings
            # thousands of rows a second); anything else gets check_value below.
            if kind is _INT:
                if type(raw) is int and INT64_MIN <= raw <= INT64_MAX:
                    values[name] = raw
                    continue
            elif kind is _REAL:
                if type(raw) is float and -FLOAT32_MAX <= raw <= FLOAT32_MAX:  # not NaN
                    values[name] = raw
                    continue
            elif kind is _STR:
                if type(raw) is str and len(raw) <= _STRING_FAST_CHARS:
                    values[name] = raw
                    continue
            elif kind is _SKIP:
                continue
            elif kind is None:
                return BadMessage("unknown_feature", name, f"view {self.plan.name!r} has no such feature")  # fmt: skip
            feature = self._features[name]
            value = _vector(feature, raw) if kind is _VEC else _SLOW
            if value is _SLOW:
                try:
                    value = check_value(feature, raw)
                except ValueError as exc:
                    return BadMessage("bad_value", name, str(exc))
            values[name] = value
        if not values:
            return BadMessage("no_features", "value", "no feature to write")
        return self.plan.key(*ids), event_time, values


# The common shapes are checked inline in `parse`, float vectors by `_vector`, with
# C-level builtins only (check_value's per-element loop over a 32-float vector cost
# as much as the rest of a room message). Anything else returns or falls to _SLOW and
# gets check_value, which accepts or refuses it with the reason.
_SLOW: Any = object()
_STRING_FAST_CHARS = MAX_STRING_BYTES // 4  # no UTF-8 character is longer than 4 bytes
_INT, _REAL, _STR, _VEC, _OTHER, _SKIP = "int", "real", "str", "vec", "other", "skip"
_KIND = {"int64": _INT, "double": _REAL, "float": _REAL, "string": _STR,
         "float_vector": _VEC, "bool": _OTHER}  # fmt: skip


def _vector(f: Feature, v: Any) -> Any:
    if type(v) is not list or len(v) != f.dim or not set(map(type, v)) <= {float, int}:
        return _SLOW
    if not (math.isfinite(math.fsum(v)) and min(v) >= -FLOAT32_MAX and max(v) <= FLOAT32_MAX):
        return _SLOW
    return v
