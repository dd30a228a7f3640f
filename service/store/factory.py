"""Builds the tiered store from settings: the one place that knows which tiers exist.

Kept apart from service/server.py so that command-line tools (load, demo)
open the store without importing the web and gRPC stacks.
"""

from __future__ import annotations

from pathlib import Path

from service.core.codec import Row
from service.core.registry import Registry
from service.errors import LivefeatError
from service.settings import Settings
from service.store.base import Tier
from service.store.l1 import L1Cache
from service.store.notify import ChangeFeed
from service.store.redis import RedisOptions, RedisTier, ttl_by_prefix
from service.store.rocks import RocksTier
from service.store.tiered import TieredStore


def open_tiers(
    settings: Settings, registry: Registry, *, for_load: bool = False, rocksdb: bool = True
) -> list[Tier]:
    """The durable tiers, in read order: Redis (if configured), RocksDB. Raises DataDirBusy.

    `rocksdb=False` (Kafka consumers given no data dir) opens Redis alone; it needs a
    Redis URL (LivefeatError otherwise).
    """
    if not rocksdb and not settings.redis_url:
        raise LivefeatError("no storage: give a Redis URL, a data dir, or both")
    rocks: list[Tier] = []
    if rocksdb:
        rocks.append(
            RocksTier(
                Path(settings.data_dir) / "rocksdb",
                block_cache_mb=settings.rocksdb_block_cache_mb,
                threads=settings.rocksdb_threads,
                sync=not for_load,  # a load syncs once at the end (RocksTier.flush)
            )
        )
    if not settings.redis_url:
        return rocks
    options = RedisOptions(
        settings.redis_url,
        # A load sends large pipelines; serving wants to fail over fast.
        socket_timeout_s=5.0 if for_load else settings.redis_socket_timeout_s,
        write_timeout_s=5.0 if for_load else settings.redis_write_timeout_s,
        connect_timeout_s=settings.redis_connect_timeout_s,
        pool_size=settings.redis_pool_size,
    )
    ttls = {v.key_prefix: v.storage_ttl_s * 1000 for v in registry.views.values()}
    return [RedisTier(options, ttl_by_prefix(ttls)), *rocks]


def open_store(
    settings: Settings,
    registry: Registry,
    l1: L1Cache[Row],
    *,
    for_load: bool = False,
    rocksdb: bool = True,
) -> TieredStore[Row]:
    """L1 over the durable tiers; with Redis, a change feed that publishes writes
    (started separately, by a serving process, to also receive other replicas')."""
    tiers = open_tiers(settings, registry, for_load=for_load, rocksdb=rocksdb)
    store = TieredStore(l1, tiers)
    if settings.redis_url:
        store.feed = ChangeFeed(settings.redis_url, store)
    pairs = [v.key_prefix for v in registry.views.values() if len(v.key_columns) == 2]
    if pairs and settings.presence_capacity and not for_load:
        store.watch_presence(pairs, settings.presence_capacity)
    return store
