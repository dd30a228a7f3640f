"""The hot routes (/v1/bundle, /v1/features) answered without FastAPI's routing.

FastAPI's router, its exception middleware and its endpoint wrapper cost more per
request than our own work on a warm bundle (docs/benchmarks.md). This middleware sits
inside the request-id and metrics middleware, so a hot request still gets its id, its
metrics and the usual error bodies, and calls the very endpoint functions FastAPI
registered (the OpenAPI document is unchanged); every other request goes to FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.errors import LivefeatError
from service.http.request_id import Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Any], Awaitable[Response]]


class HotRoutes:
    """Serves `routes` ({path: endpoint}, POST only) directly; the rest goes to `app`.

    `on_error(request, exc)` answers a LivefeatError, `on_unexpected` anything else
    (both as the app's exception handlers do).
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        routes: Mapping[str, Endpoint],
        on_error: ErrorHandler,
        on_unexpected: ErrorHandler,
    ) -> None:
        self.app = app
        self._routes = dict(routes)
        self._on_error = on_error
        self._on_unexpected = on_unexpected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except LivefeatError as exc:
            response = await self._on_error(request, exc)
        except Exception as exc:
            response = await self._on_unexpected(request, exc)
        await response(scope, receive, send)
