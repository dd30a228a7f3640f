"""A gRPC user for locust: a sync channel made gevent-friendly, and an interceptor that reports.

Locust has no gRPC user of its own. This follows the pattern of locust's ``examples/grpc``:
``grpc.experimental.gevent.init_gevent()`` (after locust's gevent monkey-patching, before any
channel exists) lets blocking gRPC calls yield to the other users' greenlets, and a client
interceptor fires ``environment.events.request`` for every unary call with request_type
"grpc", the full method name as the name, the response time in ms, the response size and the
RpcError, if any, as the exception (a failure in locust's stats).

Calls go through raw multicallables (bytes in, bytes out): requests are serialized once,
before the test, and replies are not parsed, so locust's CPU goes to sending requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User
from locust.env import Environment

grpc_gevent.init_gevent()

__all__ = ["GrpcUser", "LocustInterceptor"]

MAX_MESSAGE_BYTES = 64 << 20


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Reports every unary call to locust as a request of type "grpc"."""

    def __init__(self, environment: Environment) -> None:
        self.env = environment

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        start = time.perf_counter()
        exception: Exception | None = None
        length = 0
        # The sync API returns an outcome that is both a Call and a Future; an RPC error is
        # raised by result(), not by the continuation.
        call = continuation(client_call_details, request)
        try:
            response = call.result()
            length = len(response) if isinstance(response, bytes) else response.ByteSize()
        except grpc.RpcError as exc:
            exception = exc
        method = client_call_details.method
        self.env.events.request.fire(
            request_type="grpc",
            name=method.decode() if isinstance(method, bytes) else method,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            response=None,
            context={},
            exception=exception,
        )
        return call


class GrpcUser(User):
    """A user with its own gRPC channel (own connection) to ``grpc_target()``.

    Subclasses call ``self.unary(method)`` once to get a bytes-in, bytes-out callable; the
    interceptor has already reported an ``RpcError`` it raises.
    """

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # One connection per user, as separate rankers would have (not one shared one).
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._raw_channel = grpc.insecure_channel(self.grpc_target(), options=options)
        self.channel = grpc.intercept_channel(self._raw_channel, LocustInterceptor(environment))

    def grpc_target(self) -> str:
        """host:port of the gRPC server; override it (e.g. from a command-line option)."""
        raise NotImplementedError

    def unary(self, method: str) -> Callable[..., bytes]:
        """A raw unary callable for ``method`` ("/package.Service/Method")."""
        return self.channel.unary_unary(method)  # type: ignore[no-any-return]

    def on_stop(self) -> None:
        self._raw_channel.close()
