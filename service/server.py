"""Composition: settings -> registry, tiers, store, core, front ends; and the serve loop."""

from __future__ import annotations

from pathlib import Path

import structlog
import uvicorn
import uvloop

from service.core.codec import Row
from service.core.registry import Registry, load_registry
from service.core.service import FeatureService, Limits
from service.http.app import create_app
from service.settings import Settings
from service.store.base import Tier
from service.store.l1 import L1Cache
from service.store.redis import RedisOptions, RedisTier, ttl_by_prefix
from service.store.rocks import RocksTier
from service.store.tiered import TieredStore

log = structlog.get_logger("livefeat")


def open_tiers(settings: Settings, registry: Registry, *, for_load: bool = False) -> list[Tier]:
    """The durable tiers, in read order: Redis (if configured), RocksDB. Raises DataDirBusy."""
    rocks = RocksTier(
        Path(settings.data_dir) / "rocksdb",
        block_cache_mb=settings.rocksdb_block_cache_mb,
        threads=settings.rocksdb_threads,
        sync=not for_load,  # a load syncs once at the end (RocksTier.flush)
    )
    if not settings.redis_url:
        return [rocks]
    options = RedisOptions(
        settings.redis_url,
        # A load sends large pipelines; serving wants to fail over fast.
        socket_timeout_s=5.0 if for_load else settings.redis_socket_timeout_s,
        connect_timeout_s=settings.redis_connect_timeout_s,
        pool_size=settings.redis_pool_size,
    )
    ttls = {v.key_prefix: v.storage_ttl_s * 1000 for v in registry.views.values()}
    return [RedisTier(options, ttl_by_prefix(ttls)), rocks]


def build_core(settings: Settings, registry: Registry | None = None) -> FeatureService:
    """A FeatureService over L1 and the configured durable tiers."""
    registry = registry or load_registry(settings.registry)
    l1: L1Cache[Row] = L1Cache(settings.l1_max_rows, settings.l1_ttl_s)
    store = TieredStore(l1, open_tiers(settings, registry))
    limits = Limits(max_ids=settings.max_ids, max_push_rows=settings.max_push_rows)
    return FeatureService(registry, store, limits)


async def serve(settings: Settings) -> None:
    """Serve HTTP until SIGINT or SIGTERM, then drain and close the store."""
    core = build_core(settings)
    app = create_app(core, settings.max_body_bytes)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="none",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=20,
    )
    server = uvicorn.Server(config)
    log.info("serving", http=f"{settings.http_host}:{settings.http_port}",
             data_dir=str(settings.data_dir), registry=str(settings.registry),
             tiers=[t.name for t in core.store.tiers])  # fmt: skip
    try:
        await server.serve()
    finally:
        app.state.draining = True
        await core.store.close()
        log.info("stopped")


def run(settings: Settings) -> None:
    """Run `serve` on uvloop."""
    uvloop.run(serve(settings))
