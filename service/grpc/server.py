"""The gRPC server: livefeat.v1.FeatureService, health and reflection on one grpc.aio port."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service.core.admission import Admission
from service.core.service import FeatureService
from service.errors import LivefeatError
from service.grpc.servicer import FeatureServicer, add_to_server
from service.served_log import DISABLED, ServedLog

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["FeatureService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
READY_EVERY_S = 2.0


def address(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class GrpcServer:
    """A grpc.aio server over `core`; build it inside the running event loop.

    `max_message_bytes` bounds a request message: gRPC refuses a larger one with
    RESOURCE_EXHAUSTED before any work. `port` 0 picks a free port (see `.port`).
    Health follows the store, as /readyz does: SERVING while a durable tier can
    answer (asked every `ready_every_s`), NOT_SERVING otherwise and for good
    once draining. `admission` bounds the calls in flight (shared with HTTP; None:
    unbounded). `reuse_port`: share the port with other processes that ask for it
    too (the workers of one pod). Raises LivefeatError if the address cannot be bound.
    """

    def __init__(
        self,
        core: FeatureService,
        host: str,
        port: int,
        max_message_bytes: int,
        ready_every_s: float = READY_EVERY_S,
        admission: Admission | None = None,
        served_log: ServedLog = DISABLED,
        *,
        reuse_port: bool = False,
    ) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            # Off unless asked: a second process could otherwise silently share the port.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
        self.server = grpc.aio.server(options=options)
        add_to_server(FeatureServicer(core, admission, served_log), self.server)
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
        self._store = core.store
        self._ready_every_s = ready_every_s
        self._watch: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<GrpcServer {address(self.host, self.port)} {self.state}>"

    async def start(self) -> None:
        """Accept calls; health (for "" and livefeat.v1.FeatureService) follows the store."""
        await self.server.start()
        await self._check_ready()
        self._watch = asyncio.create_task(self._watch_ready())
        self.state = "serving"

    async def _check_ready(self) -> None:
        ready = await self._store.ready()
        status = SERVING if ready else NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def _watch_ready(self) -> None:
        while True:
            await asyncio.sleep(self._ready_every_s)
            await self._check_ready()

    async def drain(self) -> None:
        """Health says NOT_SERVING from now on (for good); calls are still accepted."""
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        self.state = "draining"

    async def stop(self, grace_s: float | None) -> None:
        """Refuse new calls; let calls in flight finish for up to `grace_s`, then cancel them."""
        if self._watch is not None:
            self._watch.cancel()
        self.state = "stopping"
        await self.server.stop(grace_s)
        self.state = "stopped"
