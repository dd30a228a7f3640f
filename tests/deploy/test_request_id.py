"""X-Request-Id (service/http/request_id.py): echoed or made, on every answer and in error bodies.

Against the session's real `livefeat serve` (tests/conftest.py), plus the
middleware alone on a bare ASGI app for what a server cannot easily show.
(Here rather than in tests/http: it was added with the operations work.)
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
import structlog

from service.http.request_id import RequestIdMiddleware, new_request_id

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

HEX_ID = re.compile(r"[0-9a-f]{32}")
BUNDLE = {"bundle": "live_ranker", "user_id": 7, "room_ids": [1, 2]}


def test_a_callers_id_comes_back_on_success_and_error(client: httpx.Client) -> None:
    ok = client.post("/v1/bundle", json=BUNDLE, headers={"X-Request-Id": "ranker-42.a:b"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "ranker-42.a:b"
    bad = client.post("/v1/bundle", json={**BUNDLE, "bundle": "nope"},
                      headers={"X-Request-Id": "ranker-43"})  # fmt: skip
    assert bad.status_code == 404
    assert bad.headers["x-request-id"] == "ranker-43"
    assert bad.json()["request_id"] == "ranker-43"
    assert bad.json()["field"] == "bundle"


@pytest.mark.parametrize("sent", [None, "", "x" * 129, "has space", "new\u00e9line"])
def test_without_a_usable_id_the_server_makes_one(client: httpx.Client, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-Id": sent.encode("utf-8")}
    r = client.post("/v1/features", json={"view": "nope", "ids": [1]}, headers=headers)
    assert r.status_code == 404
    rid = r.headers["x-request-id"]
    assert HEX_ID.fullmatch(rid) and r.json()["request_id"] == rid


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [("/v1/bundle", b"{not json", 400), ("/v1/push", {"view": "room_stats", "rows": "x"}, 422),
     ("/v1/bundle", {**BUNDLE, "room_ids": list(range(5000))}, 413)],
)  # fmt: skip
def test_every_error_body_carries_the_id(
    client: httpx.Client, path: str, body: Any, status: int
) -> None:
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = client.post(path, headers={"X-Request-Id": "req-1"}, **kwargs)
    assert r.status_code == status
    assert r.json()["request_id"] == "req-1"


def test_probes_and_metrics_get_an_id_too(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert HEX_ID.fullmatch(client.get(path).headers["x-request-id"]), path


def test_the_id_is_bound_for_logs_while_the_request_runs_and_not_after() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(structlog.contextvars.get_contextvars().get("request_id"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call() -> tuple[httpx.Response, dict[str, Any]]:
        # ASGITransport runs the app in this task: a binding left behind would show here.
        transport = httpx.ASGITransport(app=RequestIdMiddleware(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/", headers={"x-request-id": "abc"})
        return r, structlog.contextvars.get_contextvars()

    r, after = asyncio.run(call())
    assert seen == ["abc"] and r.headers["x-request-id"] == "abc" and r.headers["a"] == "b"
    assert "request_id" not in after


def test_new_ids_differ() -> None:
    assert len({new_request_id() for _ in range(100)}) == 100
