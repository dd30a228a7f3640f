"""Composition: settings -> registry, tiers, store, core, front ends; and the serve loop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import socket
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
import uvloop
from fastapi import FastAPI

from service import metrics, native
from service.core.admission import AdaptiveLimit, Admission, LoopLag
from service.core.codec import Row
from service.core.registry import Registry, load_registry
from service.core.service import FeatureService, Limits
from service.errors import LivefeatError
from service.grpc import GrpcServer
from service.grpc.server import address
from service.http.app import create_app
from service.served_log import open_served_log
from service.settings import Settings
from service.store.factory import open_store
from service.store.l1 import L1Cache

if TYPE_CHECKING:
    from service.workers.worker import WorkerRole, WorkerRuntime

log = structlog.get_logger("livefeat")


def build_core(
    settings: Settings, registry: Registry | None = None, **store_options: Any
) -> FeatureService:
    """A FeatureService over L1 and the configured durable tiers (`store_options`:
    a worker's, see open_store)."""
    registry = registry or load_registry(settings.registry)
    l1: L1Cache[Row] = L1Cache(settings.l1_max_rows, settings.l1_ttl())
    store = open_store(settings, registry, l1, **store_options)
    limits = Limits(max_ids=settings.max_ids, max_push_rows=settings.max_push_rows)
    return FeatureService(registry, store, limits)


# On SIGTERM: readiness goes false at once, and the listeners stay open this long
# so that load balancers see it before connections are refused.
DRAIN_DELAY_S = 1.0
# Then calls and requests in flight may finish for this long.
GRACE_S = 20


class _HttpServer(uvicorn.Server):
    """uvicorn's server without its own signal handlers: `serve` owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing (uvicorn's would stop HTTP alone, without the drain)."""
        yield


class _Signals:
    """SIGTERM and SIGINT on the running loop: the first starts the drain, a second forces."""

    NAMES = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()

    def __enter__(self) -> _Signals:
        loop = asyncio.get_running_loop()
        for sig in self.NAMES:
            loop.add_signal_handler(sig, self._handle, sig)
        return self

    def __exit__(self, *_: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self.NAMES:
            loop.remove_signal_handler(sig)

    def _handle(self, sig: signal.Signals) -> None:
        log.info("signal", signal=sig.name, action="force" if self.stop.is_set() else "drain")
        (self.force if self.stop.is_set() else self.stop).set()


def admission_of(settings: Settings, lag: LoopLag) -> Admission:
    """The in-flight bound both front ends share (docs/operations.md, "Overload")."""
    ceiling = settings.max_in_flight
    adaptive = None
    if settings.admission == "adaptive" and ceiling:
        floor = min(settings.min_in_flight, ceiling)
        adaptive = AdaptiveLimit(ceiling, floor=floor, lag=lag.take)
    return Admission(ceiling, settings.overload_retry_after_s, metrics.tally(metrics.IN_FLIGHT),
                     adaptive=adaptive, limit_gauge=metrics.IN_FLIGHT_LIMIT)  # fmt: skip


async def _run_http(server: uvicorn.Server, sockets: list[socket.socket] | None) -> None:
    try:
        await server.serve(sockets)
    except SystemExit as exc:  # uvicorn exits when it cannot start (e.g. port in use)
        raise LivefeatError("the HTTP server could not start (see the log above)") from exc


async def _first(*aws: Awaitable[Any], timeout_s: float | None = None) -> None:
    """Wait until one of `aws` is done (or `timeout_s` passes); cancel the waits we made."""
    futures = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futures, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future, given in zip(futures, aws, strict=True):
            if future is not given:
                future.cancel()


async def _force_on(event: asyncio.Event, http: uvicorn.Server, rpc: GrpcServer) -> None:
    await event.wait()
    http.force_exit = True
    await rpc.stop(0)


async def serve(
    settings: Settings, drain_delay_s: float = DRAIN_DELAY_S, worker: WorkerRole | None = None
) -> None:
    """Serve HTTP and gRPC on this loop, over one core, until SIGTERM or SIGINT; then drain.

    Drain: readiness false (HTTP /readyz 503, gRPC health NOT_SERVING), wait
    `drain_delay_s`, stop accepting, let calls in flight finish (up to GRACE_S),
    close the store. A second signal cuts the waits short. `worker`: this process
    is one of several sharing the ports and the data dir (service/workers/).
    """
    served = open_served_log(settings.kafka, settings.log_served_topic, settings.log_served_dir,
                             settings.log_served_fraction, settings.log_served_queue)  # fmt: skip
    runtime: WorkerRuntime | None = None if worker is None else await worker.start(settings)
    core = build_core(settings) if runtime is None else runtime.core
    core.store.start()  # change feed, presence filter
    served.start()
    try:
        lag = LoopLag()
        admission = admission_of(settings, lag)
        app = create_app(
            core,
            settings.max_body_bytes,
            timeout_s=settings.http_timeout_s,
            admission=admission,
            report_dir=settings.report_dir,
            served_log=served,
            telemetry=settings.http_telemetry,
        )
        asgi = app if runtime is None else runtime.wrap(app)
        sockets = None
        if runtime is not None:
            from service.workers.worker import reuse_port_socket

            sockets = [reuse_port_socket(settings.http_host, settings.http_port)]
        http = _HttpServer(_http_config(asgi, settings))
        rpc = GrpcServer(
            core, settings.http_host, settings.grpc_port, settings.max_body_bytes,
            admission=admission, served_log=served, reuse_port=worker is not None,
        )  # fmt: skip
        with _Signals() as signals:
            await rpc.start()
            http_task = asyncio.create_task(_run_http(http, sockets))
            force = asyncio.create_task(_force_on(signals.force, http, rpc))
            lag_task = asyncio.create_task(lag.run())
            flush_task = asyncio.create_task(metrics.flush_every())
            _freeze_startup_objects()
            malloc = _keep_big_buffers_in_the_heap()
            log.info("serving", http=address(settings.http_host, settings.http_port),
                     grpc=address(settings.http_host, rpc.port), data_dir=str(settings.data_dir),
                     registry=str(settings.registry),
                     tiers=[t.name for t in core.store.tiers],
                     native=native.IMPLEMENTATION, malloc=malloc,
                     grpc_experiments=os.environ.get("GRPC_EXPERIMENTS"))  # fmt: skip
            try:
                await _first(signals.stop.wait(), http_task)
                app.state.draining = True
                await rpc.drain()
                await _first(signals.force.wait(), http_task, timeout_s=drain_delay_s)
                http.should_exit = True
                await asyncio.gather(rpc.stop(GRACE_S), http_task)
            finally:
                lag_task.cancel()
                flush_task.cancel()
                force.cancel()
                http_task.cancel()
                await rpc.stop(0)
    finally:
        if runtime is not None:  # first: the other workers stop waiting for this one
            await runtime.close()
        await served.close()
        await core.store.close()
        metrics.flush()  # the last updates, before a worker's files are left to its pod
        log.info("stopped")


# glibc's mallopt parameters (malloc.h) and the values serving sets (see below).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 128 << 20


def _keep_big_buffers_in_the_heap() -> str:
    """Serve big allocations from the heap and keep freed heap memory, instead of
    glibc's defaults: a fresh mmap for each allocation over its (moving) threshold and
    a trim of the heap's top after frees. Every HTTP answer is one or two buffers of
    150 KB (100 rooms) to 750 KB (500 rooms); with the defaults each was mapped, faulted
    in page by page and unmapped again. Measured on the standard workload (2-core
    machine, concurrency 8, same sitting): 500 rooms over HTTP 2.1-2.2 -> 1.1-1.3 ms of
    CPU per request, gRPC 500 rooms 1.74 -> 1.54 ms, HTTP 100 rooms 0.47 -> 0.42-0.46.
    The cost: freed heap memory goes back to the system only once more than
    TRIM_THRESHOLD_BYTES of it is free at the top of the heap (docs/operations.md).
    Returns what was done ("glibc" or "default": another C library, left alone)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "default"
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(
        M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES
    )
    return "glibc" if ok else "default"


def _freeze_startup_objects() -> None:
    """Put what start-up made (modules, registry, clients, L1's cache object) out of the
    cyclic collector's sight: it lives as long as the process, and every full collection
    walked it again. Measured over the standard workload (in-process, concurrency 8,
    24,000 bundles): full collections took 107-130 ms each without this, 24 ms with it;
    those pauses were the worst seconds' p99 (docs/benchmarks.md). Reference counting
    still frees frozen objects; only cycles among them would stay."""
    gc.collect()
    gc.freeze()


def _http_config(app: FastAPI | Any, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="none",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=GRACE_S,
    )


def run(
    settings: Settings, drain_delay_s: float = DRAIN_DELAY_S, worker: WorkerRole | None = None
) -> None:
    """Run `serve` on uvloop."""
    uvloop.run(serve(settings, drain_delay_s, worker))
