"""The registry: YAML (the format of docs/design.md) validated and compiled once, at start.

`load_registry(path)` returns an immutable `Registry` whose `ViewPlan`s and
`BundlePlan`s carry everything a request needs (codec, key prefix, max age,
pre-encoded status fragments), so a request does no registry work.
Errors are `RegistryError`s naming the file, the view and the field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service import native
from service.core.codec import Feature, ViewCodec, check_value
from service.core.status import Status
from service.errors import RegistryError
from service.stored import view_prefix

__all__ = ["BundlePlan", "Registry", "ViewPlan", "load_registry", "parse_registry", "view_prefix"]

NAME = r"^[a-z][a-z0-9_]{0,63}$"
RESERVED = {"user_id", "room_id", "event_time", "id"}
MAX_STORAGE_TTL_S = 100 * 365 * 86_400
ROLES = {"user": ("user_id",), "room": ("room_id",), "user_room": ("user_id", "room_id")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    type: Literal["int64", "double", "float", "string", "bool", "float_vector"]
    default: Any = None
    dim: int | None = Field(default=None, ge=1, le=4096)

    @model_validator(mode="after")
    def _dim_for_vectors(self) -> FeatureSpec:
        if (self.type == "float_vector") != (self.dim is not None):
            raise ValueError("dim is required for float_vector and only for it")
        return self


class ViewSpec(_Strict):
    entity: str
    max_age_s: float = Field(gt=0, allow_inf_nan=False)
    # At most 100 years: the TTL travels to Redis in ms (service/store/redis.py).
    storage_ttl_s: int = Field(gt=0, le=MAX_STORAGE_TTL_S)
    # Store each value's JSON besides its binary form (service/core/codec.py): cheaper
    # misses for more memory. None: where it pays (a float vector or float, > 8 features).
    served_json: bool | None = None
    features: dict[str, FeatureSpec] = Field(min_length=1)


class EntitySpec(_Strict):
    key: str | list[str]


class RegistrySpec(_Strict):
    entities: dict[str, EntitySpec]
    views: dict[str, ViewSpec]
    bundles: dict[str, dict[str, list[str]]] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ViewPlan:
    """Everything about one view that a read or a write needs, compiled once."""

    name: str
    entity: str
    key_columns: tuple[str, ...]
    max_age_ms: int
    storage_ttl_s: int
    codec: ViewCodec
    key_prefix: bytes
    status_json: dict[Status, bytes] = field(repr=False)

    # The key layout, ``view:version:id`` or ``view:version:user_id:room_id``, is
    # written here and nowhere else (service/stored.py view_prefix reads it back).

    @property
    def is_pair(self) -> bool:
        """Whether rows are keyed by (user_id, room_id) rather than one id."""
        return len(self.key_columns) == 2

    def key(self, *ids: int) -> bytes:
        """The storage key of the row of entity `ids` (one id, or user_id, room_id)."""
        return self.key_prefix + b":".join(b"%d" % i for i in ids)

    def key_of(self, entity: int | tuple[int, int]) -> bytes:
        """The key of a checked entity: an id, or a (user_id, room_id) pair."""
        return self.key(*entity) if isinstance(entity, tuple) else self.key(entity)

    def keys(self, ids: Sequence[int]) -> list[bytes]:
        """The keys of one-id rows, aligned with `ids`."""
        return native.keys(self.key_prefix, ids if type(ids) is list else list(ids), b"")

    def pair_keys(self, user_id: int, room_ids: Sequence[int]) -> list[bytes]:
        """The keys of the (user_id, room) rows of a pair view, aligned with `room_ids`."""
        rids = room_ids if type(room_ids) is list else list(room_ids)
        return native.keys(self.key_prefix + b"%d:" % user_id, rids, b"")

    def column_keys(self, columns: Sequence[Sequence[int]]) -> list[bytes]:
        """The keys of rows given column-wise: one sequence of ids per key column."""
        if not self.is_pair:
            return self.keys(columns[0])
        prefix = self.key_prefix
        return [prefix + b"%d:%d" % p for p in zip(columns[0], columns[1], strict=True)]


@dataclass(frozen=True, slots=True)
class BundlePlan:
    """The views a bundle reads for the user, each room, and each (user, room) pair."""

    name: str
    user: tuple[ViewPlan, ...]
    room: tuple[ViewPlan, ...]
    user_room: tuple[ViewPlan, ...]


@dataclass(frozen=True)
class Registry:
    """The compiled registry: immutable views and bundles, and the source document."""

    path: str
    views: MappingProxyType[str, ViewPlan]
    bundles: MappingProxyType[str, BundlePlan]
    document: dict[str, Any] = field(repr=False)


def load_registry(path: str | Path) -> Registry:
    """Read, validate and compile a registry file. Raises RegistryError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read the registry: {exc.strerror}") from exc
    return parse_registry(text, str(path))


