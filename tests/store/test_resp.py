"""The lean Redis reader (service/store/resp.py) against a real redis-server: what it
reads is what redis-py reads, pipelined calls each get their own reply, and a caller
that gives up (cancelled, timed out) never leaves a connection a reply behind."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from service.store.resp import RespError, RespReader, RespTimeout, pack
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process


def run(coro_fn, *args):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn(*args))


def test_for_url_takes_plain_tcp_urls_only() -> None:
    reader = RespReader.for_url("redis://u:p%40ss@h.example:7000/3")
    assert reader is not None
    assert (reader.host, reader.port) == ("h.example", 7000)
    assert b"AUTH" in reader._hello[0] and b"p@ss" in reader._hello[0]
    assert any(b"SELECT" in c and b"3" in c for c in reader._hello)
    plain = RespReader.for_url("redis://localhost")
    assert plain is not None and plain.port == 6379
    for other in ("rediss://h:1/0", "unix:///tmp/r.sock", "redis://h:1/0?socket_timeout=3",
                  "redis+cluster://h:1", "http://h:1"):  # fmt: skip
        assert RespReader.for_url(other) is None, other


def test_pack_mget_is_the_resp_array_redis_expects() -> None:
    assert pack(b"MGET", b"a", b"\r\n\x00") == b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$3\r\n\r\n\x00\r\n"


VALUES = st.binary(min_size=0, max_size=300) | st.sampled_from(
    [b"", b"\r\n", b"$-1\r\n", b"*2\r\n", b"\x00" * 8, "é日本\U0001f600".encode() * 50]
)


@settings(max_examples=40, deadline=None)
@given(items=st.dictionaries(st.binary(min_size=1, max_size=40), VALUES, max_size=60),
       absent=st.lists(st.binary(min_size=1, max_size=40), max_size=20))  # fmt: skip
def test_mget_reads_what_redis_py_reads(shared_redis: RedisServer, items, absent) -> None:  # type: ignore[no-untyped-def]
    client = shared_redis.client()
    client.flushdb()
    if items:
        client.mset(items)
    keys = list(items) + [k for k in absent if k not in items]
    random.shuffle(keys)

    async def go() -> list[bytes | None]:
        reader = RespReader.for_url(shared_redis.url)
        assert reader is not None
        try:
            return await reader.mget(keys) if keys else []
        finally:
            await reader.close()

    got = run(go)
    assert got == (client.mget(keys) if keys else [])
    assert got == [items.get(k) for k in keys]


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path_factory.mktemp("resp"))
    yield server
    server.stop()


def test_large_values_and_many_keys(redis_server: RedisServer) -> None:
    client = redis_server.client()
    big = os.urandom(4 << 20)
    many = {b"k%d" % i: os.urandom(i % 700) for i in range(5000)}
    client.set(b"big", big)
    client.mset(many)

    async def go() -> None:
        reader = RespReader.for_url(redis_server.url, max_connections=1)
        assert reader is not None
        assert await reader.mget([b"big", b"none"]) == [big, None]
        assert await reader.mget(list(many)) == list(many.values())
        await reader.close()

    run(go)


def test_concurrent_calls_are_pipelined_and_each_gets_its_own_reply(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    client.mset({b"n%d" % i: b"v%d" % i for i in range(2000)})
    rng = random.Random(7)
    asks = [[b"n%d" % rng.randrange(2200) for _ in range(rng.randrange(1, 50))] for _ in range(400)]

    async def go() -> list[list[bytes | None]]:
        reader = RespReader.for_url(redis_server.url, max_connections=3)
        assert reader is not None
        try:
            got = await asyncio.gather(*(reader.mget(a) for a in asks))
            assert len(reader._open) <= 3
            return got
        finally:
            await reader.close()

    for keys, got in zip(asks, run(go), strict=True):
        assert got == [None if int(k[1:]) >= 2000 else b"v" + k[1:] for k in keys]


def test_a_caller_that_gives_up_leaves_no_reply_behind(redis_server: RedisServer) -> None:
    """The redis-py #2624 family: a cancelled call must not hand its reply to the next."""
    client = redis_server.client()
    client.mset({b"a": b"A", b"b": b"B"})

    async def go() -> None:
        reader = RespReader.for_url(redis_server.url, max_connections=1, timeout_s=5.0)
        assert reader is not None
        assert await reader.mget([b"a"]) == [b"A"]  # connected
        os.kill(redis_server.pid, signal.SIGSTOP)
        try:
            first = asyncio.create_task(reader.mget([b"a"]))
            await asyncio.sleep(0.05)
            first.cancel()
            second = asyncio.create_task(reader.mget([b"b"]))
            await asyncio.sleep(0.05)
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        assert await second == [b"B"]
        assert await reader.mget([b"a", b"b"]) == [b"A", b"B"]
        assert first.cancelled()
        await reader.close()

    run(go)


