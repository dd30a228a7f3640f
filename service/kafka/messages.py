"""Kafka messages checked into rows of a view, or refused as `BadMessage`s.

A message's value is a JSON object: the view's key column(s) by name (`user_id`,
`room_id`), `event_time_ms` (integer ms) and features by name (features left out
keep their stored values, as for a push). Its key is the entity id as text
(`"123"`, or `"7:123"` for a pair) and must name the same entity as the body.

Every message is judged on its own, so that one bad message never refuses the
good ones of its batch; a refusal names a reason (a small fixed set: it is a
metric label) and the field. `MessageParser.parse` checks one message;
`MessageParser.check_batch` checks a fetched batch column-wise (numpy, as a
load does) with the same outcome for every message: the messages a vectorised
check does not accept outright are given to `parse`, which decides.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
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
from service.core.service import ColumnRows

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


@dataclass(slots=True)
class CheckedBatch:
    """A batch of messages checked (`MessageParser.check_batch`); positions index the
    messages given. `full`: the complete rows (every feature) column-wise, or None;
    `rows`: the other good messages' rows; `bad`: the refused ones. What
    `FeatureService.write_batch` takes."""

    full: ColumnRows | None = None
    rows: list[tuple[int, CheckedRow]] = field(default_factory=list)
    bad: list[tuple[int, BadMessage]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Shape:
    """The fields of a group of messages (a set of names; the first message's order)."""

    names: tuple[str, ...]
    fields: frozenset[str]  # the same names
    get: Callable[[dict[str, Any]], tuple[Any, ...]]  # the fields' values, in `names` order
    key_at: tuple[int, ...]  # where the key columns are in `names`
    time_at: int
    features: tuple[tuple[int, Feature], ...]  # (index in `names`, feature)
    full: bool  # every feature of the view


# A group of messages of one shape: (shape, positions, field values in the shape's order).
_Group = tuple[_Shape, list[int], list[tuple[Any, ...]]]


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
        self._shapes: dict[frozenset[str], _Shape | None] = {}

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

    def check_batch(self, keys: Sequence[bytes | None], values: Sequence[bytes | None]) -> CheckedBatch:  # fmt: skip
        """Check messages (keys and values aligned), column-wise. Each message gets the
        outcome `parse` gives it (never raises).

        The garbage collector is off meanwhile: the parsed JSON of the whole batch (no
        cycles) is alive at once, and its tens of thousands of containers would set off
        collection after collection (measured: the batch checked 2x slower). They are
        freed before it is back on."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._check_batch(keys, values)
        finally:
            if enabled:
                gc.enable()

    def _check_batch(self, keys: Sequence[bytes | None], values: Sequence[bytes | None]) -> CheckedBatch:  # fmt: skip
        out = CheckedBatch()
        groups, slow = self._group(values)
        now = self._clock_ms()
        full: list[ColumnRows] = []
        for shape, positions, rows in groups:
            if len(rows) < _MIN_GROUP:  # cheaper one by one
                slow += positions
            else:
                self._check_group(shape, positions, rows, keys, now, slow, out, full)
        out.full = _join(full)
        for pos in slow:
            got = self.parse(keys[pos], values[pos])
            if isinstance(got, BadMessage):
                out.bad.append((pos, got))
            else:
                out.rows.append((pos, got))
        out.rows.sort(key=_first)  # groups and slow ones in turn: back in message order
        out.bad.sort(key=_first)
        return out

    def _group(self, values: Sequence[bytes | None]) -> tuple[list[_Group], list[int]]:
        """Parse the JSON of every message and group the objects by their set of fields:
        (shape, positions, each message's field values in the shape's order); and the
        positions of the messages that `parse` must judge (not JSON objects, missing
        keys or event time, unknown fields, no feature)."""
        loads = orjson.loads
        bodies: list[Any] | None
        try:  # the common case: every message an object of the same fields
            bodies = list(map(loads, values))  # type: ignore[arg-type]  # None: JSONDecodeError
        except orjson.JSONDecodeError:
            bodies = None
        else:
            if bodies and set(map(type, bodies)) == {dict}:
                shape = self._shape_of(bodies[0])
                if shape is not None and set(map(len, bodies)) == {len(shape.names)}:
                    try:
                        rows = list(map(shape.get, bodies))
                    except KeyError:
                        pass
                    else:
                        return [(shape, list(range(len(bodies))), rows)], []
        groups: dict[frozenset[str], _Group] = {}
        slow: list[int] = []
        get: Callable[[dict[str, Any]], tuple[Any, ...]] | None = None
        size = -1
        positions: list[int] = []
        rows = []
        for pos, value in enumerate(values):
            if bodies is not None:
                body = bodies[pos]
            else:
                try:
                    body = loads(value)  # type: ignore[arg-type]  # None: JSONDecodeError
                except orjson.JSONDecodeError:
                    slow.append(pos)
                    continue
            if type(body) is not dict:
                slow.append(pos)
                continue
            if get is not None and len(body) == size:
                try:
                    row = get(body)
                except KeyError:
                    pass
                else:
                    positions.append(pos)
                    rows.append(row)
                    continue
            found = self._shape_of(body)
            if found is None:
                slow.append(pos)
                continue
            # By the set of fields: a shape made again (the cache was emptied) joins the
            # group of the first, whose order its values take.
            shape, positions, rows = groups.setdefault(found.fields, (found, [], []))
            get, size = shape.get, len(shape.names)
            positions.append(pos)
            rows.append(get(body))
        return list(groups.values()), slow

    def _shape_of(self, body: dict[str, Any]) -> _Shape | None:
        """The shape of a message with these fields, or None when `parse` must judge it."""
        names = frozenset(body)
        if names in self._shapes:
            return self._shapes[names]
        if len(self._shapes) >= _MAX_SHAPES:  # bounded, whatever producers send
            self._shapes.clear()
        order = tuple(body)
        shape = None
        features = tuple((i, self._features[k]) for i, k in enumerate(order) if k in self._features)
        known = all(k in self._kinds for k in order)
        if known and features and "event_time_ms" in names and names.issuperset(self._keys):
            shape = _Shape(
                names=order,
                fields=names,
                get=itemgetter(*order),  # at least 3 names: always a tuple
                key_at=tuple(order.index(k) for k in self._keys),
                time_at=order.index("event_time_ms"),
                features=features,
                full=len(features) == len(self._features),
            )
        self._shapes[names] = shape
        return shape

    def _check_group(
        self,
        shape: _Shape,
        positions: list[int],
        rows: list[tuple[Any, ...]],
        keys: Sequence[bytes | None],
        now: int,
        slow: list[int],
        out: CheckedBatch,
        full: list[ColumnRows],
    ) -> None:
        """Check one group's columns at once. Messages a column does not accept outright
        go to `slow` (`parse` judges them); the others become rows of `out`, or of `full`
        when complete."""
        cols = list(zip(*rows, strict=True))
        bad: set[int] = set()
        ids = [cols[at] for at in shape.key_at]
        for col in ids:
            if not (_all_type(col, int) and min(col) >= 0 and max(col) <= INT64_MAX):
                bad.update(i for i, x in enumerate(col) if type(x) is not int or not 0 <= x <= INT64_MAX)  # fmt: skip
        if bad:
            texts = [
                None if i in bad else b":".join(b"%d" % c[i] for c in ids) for i in range(len(rows))
            ]
        elif len(ids) == 1:
            texts = [b"%d" % i for i in ids[0]]
        else:
            texts = [b"%d:%d" % pair for pair in zip(*ids, strict=True)]
        sent = [keys[p] for p in positions]
        if texts != sent:
            bad.update(i for i, (a, b) in enumerate(zip(texts, sent, strict=True)) if a != b)
        times = cols[shape.time_at]
        latest = min(EVENT_TIME_MAX, now + self.max_future_ms)
        if not (_all_type(times, int) and min(times) >= 0 and max(times) <= latest):
            bad.update(i for i, t in enumerate(times) if type(t) is not int or not 0 <= t <= latest)  # fmt: skip
        arrays: dict[str, Any] = {}
        for at, f in shape.features:
            col = cols[at]
            array = _fast_column(f, col)
            if array is None:
                bad.update(i for i, x in enumerate(col) if not _accepts(f, x))
            arrays[f.name] = array
        if bad:
            slow.extend(positions[i] for i in bad)
            good = [i for i in range(len(rows)) if i not in bad]
            if not good:
                return
            positions = [positions[i] for i in good]
            texts = [texts[i] for i in good]
            cols = list(zip(*[rows[i] for i in good], strict=True))
            times = cols[shape.time_at]
            arrays = {f.name: _column(f, cols[at]) for at, f in shape.features}
        else:
            for at, f in shape.features:
                if arrays[f.name] is None:
                    arrays[f.name] = _column(f, cols[at])
        prefix = self.plan.key_prefix
        stored_keys = [prefix + t for t in texts]  # type: ignore[operator]
        if shape.full:
            full.append(ColumnRows(stored_keys, np.array(times, dtype=np.int64), arrays, positions))
            return
        names = [f.name for _, f in shape.features]
        lists = [a if isinstance(a, list) else a.tolist() for a in arrays.values()]
        out.rows.extend(
            (pos, (key, t, dict(zip(names, vals, strict=True))))
            for pos, key, t, vals in zip(positions, stored_keys, times, zip(*lists, strict=True), strict=True)
        )  # fmt: skip


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


# Column-wise checks (check_batch): a column is accepted outright when every value has
# a common, valid shape, checked with C-level builtins and numpy; otherwise each value
# is judged by check_value (as `parse` would) and the messages it refuses go to `parse`.
_MAX_SHAPES = 4096  # partial messages of 1 to 3 of 24 features: 2,600 sets
_MIN_GROUP = 8  # messages of one shape in a batch worth checking column-wise
_first = itemgetter(0)
_NUMPY = {"int64": np.int64, "double": np.float64, "float": np.float64, "bool": np.bool_}
_NUMBERS = {int, float}


def _all_type(col: Sequence[Any], kind: type) -> bool:
    return set(map(type, col)) == {kind}


def _fast_column(f: Feature, col: Sequence[Any]) -> Any:
    """`col` converted for `encode_columns` if every value is valid in a common shape,
    else None."""
    kind = f.type
    if kind == "int64":
        ok = _all_type(col, int) and min(col) >= INT64_MIN and max(col) <= INT64_MAX
        return np.array(col, dtype=np.int64) if ok else None
    if kind in ("double", "float"):
        if not set(map(type, col)) <= _NUMBERS:
            return None
        array = np.array(col, dtype=np.float64)
        if not np.isfinite(array).all():
            return None
        if kind == "float" and np.abs(array).max() > FLOAT32_MAX:
            return None
        return array
    if kind == "string":
        ok = _all_type(col, str) and max(map(len, col)) <= _STRING_FAST_CHARS
        return list(col) if ok else None
    if kind == "bool":
        return np.array(col, dtype=np.bool_) if _all_type(col, bool) else None
    if not _all_type(col, list) or set(map(len, col)) != {f.dim}:
        return None
    if not set(map(type, chain.from_iterable(col))) <= _NUMBERS:
        return None
    array = np.array(col, dtype=np.float64).reshape(len(col), f.dim)
    if not np.isfinite(array).all() or np.abs(array).max(initial=0.0) > FLOAT32_MAX:
        return None
    return array


def _accepts(f: Feature, value: Any) -> bool:
    try:
        check_value(f, value)
    except ValueError:
        return False
    return True


def _column(f: Feature, col: Sequence[Any]) -> Any:
    """Accepted values (check_value passes each) converted for `encode_columns`."""
    if f.type == "string":
        return list(col)
    if f.type == "float_vector":
        return np.array(col, dtype=np.float64).reshape(len(col), f.dim)
    return np.array(col, dtype=_NUMPY[f.type])


def _join(parts: list[ColumnRows]) -> ColumnRows | None:
    """One ColumnRows of several (complete rows of one view), in message order."""
    if len(parts) <= 1:
        return parts[0] if parts else None
    positions = [p for part in parts for p in part.positions]
    order = np.argsort(np.asarray(positions), kind="stable")
    keys = [k for part in parts for k in part.keys]
    columns: dict[str, Any] = {}
    for name, first in parts[0].columns.items():
        if isinstance(first, list):
            joined = [v for part in parts for v in part.columns[name]]
            columns[name] = [joined[i] for i in order]
        else:
            columns[name] = np.concatenate([part.columns[name] for part in parts])[order]
    times = np.concatenate([part.event_times_ms for part in parts])[order]
    return ColumnRows([keys[i] for i in order], times, columns, [positions[i] for i in order])
