"""The hot routes skip FastAPI's routing (service/http/hot.py) but keep what the
middleware gives: request ids, metrics, the error bodies, the OpenAPI document."""

from __future__ import annotations

import asyncio
import subprocess
import sys
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


async def call(
    body: dict[str, Any], headers: dict[str, str] | None = None, telemetry: bool = False
) -> httpx.Response:
    app = create_app(FailingCore(), telemetry=telemetry)  # type: ignore[arg-type]
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


TRACED = """
import asyncio, sys
from opentelemetry import trace
sys.path.insert(0, "tests/http")
import test_hot_routes as t

asked = []

class Recording(trace.TracerProvider):  # a configured provider, as an SDK's would be
    def get_tracer(self, *args, **kwargs):
        asked.append(args[0])
        return trace.NoOpTracer()

trace.set_tracer_provider(Recording())
answer = asyncio.run(t.call({"bundle": "nope"}, telemetry=sys.argv[1] == "on"))
assert answer.status_code == 404, answer
print(sorted(set(asked)))
"""


def test_fastapi_traces_requests_only_when_asked() -> None:
    # In a subprocess: OpenTelemetry's global tracer provider can be set once.
    def tracers(telemetry: str) -> str:
        done = subprocess.run([sys.executable, "-c", TRACED, telemetry], capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        return done.stdout.strip()

    assert tracers("off") == "[]"
    assert tracers("on") == "['fastapi']"
