"""The Redis tier (L2): shared by every replica; a single node or a Redis Cluster.

redis-py's asyncio client with hiredis, on a bounded, blocking connection pool
with short socket and connect timeouts and no retries (the tiered store falls
through to RocksDB instead; a circuit breaker stops paying timeouts while
Redis is down, and redis-py reconnects by itself when it is back).

Read: one MGET per request on a single node; on a cluster, one pipeline per
node, sent concurrently by redis-py's cluster pipeline.
Write: a Lua script compares event times in the stored headers and sets the
value with its view's TTL (storage_ttl_s), atomically, so racing writers can
never leave an older value.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from service import metrics
from service.errors import TierTimeout, TierUnavailable
from service.store.breaker import CircuitBreaker
from service.store.resp import RespReader, RespTimeout
from service.stored import view_prefix

# KEYS[i]: key; ARGV[2i-1]: TTL in ms; ARGV[2i]: value. Event time: the first 6 bytes, LE.
NEWEST_WINS = """
local out = {}
for i, key in ipairs(KEYS) do
  local new = ARGV[2 * i]
  local old = redis.call('GET', key)
  if old and struct.unpack('<I6', old, 1) >= struct.unpack('<I6', new, 1) then
    out[i] = 0
  else
    redis.call('SET', key, new, 'PX', ARGV[2 * i - 1])
    out[i] = 1
  end
