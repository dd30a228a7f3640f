"""Property tests of the stored form: any valid row round-trips; any bytes decode or CorruptValue.

Views are drawn too (1 to 8 features of every type), so layouts the demo
registry never uses (strings only, vectors first, no scalars) are covered.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.codec import (
    DECODE_BATCH_MAX,
    DECODE_BATCH_MIN,
    EVENT_TIME_MAX,
    FLOAT32_MAX,
    INT64_MAX,
    INT64_MIN,
    JSON,
    MAX_STRING_BYTES,
    CorruptValue,
    Feature,
    ViewCodec,
    check_value,
)

TYPES = ("int64", "double", "float", "string", "bool", "float_vector")
# Strings that encode to UTF-8: no lone surrogates; astral characters included.
TEXT = st.characters(exclude_categories=("Cs",))


@st.composite
def features(draw: st.DrawFn) -> list[Feature]:
    kinds = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=8))
    out = []
    for i, kind in enumerate(kinds):
        dim = draw(st.integers(1, 16)) if kind == "float_vector" else 0
        default = {"int64": 0, "double": 0.0, "float": 0.0, "string": "", "bool": False}.get(
            kind, [0.0] * dim
        )
        out.append(Feature(f"f{i}", kind, dim, default))
    return out


def float32s() -> st.SearchStrategy[float]:
    return st.floats(-FLOAT32_MAX, FLOAT32_MAX, allow_nan=False, width=32)


def long_strings() -> st.SearchStrategy[str]:
    """Short strings, and strings at and near the byte limit (astral characters are 4 bytes)."""
    near_limit = st.tuples(st.sampled_from(["a", "é", "✓", "😀"]), st.integers(0, 3)).map(
        lambda t: (t[0] * (MAX_STRING_BYTES // len(t[0].encode())))[: -t[1] or None]
    )
    return st.text(TEXT, max_size=50) | near_limit


def value_of(feature: Feature) -> st.SearchStrategy[object]:
    if feature.type == "int64":
        return st.integers(INT64_MIN, INT64_MAX) | st.sampled_from([INT64_MIN, INT64_MAX, 0, -1])
    if feature.type == "double":
        return st.floats(allow_nan=False, allow_infinity=False)
    if feature.type == "float":
        return float32s()
    if feature.type == "bool":
        return st.booleans()
    if feature.type == "string":
        return long_strings()
    return st.lists(float32s(), min_size=feature.dim, max_size=feature.dim)


@st.composite
def rows(draw: st.DrawFn) -> tuple[ViewCodec, int, dict[str, object]]:
    feats = draw(features())
    values = {f.name: draw(value_of(f)) for f in feats}
    event_time = draw(st.integers(0, EVENT_TIME_MAX))
    return ViewCodec("v", feats, served=draw(st.booleans())), event_time, values


def same(feature: Feature, got: object, sent: object) -> bool:
    """Whether a decoded value is the value sent: float features and vectors are float32
    (served as the shortest decimal of the float32, so compared as float32)."""
    if feature.type == "float":
        return bool(np.float32(got) == np.float32(sent))  # type: ignore[arg-type]
    if feature.type == "float_vector":
        return np.array_equal(np.float32(got), np.float32(sent))  # type: ignore[arg-type]
    return got == sent


@given(rows())
def test_every_valid_row_round_trips(row: tuple[ViewCodec, int, dict[str, object]]) -> None:
    codec, event_time, values = row
    checked = {f.name: check_value(f, values[f.name]) for f in codec.features}
    stored = codec.encode(event_time, checked)
    got_time, got = codec.decode_values(stored)
    assert got_time == event_time
    for f in codec.features:
        assert same(f, got[f.name], checked[f.name]), (f, got[f.name], checked[f.name])
    decoded = codec.decode_row(stored)  # the form L1 keeps decodes too (compiled)
    assert decoded[0] == event_time
    assert decoded == codec.decode_row_reference(stored)  # the fast path: the same bytes
    assert codec.decode_row_python(stored) == decoded  # and without the compiled decoder
    compiled_and_python_agree(codec, stored)  # and the bare decoder, rendered


def fast_and_reference_agree(codec: ViewCodec, raw: bytes) -> None:
    """decode_row (compiled where built), decode_row_python and decode_row_reference give
    the same row, or all raise CorruptValue."""
    try:
        want = codec.decode_row_reference(raw)
    except CorruptValue:
        for decode in (codec.decode_row, codec.decode_row_python):
            with pytest.raises(CorruptValue):
                decode(raw)
        return
    assert codec.decode_row(raw) == codec.decode_row_python(raw) == want


@given(rows())
def test_batch_encoding_is_the_row_encoding(row: tuple[ViewCodec, int, dict[str, object]]) -> None:
    """A load (encode_columns) stores exactly what a push (encode) stores."""
    codec, event_time, values = row
    checked = {f.name: check_value(f, values[f.name]) for f in codec.features}
    columns: dict[str, object] = {}
    for f in codec.features:
        v = checked[f.name]
        if f.type == "string":
            columns[f.name] = [v]
        elif f.type == "float_vector":
            columns[f.name] = np.asarray([v], dtype=np.float32)
        else:
            columns[f.name] = np.asarray([v])
    assert codec.encode_columns(np.asarray([event_time]), columns) == [
        codec.encode(event_time, checked)
    ]


@given(features(), st.data())
def test_batch_of_many_rows_is_the_row_encoding(feats: list[Feature], data: st.DataObject) -> None:
    """A batch renders the served sections column by column: row by row, the same bytes."""
    codec = ViewCodec("v", feats, served=data.draw(st.booleans()))
    n = data.draw(st.integers(1, 6))
    batch = [{f.name: check_value(f, data.draw(value_of(f))) for f in feats} for _ in range(n)]
    times = [data.draw(st.integers(0, EVENT_TIME_MAX)) for _ in range(n)]
    columns: dict[str, object] = {}
    for f in feats:
        col = [r[f.name] for r in batch]
        if f.type == "string":
            columns[f.name] = col
        elif f.type == "float_vector":
            columns[f.name] = np.asarray(col, dtype=np.float32)
        else:
            columns[f.name] = np.asarray(col)
    got = codec.encode_columns(np.asarray(times), columns)
    assert got == [codec.encode(t, r) for t, r in zip(times, batch, strict=True)]


def decode_or_corrupt(codec: ViewCodec, raw: bytes) -> None:
    """Decoding either works or raises CorruptValue; anything else fails the test."""
    for decode in (codec.decode_row, codec.decode_values):
        with contextlib.suppress(CorruptValue):
            decode(raw)


@given(features(), st.binary(max_size=300))
def test_random_bytes_decode_or_raise_corrupt_value(feats: list[Feature], raw: bytes) -> None:
    decode_or_corrupt(ViewCodec("v", feats, served=True), raw)


@given(rows(), st.data())
def test_damaged_values_decode_or_raise_corrupt_value(
    row: tuple[ViewCodec, int, dict[str, object]], data: st.DataObject
) -> None:
    """Values with a valid header, then cut short, extended or with bytes changed."""
    codec, event_time, values = row
    stored = codec.encode(
        event_time, {f.name: check_value(f, values[f.name]) for f in codec.features}
    )
    cut = data.draw(st.integers(0, len(stored)))
    extended = stored + data.draw(st.binary(min_size=1, max_size=8))
    damaged = bytearray(stored)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, max(len(damaged) - 1, 8)))
        if at < len(damaged):
            damaged[at] = data.draw(st.integers(0, 255))
    for raw in (stored[:cut], extended, bytes(damaged)):
        decode_or_corrupt(codec, raw)
        compiled_and_python_agree(codec, raw)
        if not codec.served:  # with a section, the JSON comes from it, not the binary
            fast_and_reference_agree(codec, raw)


def compiled_and_python_agree(codec: ViewCodec, raw: bytes) -> None:
    """decode_row (compiled where built) and decode_row_python give the same row, or
    both raise CorruptValue: values with or without a served section, damaged or not.
    The bare decoder (gRPC's) refuses the same values, and gives the same row but for
    the JSON slot, which `render` makes the same."""
    try:
        want = codec.decode_row_python(raw)
    except CorruptValue:
        with pytest.raises(CorruptValue):
            codec.decode_row(raw)
        with pytest.raises(CorruptValue):
            codec.bare(raw)
        return
    assert codec.decode_row(raw) == want
    bare = codec.bare(raw)
    assert bare[JSON] in (want[JSON], (raw,))
    assert bare[:JSON] + bare[JSON + 1 :] == want[:JSON] + want[JSON + 1 :]
    assert codec.render(bare) == want


@given(rows(), st.data())
def test_damaged_values_without_served_section(
    row: tuple[ViewCodec, int, dict[str, object]], data: st.DataObject
) -> None:
    """Values written before the served section existed, damaged: the fast path gives
    what the reference decoder gives, or both refuse."""
    codec, event_time, values = row
    plain = ViewCodec(codec.view, codec.features)
    plain.served = False  # writes as before the section
    stored = plain.encode(
        event_time, {f.name: check_value(f, values[f.name]) for f in codec.features}
    )
    assert codec.decode_row(stored) == codec.decode_row(
        codec.encode(event_time, {f.name: check_value(f, values[f.name]) for f in codec.features})
    )
    damaged = bytearray(stored)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, max(len(damaged) - 1, 8)))
        if at < len(damaged):
            damaged[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stored)))
    for raw in (stored[:cut], bytes(damaged)):
        fast_and_reference_agree(codec, raw)


@given(st.sampled_from(TYPES), st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(TEXT, max_size=20),
    st.lists(st.floats(), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
))  # fmt: skip
def test_check_value_returns_or_raises_value_error(kind: str, value: object) -> None:
    feature = Feature("f", kind, 3 if kind == "float_vector" else 0, None)
    try:
        check_value(feature, value)
    except ValueError as exc:
        assert str(exc)


@given(features(), st.data())
def test_batch_decoding_is_the_row_decoding(feats: list[Feature], data: st.DataObject) -> None:
    """decode_rows (a cold read's batch, JSON rendered per column) gives, value by value,
    what decode_row gives, or the CorruptValue it raises: valid values with and without
    a served section, damaged and foreign ones mixed in, at every type's limits."""
    with_section = ViewCodec("v", feats, served=True)
    plain = ViewCodec("v", feats, served=False)
    n = data.draw(st.integers(DECODE_BATCH_MIN, DECODE_BATCH_MAX + 12))
    stored = []
    for _ in range(n):
        values = {f.name: check_value(f, data.draw(value_of(f))) for f in feats}
        writer = with_section if data.draw(st.integers(0, 4)) == 0 else plain
        raw = writer.encode(data.draw(st.integers(0, EVENT_TIME_MAX)), values)
        damage = data.draw(st.integers(0, 9))
        if damage == 0:
            raw = raw[: data.draw(st.integers(0, len(raw)))]
        elif damage == 1:
            flipped = bytearray(raw)
            at = data.draw(st.integers(0, len(raw) - 1))
            flipped[at] = data.draw(st.integers(0, 255))
            raw = bytes(flipped)
        elif damage == 2:
            raw = data.draw(st.binary(max_size=120))
        stored.append(raw)
    got = plain.decode_rows(stored)
    assert len(got) == n
    in_python = plain.decode_rows_python(stored)  # where the compiled decoder is not built
    assert [r if isinstance(r, tuple) else str(r) for r in in_python] == [
        r if isinstance(r, tuple) else str(r) for r in got
    ]
    for raw, row in zip(stored, got, strict=True):
        try:
            want = plain.decode_row(raw)
        except CorruptValue as exc:
            assert isinstance(row, CorruptValue), (raw, row)
            assert str(row) == str(exc)
            continue
        assert row == want, raw
