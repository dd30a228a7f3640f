"""Write a view's Spark DataFrame into Redis (or Redis Cluster) from Spark's executors.

    checks (one Spark job, checks.py) -> refuse before any write, or
    mapInArrow: on each executor, per Arrow batch (spark.sql.execution.arrow.maxRecordsPerBatch
      rows): encode with livefeat's own encoder (service/load.py encode_batch), write with
      the newest-wins script (service/store/redis.py), publish the written keys on the
      change feed (service/store/notify.py), as `livefeat load` does.

What serving replicas see is what a `livefeat load --redis-url` would have written:
the same stored bytes, the same keys and TTLs, newest event wins (a Spark task that is
retried rewrites its rows and changes nothing), the same change notifications. Unlike
`livefeat load`, nothing is written to a RocksDB: a replica's RocksDB keeps what Redis
serves it as it goes (README, "Redis and replicas").

Executors use a synchronous redis-py client: they run no event loop.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from service.core.registry import ViewPlan, parse_registry
from service.errors import LoadError
from service.store.notify import CHANNEL, encode_keys
from service.store.redis import NEWEST_WINS, NEWEST_WINS_PACKED, pack_write_blobs

STATS_SCHEMA = "rows long, written long"
SOCKET_TIMEOUT_S = 30.0  # a bulk pipeline may queue behind others' scripts; Spark retries


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Rows in the DataFrame, written, and ignored as no newer than what Redis held."""

    rows: int
    written: int

    @property
    def ignored(self) -> int:
        return self.rows - self.written


