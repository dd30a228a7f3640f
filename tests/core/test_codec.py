import math

import numpy as np
import orjson
import pytest

from service.core.codec import (
    EVENT_TIME,
    HEADER_SIZE,
    JSON,
    CorruptValue,
    Feature,
    ViewCodec,
    check_value,
    event_time_of,
    schema_version,
)

FEATURES = [
    Feature("viewers", "int64", 0, 0),
    Feature("rate", "double", 0, 0.0),
    Feature("score", "float", 0, 0.0),
    Feature("live", "bool", 0, False),
    Feature("category", "string", 0, ""),
    Feature("emb", "float_vector", 3, [0.0, 0.0, 0.0]),
    Feature("title", "string", 0, "untitled"),
]
VALUES = {
    "viewers": 2**40,
    "rate": 0.125,
    "score": 0.5,
    "live": True,
    "category": "gaming",
    "emb": [0.25, -1.5, 3.0],
    "title": "héllo ✓",
}


@pytest.fixture
def codec() -> ViewCodec:
    return ViewCodec("room_stats", FEATURES, served=True)


def test_round_trip_values(codec: ViewCodec) -> None:
    raw = codec.encode(1_700_000_000_123, VALUES)
    assert event_time_of(raw) == 1_700_000_000_123
    event_time, values = codec.decode_values(raw)
    assert event_time == 1_700_000_000_123
    assert values == VALUES


def test_row_json_fragment_is_qualified_and_in_registry_order(codec: ViewCodec) -> None:
    row = codec.decode_row(codec.encode(5, VALUES))
    assert row[EVENT_TIME] == 5
    decoded = orjson.loads(b"{" + row[JSON] + b"}")
    assert list(decoded) == [f"room_stats.{f.name}" for f in FEATURES]
    assert decoded["room_stats.viewers"] == 2**40
    assert decoded["room_stats.emb"] == [0.25, -1.5, 3.0]
    assert decoded["room_stats.title"] == "héllo ✓"


def test_stored_value_has_no_names_or_type_tags(codec: ViewCodec) -> None:
    raw = codec.encode(5, VALUES)
    assert b"viewers" not in raw and b"category" not in raw
    fixed = HEADER_SIZE + 8 + 8 + 4 + 1 + 3 * 4
    strings = 2 + len(b"gaming") + 2 + len("héllo ✓".encode())
    served = b'\x1e1099511627776\x1f0.125\x1f0.5\x1ftrue\x1f"gaming"\x1f[0.25,-1.5,3.0]\x1f'
    served += '"héllo ✓"\x1e'.encode()
    assert raw[fixed + strings :] == served  # the JSON values, without names
    assert len(raw) == fixed + strings + len(served)


def test_views_carry_no_served_section_unless_the_registry_asks() -> None:
    pairs = ViewCodec("aff", [Feature("a", "int64", 0, 0), Feature("b", "int64", 0, -1)])
    assert not pairs.served
    assert not ViewCodec("room_stats", FEATURES).served
    assert len(pairs.encode(5, {"a": 1, "b": 2})) == HEADER_SIZE + 16


def test_values_without_a_served_section_read_the_same(codec: ViewCodec) -> None:
    """Values written before the section existed (same schema version, same keys)."""
    raw = codec.encode(5, VALUES)
    plain = ViewCodec("room_stats", FEATURES)
    plain.served = False  # writes as before the section
    binary = plain.encode(5, VALUES)
    assert raw.startswith(binary) and len(raw) > len(binary)
    assert codec.decode_row(binary) == codec.decode_row(raw) == codec.decode_row_reference(raw)
    assert codec.decode_values(binary) == codec.decode_values(raw)


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:-1],  # cut short: no closing mark
        lambda raw: raw.replace(b"\x1ftrue\x1f", b"\x1f"),  # a value missing
        lambda raw: raw + b"\x1e",  # the closing mark twice
    ],
)
def test_damaged_served_section_is_refused(codec: ViewCodec, damage: object) -> None:
    raw = codec.encode(5, VALUES)
    bad = damage(raw)  # type: ignore[operator]
    with pytest.raises(CorruptValue):
        codec.decode_row(bad)


