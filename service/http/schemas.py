"""Request and response shapes, for the OpenAPI document at /docs only.

The hot routes parse raw bodies with orjson and check fields in the core;
these models describe the same contract to readers and client generators.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class BundleRequest(BaseModel):
    """POST /v1/bundle."""

    bundle: str = Field(examples=["live_ranker"])
    user_id: int = Field(ge=0, examples=[7])
    room_ids: list[int] = Field(min_length=1, max_length=2000, examples=[[1, 2, 3]])


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
    ids: list[int | list[int]] = Field(min_length=1, max_length=2000, examples=[[5, 9]])


class FeaturesResponse(BaseModel):
    """Rows of one view, in request order."""

    view: str
    rows: list[Entity]


class PushRow(BaseModel):
    """One row; features left out keep their stored values."""

    id: int | list[int]
    event_time_ms: int = Field(ge=0)
    values: dict[str, Any]


class PushRequest(BaseModel):
    """POST /v1/push."""

    view: str = Field(examples=["room_stats"])
    rows: list[PushRow] = Field(min_length=1)


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
    """`openapi_extra` documenting a raw-parsed JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
