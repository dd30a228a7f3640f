"""The FastAPI app: thin routes over the core, one error table, raw JSON on hot routes."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect

from service import metrics
from service.core.admission import Admission, Overloaded
from service.core.service import FeatureService
from service.errors import (
    InvalidArgument,
    LivefeatError,
    NotFound,
    RequestError,
    TierError,
    TooLarge,
)
from service.http import schemas
from service.http.admission import AdmissionMiddleware
from service.http.console import add_console
from service.http.deadline import BadHeader, deadline_of
from service.http.encode import encode_bundle, encode_features
from service.http.hot import HotRoutes
from service.http.middleware import MetricsMiddleware
from service.http.request_id import RequestIdMiddleware, request_id, with_request_id
from service.served_log import DISABLED, ServedLog

log = logging.getLogger(__name__)
JSON = "application/json"
# Looked up along the exception's __mro__: the most specific entry wins.
STATUS_OF: dict[type[Exception], int] = {
    NotFound: 404,
    TooLarge: 413,
    InvalidArgument: 422,
    RequestError: 400,
    Overloaded: 429,
    TierError: 503,
    LivefeatError: 500,
}


class MalformedBody(InvalidArgument):
    """The body is not a JSON object."""


class ClientGone(LivefeatError):
    """The client hung up before its request body arrived: nobody reads the answer."""


STATUS_OF[MalformedBody] = 400
STATUS_OF[ClientGone] = 499  # nginx's "client closed request": not a server error
STATUS_OF[BadHeader] = 400
_DEBUG_ID = re.compile(r"[0-9]{1,19}(:[0-9]{1,19})?")  # ASCII digits only: int() takes others


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def error_response(exc: Exception, rid: str = "") -> Response:
    """The JSON error body and status for any exception (the one mapping table).

    `rid` is the request's id (RequestIdMiddleware), carried as "request_id".
    """
    status = next((STATUS_OF[c] for c in type(exc).__mro__ if c in STATUS_OF), 500)
    if isinstance(exc, RequestError):
        return _json({**exc.to_dict(), "request_id": rid}, status)
    return _json({"error": type(exc).__name__, "field": "", "reason": str(exc), "request_id": rid},
                 status)  # fmt: skip


async def _body(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge("body", f"{declared} bytes, at most {limit}")
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise ClientGone("the client closed the connection before its body arrived") from None
    if len(raw) > limit:
        raise TooLarge("body", f"{len(raw)} bytes, at most {limit}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody("body", f"not valid JSON: {exc}") from None
    except RecursionError:  # orjson raises this, not JSONDecodeError, near 1,000 levels
        raise MalformedBody("body", "nested too deeply (JSON over ~1,000 levels)") from None
    if not isinstance(body, dict):
        raise MalformedBody("body", "expected a JSON object")
    return body


async def _internal(request: Request, exc: Exception) -> Response:
    """The 500 answer to an exception nobody expected (logged with its traceback)."""
    log.exception("unexpected error", exc_info=exc)
    body = {"error": "Internal", "field": "", "reason": "internal error (logged)",
            "request_id": request_id(request)}  # fmt: skip
    return _json(body, 500)


# FastAPI's OpenTelemetry, all off: without this it asks OpenTelemetry's global
# providers on every request whether an SDK is configured (3.5 us a request).
TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    core: FeatureService,
    max_body_bytes: int = 8 << 20,
    timeout_s: float = 0.0,
    admission: Admission | None = None,
    report_dir: Path | None = None,
    served_log: ServedLog = DISABLED,
    telemetry: bool = False,
) -> FastAPI:
    """The HTTP front end over `core`. `app.state.draining` turns /readyz false.

    `timeout_s` is the default read budget of a request (0: none; the
    X-Livefeat-Timeout-Ms header overrides it); `admission` bounds the requests
    in flight (shared with the gRPC front end; None: unbounded).
    `report_dir`: where `livefeat report` writes; served at /ui/report (console.py).
    `served_log` gets every bundle answer (and samples it). `telemetry`: FastAPI's own
    OpenTelemetry per request (TELEMETRY_OFF unless asked; docs/operations.md).
    """
    app = FastAPI(title="livefeat", version="0.1.0", summary="Online features for live rankers",
                  telemetry=None if telemetry else TELEMETRY_OFF)  # fmt: skip
    app.state.draining = False
    bundle_sizes = metrics.tally(metrics.BATCH_SIZE.labels("/v1/bundle"))  # bound once
    refresh_report_gauges = add_console(app, report_dir)  # /ui, /ui/report

    @app.exception_handler(LivefeatError)
    async def _livefeat_error(request: Request, exc: LivefeatError) -> Response:
        return error_response(exc, request_id(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Starlette runs this outside every middleware: the header is set here.
        return with_request_id(request, await _internal(request, exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        return _json({"error": "InvalidArgument", "field": field, "reason": first["msg"],
                      "request_id": request_id(request)}, 422)  # fmt: skip

    @app.post("/v1/bundle", response_model=schemas.BundleResponse,
              openapi_extra=schemas.body_doc(schemas.BundleRequest))  # fmt: skip
    async def bundle(request: Request) -> Response:
        """Features of one user, its candidate rooms and the user x room pairs."""
        deadline = deadline_of(request, timeout_s)
        body = await _body(request, max_body_bytes)
        result = await core.get_bundle(
            body.get("bundle"), body.get("user_id"), body.get("room_ids"),
            deadline.read_timeout_s(),
        )  # fmt: skip
        bundle_sizes.observe(len(result.room_ids))
        served_log.offer(result, request_id(request))
        return Response(encode_bundle(result), media_type=JSON)

    @app.post("/v1/features", response_model=schemas.FeaturesResponse,
              openapi_extra=schemas.body_doc(schemas.FeaturesRequest))  # fmt: skip
    async def features(request: Request) -> Response:
        """Rows of one view for a list of ids."""
        deadline = deadline_of(request, timeout_s)
        body = await _body(request, max_body_bytes)
        ids, rows = await core.get_features(
            body.get("view"), body.get("ids"), deadline.read_timeout_s()
        )
        return Response(encode_features(rows.plan.name, ids, rows), media_type=JSON)

    @app.post("/v1/push", response_model=schemas.PushResponse,
              openapi_extra=schemas.body_doc(schemas.PushRequest))  # fmt: skip
    async def push(request: Request) -> Response:
        """Write rows durably; older events than what is stored are ignored."""
        body = await _body(request, max_body_bytes)
        unknown = set(body) - {"view", "rows"}
        if unknown:
            raise InvalidArgument(sorted(unknown)[0], "unknown field")
        result = await core.push(body.get("view"), body.get("rows"))
        return _json({"view": body["view"], "written": result.written, "ignored": result.ignored})

    @app.get("/v1/registry")
    async def registry() -> Response:
        """The registry document the service was started with."""
        return _json(core.registry.document)

    @app.get("/debug/entity/{view}/{entity_id}")
    async def debug_entity(view: str, entity_id: str) -> Response:
        """The row in every tier, with its event time and age. Pairs: `user_id:room_id`."""
        if not _DEBUG_ID.fullmatch(entity_id):
            raise InvalidArgument("id", "expected an integer id, or user_id:room_id")
        ids = [int(p) for p in entity_id.split(":")]
        return _json(await core.inspect(view, ids if len(ids) == 2 else ids[0]))

    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        """Readiness: not draining, and a durable tier can answer."""
        if app.state.draining:
            return _json({"status": "draining"}, 503)
        if not await core.store.ready():
            return _json({"status": "no storage tier can answer"}, 503)
        return _json({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        refresh_report_gauges()
        return Response(metrics.scrape(), media_type=CONTENT_TYPE_LATEST)

    # Innermost first: the hot routes skip FastAPI's routing (hot.py) but not the
    # metrics and request-id middleware around them.
    hot = {"/v1/bundle": bundle, "/v1/features": features}
    app.add_middleware(HotRoutes, routes=hot, on_error=_livefeat_error, on_unexpected=_internal)
    if admission is not None:  # outside the hot routes, inside metrics and the request id
        app.add_middleware(AdmissionMiddleware, admission=admission)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)  # added last: outermost, its id on every answer
    return app