def test_default_row(codec: ViewCodec) -> None:
    decoded = orjson.loads(b"{" + codec.default_row[JSON] + b"}")
    assert decoded["room_stats.title"] == "untitled"
    assert decoded["room_stats.emb"] == [0.0, 0.0, 0.0]
    assert codec.default_row[EVENT_TIME] == 0


def test_encode_columns_matches_encode(codec: ViewCodec) -> None:
    other = {**VALUES, "viewers": 3, "category": "", "emb": [1.0, 2.0, 3.0], "live": False}
    rows = [VALUES, other]
    columns = {
        "viewers": np.array([r["viewers"] for r in rows], np.int64),
        "rate": np.array([r["rate"] for r in rows]),
        "score": np.array([r["score"] for r in rows], np.float32),
        "live": np.array([r["live"] for r in rows]),
        "emb": np.array([r["emb"] for r in rows], np.float32),
        "category": [r["category"] for r in rows],
        "title": [r["title"] for r in rows],
    }
    batch = codec.encode_columns(np.array([10, 20]), columns)
    assert batch == [codec.encode(10, VALUES), codec.encode(20, other)]


def test_layout_change_changes_version_and_refuses_old_values(codec: ViewCodec) -> None:
    changed = ViewCodec("room_stats", [*FEATURES[:-1], Feature("title", "int64", 0, 0)])
    assert changed.version != codec.version
    with pytest.raises(CorruptValue):
        changed.decode_row(codec.encode(1, VALUES))


def test_defaults_do_not_change_the_version() -> None:
    a = schema_version([Feature("x", "int64", 0, 0)])
    assert a == schema_version([Feature("x", "int64", 0, 7)])


@pytest.mark.parametrize(
    ("feature", "value", "reason"),
    [
        (Feature("n", "int64", 0, 0), "7", "expected an integer"),
        (Feature("n", "int64", 0, 0), True, "expected an integer"),
        (Feature("n", "int64", 0, 0), 2**63, "out of the int64 range"),
        (Feature("d", "double", 0, 0.0), "x", "expected a number"),
        (Feature("d", "double", 0, 0.0), math.inf, "finite"),
        (Feature("b", "bool", 0, False), 1, "true or false"),
        (Feature("s", "string", 0, ""), 3, "expected a string"),
        (Feature("s", "string", 0, ""), "x" * 70000, "longer than"),
        (Feature("v", "float_vector", 2, [0.0, 0.0]), [1.0], "list of 2 numbers"),
        (Feature("v", "float_vector", 2, [0.0, 0.0]), [1.0, "a"], "finite numbers"),
    ],
)
def test_check_value_refuses(feature: Feature, value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_value(feature, value)


def test_check_value_normalises_numbers() -> None:
    assert check_value(Feature("d", "double", 0, 0.0), 3) == 3.0
    assert check_value(Feature("v", "float_vector", 2, [0.0, 0.0]), (1, 2)) == [1.0, 2.0]


def test_unchanged_means_the_same_layout_and_event_time() -> None:
    codec = ViewCodec("v", [Feature("n", "int64", 0, 0), Feature("s", "string", 0, "")])
    raw = codec.encode(1_000, {"n": 5, "s": "é"})
    row = codec.decode_row(raw)
    assert codec.unchanged(raw, row)
    assert not codec.unchanged(codec.encode(1_001, {"n": 5, "s": "é"}), row)
    other = ViewCodec("v", [Feature("n", "double", 0, 0.0), Feature("s", "string", 0, "")])
    assert not codec.unchanged(other.encode(1_000, {"n": 5.0, "s": "é"}), row)  # layout
    assert not codec.unchanged(raw[:7], row)  # too short for a header
