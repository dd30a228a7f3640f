"""The Redis tier against real redis-server processes started by the tests."""

import asyncio
import contextlib
import random
import struct
from pathlib import Path

import pytest

from service.core.codec import event_time_of, header
from service.errors import TierUnavailable
from service.store.base import UNAVAILABLE
from service.store.factory import assemble
from service.store.l1 import L1Cache
from service.store.redis import RedisOptions, RedisTier, ttl_by_prefix
from service.store.rocks import RocksTier
from service.store.tiered import TieredStore
from tests.support.redis_proc import RedisCluster, RedisServer

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

PREFIX = b"room_stats:0000abcd:"
TTL_MS = 60_000


def value(event_time_ms: int, payload: bytes = b"") -> bytes:
    return header(0xABCD, event_time_ms) + payload


def key(i: int) -> bytes:
    return PREFIX + b"%d" % i


def tier(url: str, **kw: float) -> RedisTier:
    return RedisTier(RedisOptions(url, **kw), ttl_by_prefix({PREFIX: TTL_MS}))  # type: ignore[arg-type]


def decode(raw: bytes) -> int:
    return event_time_of(raw)


def test_round_trip_newest_wins_and_ttl(redis_server: RedisServer) -> None:
    async def go() -> None:
        t = tier(redis_server.url)
        try:
            assert await t.put_many([(key(1), value(10)), (key(2), value(20))]) == [True, True]
            assert await t.put_many([(key(1), value(9)), (key(2), value(21))]) == [False, True]
            assert await t.put_many([(key(1), value(10, b"same time"))]) == [False]
            assert await t.get_many([key(1), key(2), key(3)]) == [value(10), value(21), None]
            assert await t.ready()
        finally:
            await t.close()

    asyncio.run(go())
    ttl = redis_server.client().pttl(key(1))
    assert 0 < ttl <= TTL_MS


def test_racing_writers_never_leave_an_older_value(redis_server: RedisServer) -> None:
    times = list(range(1, 401))
    random.Random(7).shuffle(times)

    async def writer(t: RedisTier, chunk: list[int]) -> None:
        for et in chunk:
            await t.put_many([(key(1), value(et, struct.pack("<q", et)))])

    async def go() -> None:
        tiers = [tier(redis_server.url, socket_timeout_s=5.0) for _ in range(4)]
        try:
            await asyncio.gather(*(writer(t, times[i::4]) for i, t in enumerate(tiers)))
        finally:
            for t in tiers:
                await t.close()

    asyncio.run(go())
    stored = redis_server.client().get(key(1))
    assert event_time_of(stored) == 400
    assert stored.endswith(struct.pack("<q", 400))


@pytest.mark.parametrize("n", [999, 2_500])  # one script per round trip; one pipeline
def test_writes_of_many_scripts_keep_each_flag_with_its_key(
    redis_server: RedisServer, n: int
) -> None:
    async def go() -> None:
        t = tier(redis_server.url)
        try:
            first = [(key(i), value(100)) for i in range(n)]
            assert all(await t.put_many(first))
            # Every third key gets a newer value, the others an older one.
            second = [(key(i), value(200 if i % 3 == 0 else 50)) for i in range(n)]
            assert await t.put_many(second) == [i % 3 == 0 for i in range(n)]
            stored = await t.get_many([key(i) for i in range(n)])
            assert [event_time_of(v) for v in stored if v] == [
                200 if i % 3 == 0 else 100 for i in range(n)
            ]
        finally:
            await t.close()

    asyncio.run(go())


def test_cluster_spreads_keys_and_reads_them_back(redis_cluster: RedisCluster) -> None:
    items = [(key(i), value(i)) for i in range(1, 301)]

    async def go() -> None:
        t = tier(redis_cluster.url, socket_timeout_s=5.0, connect_timeout_s=5.0)
        try:
            assert all(await t.put_many(items))
            assert not any(await t.put_many([(k, value(0)) for k, _ in items]))
            got = await t.get_many([k for k, _ in items] + [key(999_999)])
            assert got == [v for _, v in items] + [None]
        finally:
            await t.close()

    asyncio.run(go())
    counts = [n.client().dbsize() for n in redis_cluster.nodes]
    assert sum(counts) >= 300 and sum(1 for c in counts if c) == 3


