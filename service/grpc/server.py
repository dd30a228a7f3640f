"""The gRPC server: livefeat.v1.FeatureService, health and reflection on one grpc.aio port."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service._gen.livefeat.v1 import livefeat_pb2_grpc as pb_grpc
from service.core.service import FeatureService
from service.errors import LivefeatError
from service.grpc.servicer import FeatureServicer

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["FeatureService"].full_name


def address(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class GrpcServer:
    """A grpc.aio server over `core`; build it inside the running event loop.

    `max_message_bytes` bounds a request message: gRPC refuses a larger one with
    RESOURCE_EXHAUSTED before any work. `port` 0 picks a free port (see `.port`).
    Raises RuntimeError if the address cannot be bound.
    """

    def __init__(self, core: FeatureService, host: str, port: int, max_message_bytes: int) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            # Without this, a second process could silently share the port.
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(options=options)
        pb_grpc.add_FeatureServiceServicer_to_server(FeatureServicer(core), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.host = host
        try:
            self.port = self.server.add_insecure_port(address(host, port))
        except RuntimeError as exc:  # grpc says only "Failed to bind to address"
            raise LivefeatError(f"gRPC cannot listen on {address(host, port)}: {exc}") from exc
        self.state = "new"

    def __repr__(self) -> str:
        return f"<GrpcServer {address(self.host, self.port)} {self.state}>"

    async def start(self) -> None:
        """Accept calls; health says SERVING for "" and livefeat.v1.FeatureService."""
        await self.server.start()
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self.state = "serving"

    async def drain(self) -> None:
        """Health says NOT_SERVING from now on (for good); calls are still accepted."""
        await self.health.enter_graceful_shutdown()
        self.state = "draining"

    async def stop(self, grace_s: float | None) -> None:
        """Refuse new calls; let calls in flight finish for up to `grace_s`, then cancel them."""
        self.state = "stopping"
        await self.server.stop(grace_s)
        self.state = "stopped"