end
return out
"""
# Single node: the items travel as one packed argument (<H key length, <Q TTL ms,
# <I value length, key, value)*, which costs the client far less to build and
# send than three arguments per key (measured: 32k rows/s with separate
# arguments, client-bound). Redis Cluster needs declared KEYS (one slot per
# call), so there the script above is used.
NEWEST_WINS_PACKED = """
local blob = ARGV[1]
local pos = 1
local out = {}
while pos <= #blob do
  local klen, ttl, vlen
  klen, ttl, vlen, pos = struct.unpack('<HI8I', blob, pos)
  local key = string.sub(blob, pos, pos + klen - 1)
  local new = string.sub(blob, pos + klen, pos + klen + vlen - 1)
  pos = pos + klen + vlen
  local old = redis.call('GET', key)
  if old and struct.unpack('<I6', old, 1) >= struct.unpack('<I6', new, 1) then
    out[#out + 1] = '0'
  else
    redis.call('SET', key, new, 'PX', ttl)
    out[#out + 1] = '1'
  end
end
return table.concat(out)
"""
# The TTL is a u64 of ms: a u32 overflowed at 49.7 days, and a year is a common
# storage_ttl_s (the registry caps it at 100 years, well inside a Lua number).
_ITEM = struct.Struct("<HQI")
# Bounds how long one script call holds Redis, so that serving replicas' reads do
# not wait long behind a bulk load. Measured: 50 keys take about 0.2 ms, and Redis's
# cost per key is the same from 50 to 400 keys per call; beside a paced load, the
# serving p99 went from 3.0x to 1.7x idle when calls went from 200 keys to 50.
# (Sending the calls in round trips of 4 instead of one pipeline changed nothing
# measurable for serving and cost a full-speed load 25% of its rate.)
SCRIPT_KEYS_PER_CALL = 50
# Redis runs every command a client has pipelined (up to 16 KB of them per read)
# before it turns to another client. Small writes (pushes, a paced load's slices)
# therefore send one script call per round trip, so that a serving read waits for
# at most one call; bulk writes pipeline every call, for throughput.
PIPELINE_FROM_ITEMS = 1_000
CLUSTER_CONCURRENCY = 64  # script calls in flight at once on a cluster


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Connection settings; seconds throughout."""

    url: str
    socket_timeout_s: float = 0.1
    write_timeout_s: float = 1.0
    connect_timeout_s: float = 0.2
    pool_size: int = 32
    pool_wait_s: float = 0.05
    breaker_failures: int = 3
    breaker_open_s: float = 1.0


def pack_write_blobs(
    items: Sequence[tuple[bytes, bytes]], ttl_ms_of: Callable[[bytes], int]
) -> list[bytes]:
    """The ARGV[1] of each NEWEST_WINS_PACKED call that writes `items` (key, value),
    SCRIPT_KEYS_PER_CALL items per call; `ttl_ms_of(key)` is the key's TTL in ms.

    Shared by the service's writes and Spark's executors (service/pipeline/writer.py),
    so that both send Redis the same thing.
    """
    pack = _ITEM.pack
    blobs = []
    for start in range(0, len(items), SCRIPT_KEYS_PER_CALL):
        chunk = items[start : start + SCRIPT_KEYS_PER_CALL]
        blobs.append(b"".join([pack(len(k), ttl_ms_of(k), len(v)) + k + v for k, v in chunk]))
    return blobs


class RedisTier:
    """A Tier over Redis. `ttl_ms_of(key)` gives the TTL of a key's view, in ms."""

    name = "redis"

    def __init__(self, options: RedisOptions, ttl_ms_of: Callable[[bytes], int]) -> None:
        self.options = options
        self.cluster = options.url.startswith(("redis+cluster://", "rediss+cluster://"))
        self._ttl_ms_of = ttl_ms_of
        # Reads on a single node over redis:// take the lean reader (resp.py: a third
        # of redis-py's CPU per MGET); the rest, redis-py.
        self._reader = (
            None
            if self.cluster
            else RespReader.for_url(
                options.url,
                timeout_s=options.socket_timeout_s,
                connect_timeout_s=options.connect_timeout_s,
                max_connections=options.pool_size,
            )
        )
        self._client: Any = (
            None if self._reader else _client(options, self.cluster, options.socket_timeout_s)
        )
        # Writes wait longer than reads (a push is acknowledged only once stored),
        # on connections of their own so that a big load never delays a read.
        self._writer: Any = _client(options, self.cluster, options.write_timeout_s)
        self._sha = hashlib.sha1(NEWEST_WINS.encode()).hexdigest()
        self._sha_packed = hashlib.sha1(NEWEST_WINS_PACKED.encode()).hexdigest()
        self._script_loaded = False
        self.breaker = CircuitBreaker(options.breaker_failures, options.breaker_open_s)
        self._circuit = metrics.TIER_CIRCUIT_OPEN.labels(self.name)

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "node"
        return f"<RedisTier {kind} {_redact(self.options.url)} circuit {self.breaker.state}>"

    async def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        if not self.breaker.allow():
            self._circuit.set(1)
            raise TierUnavailable(self.name, "circuit open after repeated failures")
        try:
            result = await fn()
        except (RedisTimeout, RespTimeout) as exc:
            self._failed()
            raise TierTimeout(self.name, f"{what}: {exc}") from exc
        except Exception as exc:  # redis-py, the socket, or anything else: never a 500
            self._failed()
            raise TierUnavailable(self.name, f"{what}: {type(exc).__name__}: {exc}") from exc
        except BaseException:  # cancelled (caller's deadline, client gone): no verdict
            self.breaker.abandon()
            raise
        self.breaker.success()
        self._circuit.set(0)
        return result

    def _failed(self) -> None:
        self.breaker.failure()
        self._circuit.set(1 if self.breaker.state != "closed" else 0)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One MGET (single node) or one pipeline per node (cluster)."""
        if self._reader is not None:
            return await self._call("get", lambda: self._reader.mget(keys))  # type: ignore[no-any-return, union-attr]

        async def go() -> list[bytes | None]:
            if not self.cluster:
                return list(await self._client.mget(keys))
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            return list(await pipe.execute())

        return await self._call("get", go)  # type: ignore[no-any-return]

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        """Newest event wins, atomically per key (server-side script), with the view's TTL."""

        async def go() -> list[bool]:
            if not self._script_loaded:
                await self._load_scripts()
            try:
                return await self._put(items)
            except NoScriptError:  # Redis restarted or was flushed: load them again
                await self._load_scripts()
                return await self._put(items)

        return await self._call("put", go)  # type: ignore[no-any-return]

    async def _load_scripts(self) -> None:
        await self._writer.script_load(NEWEST_WINS)
        await self._writer.script_load(NEWEST_WINS_PACKED)
        self._script_loaded = True

    async def _put(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        if self.cluster:
            return await self._put_cluster(items)
        blobs = pack_write_blobs(items, self._ttl_ms_of)
        if len(items) < PIPELINE_FROM_ITEMS:
            results = [await self._writer.evalsha(self._sha_packed, 0, blob) for blob in blobs]
        else:
            pipe = self._writer.pipeline(transaction=False)
            for blob in blobs:
                pipe.evalsha(self._sha_packed, 0, blob)
            results = await pipe.execute()
        return [flag == 49 for flags in results for flag in flags]  # 49: b"1"

    async def _put_cluster(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        # The keys of one script call must share a slot (and redis-py's cluster
        # pipeline refuses scripts): one call per slot, CLUSTER_CONCURRENCY at a time.
        by_slot: dict[int, list[int]] = {}
        for i, (key, _) in enumerate(items):
            by_slot.setdefault(key_slot(key), []).append(i)
        written = [False] * len(items)

        async def one(indexes: list[int]) -> None:
            keys = [items[i][0] for i in indexes]
            args: list[Any] = []
            for i in indexes:
                args += (self._ttl_ms_of(items[i][0]), items[i][1])
            result = await self._writer.evalsha(self._sha, len(keys), *keys, *args)
            for i, r in zip(indexes, result, strict=True):
                written[i] = bool(r)

        groups = list(by_slot.values())
        for start in range(0, len(groups), CLUSTER_CONCURRENCY):
            chunk = groups[start : start + CLUSTER_CONCURRENCY]
            results = await asyncio.gather(*(one(g) for g in chunk), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        return written

    async def scan_keys(self, prefix: bytes, batch: int = 10_000) -> AsyncIterator[list[bytes]]:
        """Keys starting with `prefix` (SCAN MATCH; on a cluster, every primary)."""
        pattern = prefix.replace(b"*", b"\\*").replace(b"?", b"\\?") + b"*"
        keys: list[bytes] = []
        try:
            # On the write connections: a scan may take longer than a read may.
            async for key in self._writer.scan_iter(match=pattern, count=batch):
                keys.append(key)
                if len(keys) >= batch:
                    yield keys
                    keys = []
        except (RedisError, OSError) as exc:
            raise TierUnavailable(self.name, f"scan: {exc}") from exc
        if keys:
            yield keys

    async def sync(self) -> None:
        """Nothing to do: Redis's own persistence settings decide."""

    async def ready(self) -> bool:
        """A PING answered (also a half-open breaker's probe)."""
        ping = self._reader.ping if self._reader is not None else self._client.ping
        try:
            await self._call("ping", ping)
        except (TierUnavailable, TierTimeout):
            return False
        return True

    async def close(self) -> None:
        """Close every connection (and the pool we made: redis-py leaves a given pool open)."""
        if self._reader is not None:
            await self._reader.close()
        for client in (self._client, self._writer):
            if client is None:
                continue
            if self.cluster:
                await client.aclose()
            else:
                await client.aclose(close_connection_pool=True)


def _client(options: RedisOptions, cluster: bool, socket_timeout_s: float) -> Any:
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": options.connect_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "client_name": "livefeat",
    }
    if cluster:
        url = options.url.replace("+cluster", "", 1)
        return RedisCluster.from_url(url, max_connections=options.pool_size, **common)
    pool = aredis.BlockingConnectionPool.from_url(
        options.url, max_connections=options.pool_size, timeout=options.pool_wait_s, **common
    )
    return aredis.Redis(connection_pool=pool)


def _redact(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def ttl_by_prefix(prefixes: Mapping[bytes, int]) -> Callable[[bytes], int]:
    """A `ttl_ms_of(key)` for keys `view:version:id...`: the TTL of the key's view prefix."""

    last: list[Any] = [b"\xff", 0]  # the last prefix seen: a batch is mostly one view

    def ttl_ms_of(key: bytes) -> int:
        if key.startswith(last[0]):
            return int(last[1])
        last[0] = view_prefix(key)
        last[1] = prefixes[last[0]]
        return int(last[1])

    return ttl_ms_of
