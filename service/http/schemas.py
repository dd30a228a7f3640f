"""Request and response shapes, for the OpenAPI document at /docs only.

The hot routes parse raw bodies with orjson and check fields in the core;
these models describe the same contract to readers and client generators.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from service.core.codec import EVENT_TIME_MAX, INT64_MAX

# What the core accepts (service/core/validate.py), so that generated clients and
# fuzzers (schemathesis) send the values the service takes, and only those.
Id = Annotated[int, Field(ge=0, le=INT64_MAX)]
Pair = Annotated[list[Id], Field(min_length=2, max_length=2)]
MAX_IDS = 2000


class BundleRequest(BaseModel):
    """POST /v1/bundle."""

    bundle: str = Field(examples=["live_ranker"])
    user_id: Id = Field(examples=[7])
    room_ids: list[Id] = Field(min_length=1, max_length=MAX_IDS, examples=[[1, 2, 3]])


class Entity(BaseModel):
    """One entity's features (`view.feature` -> value) and per-view status."""

    id: int | list[int]
    features: dict[str, Any]
    status: dict[str, str] = Field(examples=[{"room_stats": "FOUND"}])


class BundleResponse(BaseModel):
    """The user, the rooms in request order (duplicates kept), one pair per room."""

    bundle: str
    user: Entity
    rooms: list[Entity]
    pairs: list[Entity]


class FeaturesRequest(BaseModel):
    """POST /v1/features: ids, or [user_id, room_id] pairs for a pair view."""

    view: str = Field(examples=["room_stats"])
    ids: list[Id | Pair] = Field(min_length=1, max_length=MAX_IDS, examples=[[5, 9]])


class FeaturesResponse(BaseModel):
    """Rows of one view, in request order."""

    view: str
    rows: list[Entity]


class PushRow(BaseModel):
    """One row; features left out keep their stored values."""

    model_config = {"extra": "forbid"}

    id: Id | Pair
    event_time_ms: int = Field(ge=0, le=EVENT_TIME_MAX)
    values: dict[str, Any] = Field(min_length=1, examples=[{"viewer_count": 5}])


class PushRequest(BaseModel):
    """POST /v1/push."""

    model_config = {"extra": "forbid"}

    view: str = Field(examples=["room_stats"])
    rows: list[PushRow] = Field(min_length=1, max_length=10_000)


class PushResponse(BaseModel):
    """Rows written, and rows ignored as no newer than what is stored."""

    view: str
    written: int
    ignored: int


class ErrorBody(BaseModel):
    """Every 4xx and 5xx body."""

    error: str = Field(examples=["InvalidArgument"])
    field: str = Field(examples=["room_ids[3]"])
    reason: str


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a raw-parsed JSON request body.

    Nested models are inlined: pydantic's `#/$defs/...` references would point
    nowhere inside the OpenAPI document.
    """
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, schema.pop("$defs", {}))}},
        }
    }


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node
