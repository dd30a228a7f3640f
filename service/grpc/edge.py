"""The gRPC edge: the one error table, request metrics, and the caller's deadline.

Every handler of the servicer is wrapped by `edge(route)`, which times the call,
maps livefeat's errors to status codes (looked up along the exception's
`__mro__`, the most specific entry wins), and records
`livefeat_request_duration_seconds` / `livefeat_requests_total` with
transport="grpc". When the servicer has an `admission` (service/core/admission.py),
each call is admitted first, or refused at once with RESOURCE_EXHAUSTED.
Requests refused by gRPC itself (a message over
max_receive_message_length: RESOURCE_EXHAUSTED) never reach a handler.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError

from service import metrics
from service.core.admission import Overloaded
from service.core.deadline import read_budget_s
from service.errors import (
    InvalidArgument,
    LivefeatError,
    NotFound,
    RequestError,
    TierError,
    TooLarge,
)

log = structlog.get_logger("livefeat.grpc")
Code = grpc.StatusCode

CODE_OF: dict[type[Exception], grpc.StatusCode] = {
    NotFound: Code.NOT_FOUND,
    # Too many ids or rows: the caller must change the request, retrying cannot help.
    TooLarge: Code.INVALID_ARGUMENT,
    InvalidArgument: Code.INVALID_ARGUMENT,
    RequestError: Code.INVALID_ARGUMENT,
    TierError: Code.UNAVAILABLE,
    # Too many calls in flight in this process: retrying later (or elsewhere) helps.
    Overloaded: Code.RESOURCE_EXHAUSTED,
    LivefeatError: Code.INTERNAL,
}
FIELD_KEY = "livefeat-field"
REASON_KEY = "livefeat-reason"
RETRY_KEY = "livefeat-retry-after-ms"
MAX_METADATA_CHARS = 1024

# grpc.aio.ServicerContext; grpcio ships no type information.
Context: TypeAlias = Any
S = TypeVar("S")
R = TypeVar("R")
Handler = Callable[[S, Any, Context], Awaitable[R]]


class Malformed:
    """A request message that did not parse (what `parser` gives the handler instead).

    gRPC answers UNKNOWN when a deserializer raises; livefeat answers
    INVALID_ARGUMENT naming `request` (the edge), or `batches[i]` in a stream.
    """

    __slots__ = ("message", "reason")

    def __init__(self, message: str, reason: str) -> None:
        self.message = message
        self.reason = reason

    def error(self, field: str = "request") -> InvalidArgument:
        """The error to answer with."""
        return InvalidArgument(field, f"not a valid {self.message}: {self.reason}")


def parser(message_type: Any) -> Callable[[bytes], Any]:
    """A request deserializer that returns Malformed instead of raising DecodeError."""
    name = message_type.DESCRIPTOR.full_name

    def parse(raw: bytes) -> Any:
        try:
            return message_type.FromString(raw)
        except DecodeError as exc:
            return Malformed(name, str(exc) or "cannot parse")

    return parse


def code_of(exc: Exception) -> grpc.StatusCode:
    """The status code of an exception (the one mapping table)."""
    return next((CODE_OF[c] for c in type(exc).__mro__ if c in CODE_OF), Code.INTERNAL)


def core_timeout(context: Context) -> float | None:
    """Seconds the core may spend on tier reads, from the caller's deadline (None: no deadline)."""
    remaining = context.time_remaining()
    return None if remaining is None else read_budget_s(remaining)


def _ascii(text: str) -> str:
    # Metadata values must be printable ASCII; names in a request can be anything.
    return text.encode("unicode_escape").decode("ascii")[:MAX_METADATA_CHARS]


def error_metadata(exc: Exception) -> tuple[tuple[str, str], ...]:
    """Trailing metadata naming the refused field and the reason (RequestErrors), or
    how long to wait before retrying (Overloaded)."""
    if isinstance(exc, Overloaded):
        return ((RETRY_KEY, str(round(exc.retry_after_s * 1000))),)
    if not isinstance(exc, RequestError):
        return ()
    return ((FIELD_KEY, _ascii(exc.field)), (REASON_KEY, _ascii(exc.reason)))


class _Recorder:
    """Pre-bound metric children of one RPC, per status code (bound on first use)."""

    def __init__(self, route: str) -> None:
        self.route = route
        self._children: dict[grpc.StatusCode, tuple[Any, Any]] = {}
        self._bind(Code.OK)

    def _bind(self, code: grpc.StatusCode) -> tuple[Any, Any]:
        labels = ("grpc", self.route, code.name)
        children = (
            metrics.tally(metrics.REQUEST_SECONDS.labels(*labels)),
            metrics.tally(metrics.REQUESTS.labels(*labels)),
        )
        self._children[code] = children
        return children

    def __call__(self, code: grpc.StatusCode, seconds: float) -> None:
        seconds_child, count_child = self._children.get(code) or self._bind(code)
        seconds_child.observe(seconds)
        count_child.inc()


WRITES = frozenset({"PushFeatures", "PushFeaturesStream"})  # admitted by the ceiling only


def edge(route: str) -> Callable[[Handler[S, R]], Handler[S, R]]:
    """Wrap a servicer method: map errors, record metrics under `route` (the RPC name)."""
    record = _Recorder(route)
    refused = metrics.REFUSED.labels("grpc")
    write = route in WRITES

    def wrap(handler: Handler[S, R]) -> Handler[S, R]:
        @functools.wraps(handler)
        async def call(self: S, request: Any, context: Context) -> R:
            start = time.perf_counter()
            code = Code.OK
            admission = getattr(self, "admission", None)
            try:
                if isinstance(request, Malformed):
                    raise request.error()
                if admission is None:
                    return await handler(self, request, context)
                if write:  # raises Overloaded
                    admission.enter_write()
                    try:
                        return await handler(self, request, context)
                    finally:
                        admission.leave_write()
                admitted = admission.enter()  # raises Overloaded
                try:
                    return await handler(self, request, context)
                finally:
                    admission.leave(admitted)
            except LivefeatError as exc:
                code = code_of(exc)
                if isinstance(exc, Overloaded):
                    refused.inc()
                if code is Code.INTERNAL:
                    log.error("request failed", rpc=route, error=str(exc))
                await context.abort(code, str(exc), error_metadata(exc))
            except grpc.aio.AbortError:  # the handler aborted the call itself
                code = context.code() or Code.UNKNOWN
                raise
            except asyncio.CancelledError:  # the caller went away or its deadline passed
                code = Code.CANCELLED
                raise
            except Exception:
                code = Code.INTERNAL
                log.exception("unexpected error", rpc=route)
                await context.abort(code, "internal error (logged by the server)")
            finally:
                record(code, time.perf_counter() - start)
            raise AssertionError("unreachable: abort raises")  # pragma: no cover

        return call

    return wrap