def test_no_answer_in_time_fails_the_queued_calls_then_reconnects(
    redis_server: RedisServer,
) -> None:
    redis_server.client().set(b"a", b"A")

    async def go() -> None:
        reader = RespReader.for_url(redis_server.url, max_connections=1, timeout_s=0.1)
        assert reader is not None
        assert await reader.mget([b"a"]) == [b"A"]
        os.kill(redis_server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                reader.mget([b"a"]), reader.mget([b"a"]), return_exceptions=True
            )
            assert time.monotonic() - started < 1.0
            assert isinstance(results[0], RespTimeout)
            assert isinstance(results[1], RespError)
            assert reader._open == []
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        assert await reader.mget([b"a"]) == [b"A"]  # a new connection
        await reader.close()

    run(go)


def test_redis_gone_and_back(redis_server: RedisServer) -> None:
    async def go() -> None:
        reader = RespReader.for_url(redis_server.url, timeout_s=1.0)
        assert reader is not None
        assert await reader.ping()
        redis_server.kill()
        with pytest.raises(RespError):
            await reader.mget([b"a"])
        with pytest.raises(RespError, match="cannot connect"):
            await reader.mget([b"a"])
        redis_server.restart()
        redis_server.client().set(b"a", b"back")
        assert await reader.mget([b"a"]) == [b"back"]
        await reader.close()
        with pytest.raises(RespError, match="closed"):
            await reader.mget([b"a"])

    run(go)


def test_user_password_and_database_from_the_url(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.execute_command("ACL", "SETUSER", "reader", "on", ">s3cr:t@", "~*", "+@all")
    redis.Redis(port=redis_server.port, db=3).set(b"k", b"in db 3")
    client.set(b"k", b"in db 0")
    base = f"127.0.0.1:{redis_server.port}"

    async def go() -> None:
        good = RespReader.for_url(f"redis://reader:s3cr%3At%40@{base}/3")
        assert good is not None
        assert await good.mget([b"k"]) == [b"in db 3"]
        await good.close()
        bad = RespReader.for_url(f"redis://reader:wrong@{base}/0")
        assert bad is not None
        with pytest.raises(RespError, match="WRONGPASS"):
            await bad.mget([b"k"])
        await bad.close()

    run(go)


def test_an_error_reply_is_raised_not_returned(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.execute_command("ACL", "SETUSER", "some", "on", ">pw", "~a*", "+@all")
    client.set(b"a1", b"yes")
    base = f"127.0.0.1:{redis_server.port}"

    async def go() -> None:
        reader = RespReader.for_url(f"redis://some:pw@{base}/0", max_connections=1)
        assert reader is not None
        with pytest.raises(RespError, match="NOPERM"):
            await reader.mget([b"a1", b"b1"])
        assert reader._open  # an error reply leaves the connection in order
        assert await reader.mget([b"a1"]) == [b"yes"]
        await reader.close()
        client.config_set("requirepass", "pw")
        anonymous = RespReader.for_url(redis_server.url)  # refused at the handshake
        assert anonymous is not None
        with pytest.raises(RespError, match="NOAUTH"):
            await anonymous.mget([b"a1"])
        assert anonymous._open == []
        await anonymous.close()

    run(go)


def test_nothing_listening(tmp_path: Path) -> None:
    from tests.support.redis_proc import free_port

    async def go() -> None:
        reader = RespReader("127.0.0.1", free_port(), connect_timeout_s=0.5)
        with pytest.raises(RespError, match="cannot connect"):
            await reader.mget([b"k"])

    run(go)