def test_redis_down_at_start_falls_back_then_reconnects(tmp_path: Path) -> None:
    down = RedisServer(tmp_path)  # take a port, then stop it: nothing listens there
    down.stop()

    async def go() -> None:
        rocks = RocksTier(tmp_path / "db")
        rocks.put_many_sync([(key(1), value(5))])
        redis_tier = tier(down.url, breaker_open_s=0.2)
        store: TieredStore[int] = assemble(L1Cache(0, 1.0), [redis_tier, rocks])
        try:
            for _ in range(5):  # a few failures open the circuit; answers keep coming
                # key 2 is in no tier that answered: UNAVAILABLE, not DEFAULTED
                assert await store.get_many([key(1), key(2)], [decode] * 2) == [5, UNAVAILABLE]
            assert redis_tier.breaker.state != "closed"
            assert await store.ready()  # RocksDB answers
            with pytest.raises(TierUnavailable):
                await redis_tier.get_many([key(1)])
            server = RedisServer(tmp_path, port=down.port)
            try:
                await asyncio.sleep(0.3)  # the breaker half-opens
                for _ in range(20):
                    if await redis_tier.ready():
                        break
                    await asyncio.sleep(0.1)
                assert redis_tier.breaker.state == "closed"
                assert await store.get_many([key(1)], [decode]) == [5]
                await asyncio.sleep(0.2)  # the background fill into Redis
                assert server.client().get(key(1)) == value(5)
            finally:
                server.stop()
        finally:
            await store.close()

    asyncio.run(go())


def test_redis_killed_mid_run_answers_come_from_rocksdb(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)

    async def go() -> None:
        rocks = RocksTier(tmp_path / "db")
        redis_tier = tier(server.url)
        store: TieredStore[int] = assemble(L1Cache(0, 1.0), [redis_tier, rocks])
        try:
            items = [(key(i), value(100 + i)) for i in range(50)]
            await store.put_many(items)
            keys = [k for k, _ in items]
            assert await store.get_many(keys, [decode] * 50) == [100 + i for i in range(50)]
            server.kill()
            for _ in range(10):
                assert await store.get_many(keys, [decode] * 50) == [100 + i for i in range(50)]
        finally:
            await store.close()

    try:
        asyncio.run(go())
    finally:
        server.stop()


def test_a_push_cancelled_mid_write_is_stored_whole_or_not_at_all(
    redis_server: RedisServer,
) -> None:
    """A 200-row write takes 4 script calls: a caller cancelled between them (its client
    SIGKILLed, its deadline passed) must not leave 50, 100 or 150 rows in Redis. Cancelled
    at random points; every batch is then found whole or absent (newest wins makes a
    whole batch the only other outcome)."""
    rng = random.Random(7)
    batches, rows = 40, 200

    async def go() -> list[int]:
        t = tier(redis_server.url)
        store = assemble(L1Cache(1000, 60.0), [t])
        counts = []
        try:
            for b in range(batches):
                keys = [key(10_000 + b * rows + i) for i in range(rows)]
                caller = asyncio.create_task(store.put_many([(k, value(5)) for k in keys]))
                for _ in range(rng.randrange(40)):  # some loop turns: some round trips
                    await asyncio.sleep(0)
                caller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await caller
                stored = await t.get_many(keys)
                counts.append(sum(v is not None for v in stored))
        finally:
            await store.close()
        return counts

    counts = asyncio.run(go())
    assert all(n in (0, rows) for n in counts), counts
    assert rows in counts  # some were cancelled late enough to be stored
