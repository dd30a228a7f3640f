"""The hot routes skip FastAPI's routing (service/http/hot.py) but keep what the
middleware gives: request ids, metrics, the error bodies, the OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from service.core.registry import load_registry
from service.errors import NotFound
from service.http.app import create_app
from service.settings import DEMO_REGISTRY


class FailingCore:
    """A core whose reads fail: with a refused bundle, or with a bug."""

    registry = load_registry(DEMO_REGISTRY)

    async def get_bundle(self, bundle: Any, *_: Any, **__: Any) -> Any:
        if bundle == "bug":
            raise RuntimeError("a bug")
        raise NotFound("bundle", f"no bundle named {bundle!r}")


async def call(body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    app = create_app(FailingCore())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/v1/bundle", json=body, headers=headers or {})


def test_a_refused_hot_request_gets_the_error_body_and_one_request_id() -> None:
    answer = asyncio.run(call({"bundle": "nope"}, {"x-request-id": "abc-1"}))
    assert answer.status_code == 404
    assert answer.json() == {"error": "NotFound", "field": "bundle",
                             "reason": "no bundle named 'nope'", "request_id": "abc-1"}  # fmt: skip
    assert answer.headers.get_list("x-request-id") == ["abc-1"]


def test_a_bug_on_a_hot_route_is_a_json_500_with_one_request_id() -> None:
    answer = asyncio.run(call({"bundle": "bug"}))
    assert answer.status_code == 500
    body = answer.json()
    assert body["error"] == "Internal" and body["request_id"]
    assert answer.headers.get_list("x-request-id") == [body["request_id"]]


def test_the_hot_routes_stay_in_the_openapi_document() -> None:
    app = create_app(FailingCore())  # type: ignore[arg-type]
    paths = app.openapi()["paths"]
    assert "post" in paths["/v1/bundle"] and "post" in paths["/v1/features"]