class RedisSink:
    """Newest-wins writes and change notifications over a synchronous client, for one task.

    `url`: redis://host:port/db, or redis+cluster://host:port for a Redis Cluster.
    Raises redis.RedisError (Spark then retries the task).
    """

    def __init__(self, url: str, ttl_ms: int, notify: bool = True) -> None:
        self.cluster = url.startswith(("redis+cluster://", "rediss+cluster://"))
        plain = url.replace("+cluster", "", 1)
        opts: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S, "client_name": "livefeat-spark"}
        self.client: Any = RedisCluster.from_url(plain, **opts) if self.cluster else \
            redis.Redis.from_url(plain, **opts)  # fmt: skip
        self.publisher: Any = redis.Redis.from_url(plain, **opts) if notify else None
        self.ttl_ms = ttl_ms
        self.origin = uuid.uuid4().bytes
        self._sha = hashlib.sha1(NEWEST_WINS.encode()).hexdigest()
        self._sha_packed = hashlib.sha1(NEWEST_WINS_PACKED.encode()).hexdigest()
        self._loaded: set[str] = set()

    def _node(self, name: str, client: Any) -> Any:
        """`client`, with the scripts loaded on it once."""
        if name not in self._loaded:
            client.script_load(NEWEST_WINS)
            client.script_load(NEWEST_WINS_PACKED)
            self._loaded.add(name)
        return client

    def put(self, items: list[tuple[bytes, bytes]]) -> list[bool]:
        """Write `items` (key, stored value), newest event wins; whether each was written."""
        if self.cluster:
            return self._put_cluster(items)
        pipe = self._node("node", self.client).pipeline(transaction=False)
        for blob in pack_write_blobs(items, lambda _key: self.ttl_ms):
            pipe.evalsha(self._sha_packed, 0, blob)
        return [flag == 49 for flags in pipe.execute() for flag in flags]  # 49: b"1"

    def _put_cluster(self, items: list[tuple[bytes, bytes]]) -> list[bool]:
        # A script's keys must share a slot: one call per slot, one pipeline per node.
        by_slot: dict[int, list[int]] = {}
        for i, (key, _) in enumerate(items):
            by_slot.setdefault(key_slot(key), []).append(i)
        pipes: dict[str, tuple[Any, list[list[int]]]] = {}
        for indexes in by_slot.values():
            node = self.client.get_node_from_key(items[indexes[0]][0])
            if node.name not in pipes:
                conn = self._node(node.name, self.client.get_redis_connection(node))
                pipes[node.name] = (conn.pipeline(transaction=False), [])
            pipe, groups = pipes[node.name]
            args: list[Any] = []
            for i in indexes:
                args += (self.ttl_ms, items[i][1])
            pipe.evalsha(self._sha, len(indexes), *[items[i][0] for i in indexes], *args)
            groups.append(indexes)
        written = [False] * len(items)
        for pipe, groups in pipes.values():
            for indexes, flags in zip(groups, pipe.execute(), strict=True):
                for i, flag in zip(indexes, flags, strict=True):
                    written[i] = bool(flag)
        return written

    def publish(self, keys: list[bytes]) -> None:
        """Tell serving replicas which keys changed (keys only, as loads do)."""
        if self.publisher is None or not keys:
            return
        pipe = self.publisher.pipeline(transaction=False)
        for message in encode_keys(self.origin, keys, time.time_ns() // 1_000_000):
            pipe.publish(CHANNEL, message)
        pipe.execute()

    def close(self) -> None:
        """Close the connections."""
        self.client.close()
        if self.publisher is not None:
            self.publisher.close()


_PLANS: dict[tuple[str, str], ViewPlan] = {}  # per executor process: compiled once


def _plan(registry_text: str, view: str) -> ViewPlan:
    key = (hashlib.sha256(registry_text.encode()).hexdigest(), view)
    if key not in _PLANS:
        _PLANS[key] = parse_registry(registry_text, "<registry>").views[view]
    return _PLANS[key]


def write_partition(
    batches: Iterator[pa.RecordBatch], registry_text: str, view: str, url: str, notify: bool
) -> Iterator[pa.RecordBatch]:
    """What an executor does with its partition's Arrow batches: encode, write, publish.
    Yields one (rows, written) batch per input batch."""
    from service.load import encode_batch  # on the executor: its own import

    plan = _plan(registry_text, view)
    sink = RedisSink(url, plan.storage_ttl_s * 1000, notify)
    try:
        for batch in batches:
            items = encode_batch(plan, batch)
            flags = sink.put(items)
            sink.publish([k for (k, _), w in zip(items, flags, strict=True) if w])
            yield pa.RecordBatch.from_pydict({"rows": [len(items)], "written": [sum(flags)]})
    finally:
        sink.close()


def _reason(exc: Exception) -> str:
    """The line of a Spark job's error that says what failed on the executor."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return (named or lines or [type(exc).__name__])[0]


def write_view(df: Any, plan: ViewPlan, registry_text: str, url: str,
               notify: bool = True) -> WriteResult:  # fmt: skip
    """Check `df` (checks.py), then write it into the Redis at `url` from the executors.

    `registry_text` is the registry YAML `plan` was compiled from (executors compile it
    again: a plan does not pickle). Raises LoadError before any write if `df` is refused,
    or if the write fails (some rows may then be written: run it again, newest wins).
    """
    from pyspark.sql import functions as F

    from service.pipeline.checks import check_frame, event_time_ms

    rows = check_frame(df, plan)
    # A file smaller than spark.sql.files.maxPartitionBytes (128 MB) is read as one
    # partition: one task would write it all. Spread it over every executor core.
    cores = df.sparkSession.sparkContext.defaultParallelism
    if df.rdd.getNumPartitions() < cores:
        df = df.repartition(cores)
    columns = [F.col(k).cast("long") for k in plan.key_columns]
    columns += [
        event_time_ms(df).alias("event_time"),
        *(F.col(f.name) for f in plan.codec.features),
    ]
    view = plan.name

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return write_partition(batches, registry_text, view, url, notify)

    try:
        got = df.select(*columns).mapInArrow(run, STATS_SCHEMA).agg(
            F.sum("rows").alias("rows"), F.sum("written").alias("written")).first()  # fmt: skip
    except Exception as exc:  # py4j and pyspark errors, the executor's traceback inside
        raise LoadError(f"view {view!r}: writing to Redis failed: {_reason(exc)}") from exc
    assert got is not None
    written = int(got["written"] or 0)
    if int(got["rows"] or 0) != rows:
        raise LoadError(f"view {view!r}: {rows} rows checked but {got['rows']} written or not")
    return WriteResult(rows, written)
