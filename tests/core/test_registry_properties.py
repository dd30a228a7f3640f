"""Property tests of the registry: valid documents compile; anything else is a RegistryError
naming where it is wrong, never another exception."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from service.core.codec import FLOAT32_MAX, INT64_MAX, INT64_MIN
from service.core.registry import RESERVED, parse_registry
from service.errors import RegistryError

ENTITIES = {"user": {"key": "user_id"}, "room": {"key": "room_id"},
            "user_room": {"key": ["user_id", "room_id"]}}  # fmt: skip
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(lambda n: n not in RESERVED)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
F32 = st.floats(-FLOAT32_MAX, FLOAT32_MAX, allow_nan=False, width=32)


@st.composite
def feature_specs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["int64", "double", "float", "string", "bool", "float_vector"]))
    spec: dict[str, Any] = {"type": kind}
    if kind == "float_vector":
        spec["dim"] = draw(st.integers(1, 64))
    defaults = {
        "int64": st.integers(INT64_MIN, INT64_MAX),
        "double": st.floats(allow_nan=False, allow_infinity=False),
        "float": F32,
        "string": TEXT,
        "bool": st.booleans(),
        "float_vector": st.lists(F32, min_size=spec.get("dim", 0), max_size=spec.get("dim", 0)),
    }
    if draw(st.booleans()):
        spec["default"] = draw(defaults[kind])
    return spec


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    views = {}
    for name in names:
        views[name] = {
            "entity": draw(st.sampled_from(sorted(ENTITIES))),
            "max_age_s": draw(st.floats(0.001, 1e9)),
            "storage_ttl_s": draw(st.integers(1, 10**9)),
            "features": draw(st.dictionaries(NAMES, feature_specs(), min_size=1, max_size=6)),
        }
    bundles = {}
    for bname in draw(st.lists(NAMES, max_size=2, unique=True)):
        roles: dict[str, list[str]] = {}
        for role in ENTITIES:
            roles[role] = [v for v in names if views[v]["entity"] == role]
        roles = {r: v for r, v in roles.items() if v}
        if "user" in roles or "room" in roles:
            bundles[bname] = roles
    return {"entities": copy.deepcopy(ENTITIES), "views": views, "bundles": bundles}


def dump(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


@given(documents())
def test_every_valid_document_compiles(document: dict[str, Any]) -> None:
    registry = parse_registry(dump(document))
    assert set(registry.views) == set(document["views"])
    assert set(registry.bundles) == set(document["bundles"])
    for name, plan in registry.views.items():
        spec = document["views"][name]
        assert [f.name for f in plan.codec.features] == list(spec["features"])
        # The compiled defaults round-trip through the stored form.
        _, values = plan.codec.decode_values(plan.codec.encode(0, plan.codec.default_values))
        assert set(values) == set(spec["features"])


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def assert_refused_or_compiled(text: str) -> None:
    try:
        parse_registry(text, "reg.yaml")
    except RegistryError as exc:
        message = str(exc)
        assert message.startswith("reg.yaml: "), message
        where = message.removeprefix("reg.yaml: ").split(": ")[0]
        assert where.strip(), message  # names a field (or "(top level)"), or the YAML error


@given(documents(), st.data())
def test_a_mutated_document_is_refused_naming_a_field_or_compiles(
    document: dict[str, Any], data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(paths(document)[1:]))
    *parents, last = path
    target: Any = document
    for p in parents:
        target = target[p]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        target[last] = data.draw(JUNK)
    elif action == "delete":
        del target[last]
    elif isinstance(target, dict):
        target[data.draw(TEXT)] = data.draw(JUNK)
    else:
        target.append(data.draw(JUNK))
    assert_refused_or_compiled(dump(document))


@given(JUNK)
def test_any_yaml_document_is_refused_or_compiles(document: Any) -> None:
    assert_refused_or_compiled(dump(document))


@given(st.text(max_size=200))
def test_any_text_is_refused_or_compiles(text: str) -> None:
    assert_refused_or_compiled(text)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_non_finite_max_age_is_refused(value: str) -> None:
    text = dump({"entities": ENTITIES, "views": {"v": {"entity": "room", "max_age_s": 1,
            "storage_ttl_s": 1, "features": {"x": {"type": "int64"}}}}})  # fmt: skip
    with pytest.raises(RegistryError, match=r"views\.v\.max_age_s"):
        parse_registry(text.replace("max_age_s: 1", f"max_age_s: {value}"))
