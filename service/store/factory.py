"""Builds the tiered store from settings: the one place that knows which tiers exist
and wires the store's pieces together (tiered.py draws them).

Kept apart from service/server.py so that command-line tools (load, demo)
open the store without importing the web and gRPC stacks.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aredis

from service import metrics
from service.core.codec import Row
from service.core.registry import Registry
from service.errors import LivefeatError
from service.settings import Settings
from service.store.base import Tier
from service.store.feed import Acks, ChangeFeed, Publisher
from service.store.l1 import L1Cache
from service.store.metered import MeteredTier
from service.store.presence import PresenceFilter
from service.store.presence_index import PresenceIndex
from service.store.readthrough import ReadThrough
from service.store.redis import RedisOptions, RedisTier, ttl_by_prefix
from service.store.replica import FeedSink
from service.store.rocks import RocksTier
from service.store.tiered import TieredStore
from service.store.writebehind import WriteBehind
from service.store.writer import Announcer, Writer

V = TypeVar("V")
# Keys whose last fill the local tier's write-behind remembers (16 B slots, at most half
# full: 8 MB).
LOCAL_FILL_MEMORY = 200_000


def open_tiers(
    settings: Settings,
    registry: Registry,
    *,
    for_load: bool = False,
    rocksdb: bool = True,
    local: Tier | None = None,
) -> list[Tier]:
    """The durable tiers, in read order: Redis (if configured), RocksDB (or `local`, a
    worker's own, service/workers/). Raises DataDirBusy.

    `rocksdb=False` (Kafka consumers given no data dir) opens Redis alone; it needs a
    Redis URL (LivefeatError otherwise).
    """
    if not rocksdb and not settings.redis_url:
        raise LivefeatError("no storage: give a Redis URL, a data dir, or both")
    rocks: list[Tier] = []
    if local is not None:
        rocks.append(local)
    elif rocksdb:
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
    local: Tier | None = None,
    announcer: Announcer | None = None,
    local_fills: bool = True,
) -> TieredStore[Row]:
    """L1 over the durable tiers; with Redis, change notifications (published on every
    write; received once `start`ed, by a serving process). Raises DataDirBusy.

    A worker of several (service/workers/) passes its own RocksDB tier (`local`), how
    the other workers learn its writes without Redis (`announcer`), and whether
    background fills go into its RocksDB (`local_fills`: only the primary's do)."""
    pairs = [v.key_prefix for v in registry.views.values() if v.is_pair]
    watch = pairs if settings.presence_capacity and not for_load else []
    return assemble(
        l1,
        open_tiers(settings, registry, for_load=for_load, rocksdb=rocksdb, local=local),
        redis_url=settings.redis_url,
        presence_prefixes=watch,
        presence_capacity=settings.presence_capacity,
        ack_timeout_s=settings.change_ack_timeout_s,
        announcer=announcer,
        local_fills=local_fills,
    )


def assemble(
    l1: L1Cache[V],
    durable: Sequence[Tier],
    *,
    redis_url: str | None = None,
    presence_prefixes: Sequence[bytes] = (),
    presence_capacity: int = 2_000_000,
    ack_timeout_s: float = 0.25,
    announcer: Announcer | None = None,
    local_fills: bool = True,
) -> TieredStore[V]:
    """Wire the store's pieces over `durable` tiers (read order; the last one local).
    `announcer` tells other readers about writes when there is no Redis; without
    `local_fills`, what other tiers return is not written into the local one."""
    tiers = [MeteredTier(t) for t in durable]
    # The local tier (the last) remembers what it was given (writebehind.py): a row
    # Redis serves again is not written again.
    last = len(tiers) - 1
    fills = (
        [
            WriteBehind(t.name, t.put_many, remember=LOCAL_FILL_MEMORY if i == last else 0)
            for i, t in enumerate(tiers)
        ]
        if len(tiers) > 1
        else []
    )
    if not local_fills:  # fills[i] writes into tiers[i]: the local tier is the last
        fills = fills[:-1]
    presence = None
    if presence_prefixes:
        presence = PresenceIndex(PresenceFilter(presence_prefixes, presence_capacity), tiers)
    reads = ReadThrough(l1, tiers, fills, presence)
    metrics.L1_ROWS.set_function(lambda: len(l1))
    publisher: Announcer | None = announcer
    feed = None
    if redis_url:
        origin = uuid.uuid4().bytes
        client = aredis.Redis.from_url(
            redis_url.replace("+cluster", "", 1), socket_timeout=1.0, socket_connect_timeout=0.5
        )
        acks = Acks(ack_timeout_s)  # enabled only once the feed is started and subscribed
        publisher = Publisher(client, origin, acks=acks)
        sink = FeedSink(reads, presence, fills[-1] if fills and local_fills else None)
        feed = ChangeFeed(redis_url, sink, origin, acks=acks)
    writer = Writer(tiers, reads, presence, publisher)
    return TieredStore(tiers, reads, writer, fills, presence, feed)