def parse_registry(text: str, source: str = "<registry>") -> Registry:
    """Validate and compile a registry document. Raises RegistryError."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source}: not valid YAML: {exc}") from exc
    try:
        spec = RegistrySpec.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise RegistryError(f"{source}: {where}: {first['msg']}{more}") from None
    return _compile(spec, document, source)


def _compile(spec: RegistrySpec, document: dict[str, Any], source: str) -> Registry:
    def fail(where: str, reason: str) -> RegistryError:
        return RegistryError(f"{source}: {where}: {reason}")

    for name, entity in spec.entities.items():
        keys = (entity.key,) if isinstance(entity.key, str) else tuple(entity.key)
        if name in ROLES and keys != ROLES[name]:
            raise fail(f"entities.{name}.key", f"must be {list(ROLES[name])}")
    views: dict[str, ViewPlan] = {}
    for vname, view in spec.views.items():
        where = f"views.{vname}"
        if not re.match(NAME, vname):
            raise fail(where, "a view name is lower_snake_case, at most 64 characters")
        if view.entity not in spec.entities:
            raise fail(f"{where}.entity", f"unknown entity {view.entity!r}")
        ekey = spec.entities[view.entity].key
        features = [_feature(fail, f"{where}.features.{n}", n, f) for n, f in view.features.items()]
        codec = ViewCodec(vname, features, served=view.served_json)
        status_json = {s: b'"%s":"%s"' % (vname.encode(), s.name.encode()) for s in Status}
        views[vname] = ViewPlan(
            name=vname,
            entity=view.entity,
            key_columns=(ekey,) if isinstance(ekey, str) else tuple(ekey),
            max_age_ms=int(view.max_age_s * 1000),
            storage_ttl_s=view.storage_ttl_s,
            codec=codec,
            key_prefix=b"%s:%08x:" % (vname.encode(), codec.version),
            status_json=status_json,
        )
    bundles = {}
    for bname, roles in spec.bundles.items():
        plans: dict[str, tuple[ViewPlan, ...]] = {}
        for role, names in roles.items():
            if role not in ROLES:
                raise fail(f"bundles.{bname}.{role}", f"must be one of {sorted(ROLES)}")
            for i, vname in enumerate(names):
                if vname not in views:
                    raise fail(f"bundles.{bname}.{role}.{i}", f"unknown view {vname!r}")
                if views[vname].entity != role:
                    raise fail(
                        f"bundles.{bname}.{role}.{i}", f"view {vname!r} is not a {role} view"
                    )
            plans[role] = tuple(views[v] for v in names)
        if "user" not in plans and "room" not in plans:
            raise fail(f"bundles.{bname}", "a bundle needs user or room views")
        bundles[bname] = BundlePlan(
            bname, plans.get("user", ()), plans.get("room", ()), plans.get("user_room", ())
        )
    return Registry(source, MappingProxyType(views), MappingProxyType(bundles), document)


def _feature(fail: Any, where: str, name: str, spec: FeatureSpec) -> Feature:
    if not re.match(NAME, name) or name in RESERVED:
        raise fail(where, f"a feature name is lower_snake_case and not one of {sorted(RESERVED)}")
    dim = spec.dim or 0
    default = spec.default
    if default is None:
        default = {"int64": 0, "double": 0.0, "float": 0.0, "string": "", "bool": False}.get(
            spec.type, [0.0] * dim
        )
    feature = Feature(name, spec.type, dim, default)
    try:
        return Feature(name, spec.type, dim, check_value(feature, default))
    except ValueError as exc:
        raise fail(f"{where}.default", str(exc)) from None
