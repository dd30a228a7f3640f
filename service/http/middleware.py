"""Request latency and counts per route and status code, as a plain ASGI middleware.

(Starlette's BaseHTTPMiddleware costs tens of microseconds per request; this does not.)
"""

from __future__ import annotations

import time
from typing import Any

from service import metrics

Scope = dict[str, Any]
_ROUTES = {"/v1/bundle", "/v1/features", "/v1/push", "/v1/registry", "/healthz", "/readyz",
           "/metrics", "/docs", "/openapi.json"}  # fmt: skip


def route_label(path: str) -> str:
    """A bounded label for a path: known routes as they are, never an id."""
    if path in _ROUTES:
        return path
    if path.startswith("/debug/entity/"):
        return "/debug/entity"
    return "other"


class MetricsMiddleware:
    """Records livefeat_request_duration_seconds and livefeat_requests_total for HTTP."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            key = (route_label(scope["path"]), code)
            children = self._children.get(key)
            if children is None:
                labels = ("http", key[0], str(code))
                children = (
                    metrics.tally(metrics.REQUEST_SECONDS.labels(*labels)),
                    metrics.tally(metrics.REQUESTS.labels(*labels)),
                )
                self._children[key] = children
            children[0].observe(time.perf_counter() - start)
            children[1].inc()
