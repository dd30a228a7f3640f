"""The HTTP side of admission: 429 with Retry-After, at once, past the in-flight bound.

A plain ASGI middleware placed inside RequestIdMiddleware and MetricsMiddleware,
so that a refusal carries the request's id and is counted like any answer.
Only the routes that do work are bounded; liveness, readiness, metrics and the
docs are always answered, so that a busy replica is not restarted or taken
out of its Service for being busy.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from service import metrics
from service.core.admission import Admission, Overloaded

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Any, Send], Awaitable[None]]
NEVER_REFUSED = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})
WRITES = frozenset({"/v1/push"})  # bounded by the ceiling only (service/core/admission.py)


class AdmissionMiddleware:
    """Refuses requests over `admission`'s bound with 429, a JSON error and Retry-After."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission
        self._refused = metrics.REFUSED.labels("http")

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NEVER_REFUSED:
            await self.app(scope, receive, send)
            return
        admission = self.admission
        write = scope["path"] in WRITES
        try:
            if write:
                admission.enter_write()
            else:
                admitted = admission.enter()
        except Overloaded as exc:
            self._refused.inc()
            await _refuse(scope, send, exc)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            if write:
                admission.leave_write()
            else:
                admission.leave(admitted)


async def _refuse(scope: Scope, send: Send, exc: Overloaded) -> None:
    rid = scope.get("state", {}).get("request_id", "")
    body = orjson.dumps({"error": "Overloaded", "field": "", "reason": str(exc), "request_id": rid})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"%d" % max(1, math.ceil(exc.retry_after_s))),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
