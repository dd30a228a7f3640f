"""Two replicas sharing a real Redis: a push is acknowledged only once the other replica
has applied it (feed.py, barriers), even when that replica is slow to read its messages.
The control run, with acks not awaited, shows the same reader serving the old value."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from service.store.factory import assemble
from service.store.l1 import L1Cache
from service.store.redis import RedisOptions, RedisTier
from service.store.rocks import RocksTier
from service.store.tiered import TieredStore
from service.stored import event_time_of, header
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process
KEY = b"room:00000001:1"


def value(event_time_ms: int) -> bytes:
    return header(1, event_time_ms)


def decode(raw: bytes) -> int:
    return event_time_of(raw)


def replica(redis: RedisServer, path: Path, ack_timeout_s: float) -> TieredStore[int]:
    tiers = [RedisTier(RedisOptions(redis.url), lambda key: 60_000), RocksTier(path)]
    return assemble(L1Cache(100, 60.0), tiers, redis_url=redis.url, ack_timeout_s=ack_timeout_s)


def slow_down(store: TieredStore[Any], delay_s: float) -> None:
    """The replica reads its notifications `delay_s` late (a busy event loop)."""
    feed = store._feed
    assert feed is not None
    apply = feed._apply

    async def late(data: Any) -> None:
        await asyncio.sleep(delay_s)
        await apply(data)

    feed._apply = late  # type: ignore[method-assign]


async def stale_reads(
    redis: RedisServer, tmp: Path, ack_timeout_s: float, delay_s: float, rounds: int
) -> int:
    a, b = replica(redis, tmp / "a", ack_timeout_s), replica(redis, tmp / "b", ack_timeout_s)
    slow_down(b, delay_s)
    for store in (a, b):
        store.start()
        assert store._feed is not None
        await asyncio.wait_for(store._feed.connected.wait(), 5)
    await asyncio.sleep(0.1)  # both listen on their ack channels
    stale = 0
    for t in range(1, rounds + 1):
        await b.get_many([KEY], [decode])  # B caches the value before the push
        await a.put_many([(KEY, value(t))])
        stale += (await b.get_many([KEY], [decode])) != [t]
    for store in (a, b):
        await asyncio.wait_for(store.close(), 30)
    return stale


def test_a_push_waits_until_a_slow_replica_has_applied_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    assert asyncio.run(stale_reads(redis_server, tmp_path / "barrier", 10.0, 0.05, 10)) == 0
    redis_server.client().flushall()  # our own server
    # Control: nobody waits, and B applies each message 1 s late: every read is stale.
    assert asyncio.run(stale_reads(redis_server, tmp_path / "control", 0.0, 1.0, 2)) == 2
