"""Redis faults the store must outlive, against real redis-servers: a cancelled probe
of the circuit breaker, a listener that fails on a message, a publication that fails."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from service.errors import TierError
from service.store import notify
from service.store.feed import ChangeFeed, Publisher
from service.store.redis import RedisOptions, RedisTier
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process
OTHER = b"o" * 16


def test_a_cancelled_probe_does_not_leave_the_circuit_open(redis_server: RedisServer) -> None:
    async def go() -> None:
        options = RedisOptions(redis_server.url, socket_timeout_s=0.1, breaker_failures=1,
                               breaker_open_s=0.2)  # fmt: skip
        tier = RedisTier(options, lambda key: 60_000)
        await tier.put_many([(b"k:1:1", b"\x01" + b"\x00" * 7)])
        os.kill(redis_server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(TierError):
                await tier.get_many([b"k:1:1"])  # times out: the circuit opens
            await asyncio.sleep(0.25)  # half-open: the next call probes
            probe = asyncio.create_task(tier.get_many([b"k:1:1"]))
            await asyncio.sleep(0.02)
            probe.cancel()  # its caller's deadline passed
            await asyncio.gather(probe, return_exceptions=True)
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        deadline = time.monotonic() + 5
        while True:  # the next caller probes, and the circuit closes
            try:
                assert await tier.get_many([b"k:1:1"]) == [b"\x01" + b"\x00" * 7]
                break
            except TierError:
                assert time.monotonic() < deadline, f"circuit still {tier.breaker.state}"
                await asyncio.sleep(0.05)
        await tier.close()

    asyncio.run(go())


class Listener:
    def __init__(self, fail_on: bytes) -> None:
        self.fail_on = fail_on
        self.keys: list[bytes] = []
        self.resyncs = 0

    def absorb(self, items: Any, keys: Any) -> None:
        if self.fail_on in keys:
            raise RuntimeError("a bug in the listener")
        self.keys += keys

    def resync(self) -> None:
        self.resyncs += 1

    def lost(self) -> None:
        pass


async def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_the_feed_goes_on_after_a_message_it_cannot_apply(redis_server: RedisServer) -> None:
    async def go() -> None:
        listener = Listener(fail_on=b"v:1:1")
        feed = ChangeFeed(redis_server.url, listener, b"s" * 16)
        feed.start()
        await asyncio.wait_for(feed.connected.wait(), 5)
        client = aredis.Redis.from_url(redis_server.url)
        publisher = Publisher(client, OTHER)
        await publisher.publish([(b"v:1:1", b"x")])  # the listener fails on this one
        await publisher.publish([(b"v:1:2", b"y")])
        await wait_for(lambda: b"v:1:2" in listener.keys)
        assert listener.resyncs == 2  # the subscription, then the message it lost
        await publisher.close()
        await feed.close()

    asyncio.run(go())


def test_a_publication_that_failed_is_sent_once_redis_is_back(tmp_path: Path) -> None:
    async def go() -> None:
        redis_server = RedisServer(tmp_path)
        try:
            listener = Listener(fail_on=b"-")
            publisher = Publisher(aredis.Redis.from_url(redis_server.url, socket_timeout=0.5),
                                  OTHER, retry_s=0.1)  # fmt: skip
            redis_server.stop()
            await publisher.publish([(b"v:1:%d" % i, b"x") for i in range(3)])  # no raise
            redis_server.restart()
            feed = ChangeFeed(redis_server.url, listener, b"s" * 16)
            feed.start()
            await asyncio.wait_for(feed.connected.wait(), 5)
            await wait_for(lambda: len(listener.keys) == 3)
            assert sorted(listener.keys) == [b"v:1:0", b"v:1:1", b"v:1:2"]
            await publisher.close()
            await feed.close()
        finally:
            redis_server.stop()

    asyncio.run(go())


def test_a_resync_message_reaches_every_listener(redis_server: RedisServer) -> None:
    async def go() -> None:
        listener = Listener(fail_on=b"-")
        feed = ChangeFeed(redis_server.url, listener, b"s" * 16)
        feed.start()
        await asyncio.wait_for(feed.connected.wait(), 5)
        client = aredis.Redis.from_url(redis_server.url)
        await client.publish(notify.CHANNEL, notify.encode_resync(OTHER, 1))
        await wait_for(lambda: listener.resyncs == 2)
        await client.aclose()
        await feed.close()

    asyncio.run(go())
