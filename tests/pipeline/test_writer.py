"""The Spark writer against real redis-servers: the same bytes, TTLs and notifications as
`livefeat load --redis-url`, newest event wins, Redis Cluster, and refusals before any write."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from service.core.registry import Registry
from service.errors import LoadError
from service.pipeline.writer import write_view
from service.store.notify import CHANNEL, decode_keys
from service.workload import WorkloadSpec, write_parquet
from tests.conftest import LIVEFEAT, livefeat_env
from tests.pipeline.conftest import REGISTRY
from tests.support.redis_proc import RedisCluster, RedisServer

pytestmark = pytest.mark.process
SPEC = WorkloadSpec(n_users=400, n_rooms=60, n_pairs=1_500, seed=5)
EVENT_MS = 1_790_000_000_000


@pytest.fixture(scope="module")
def parquet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Feature files of the three demo views, every type of the registry in them."""
    return write_parquet(SPEC, tmp_path_factory.mktemp("features"), EVENT_MS)


def _dump(client: Any) -> dict[bytes, bytes]:
    return {k: client.get(k) for k in client.scan_iter(count=1000)}


def test_writes_what_livefeat_load_writes(spark: Any, registry: Registry, parquet: dict[str, Path],
                                          tmp_path: Path) -> None:  # fmt: skip
    ours, theirs = RedisServer(tmp_path), RedisServer(tmp_path)
    try:
        text = REGISTRY.read_text()
        for view, path in parquet.items():
            got = write_view(spark.read.parquet(str(path)), registry.views[view], text, ours.url)
            assert (got.rows, got.written, got.ignored) == (
                pq.read_metadata(path).num_rows,
            ) * 2 + (0,)
            done = subprocess.run([LIVEFEAT, "load", view, str(path), "--redis-url", theirs.url,
                                   "--data-dir", str(tmp_path / "data")],
                                  capture_output=True, text=True, env=livefeat_env(), timeout=120)  # fmt: skip
            assert done.returncode == 0, done.stderr
        a, b = _dump(ours.client()), _dump(theirs.client())
        assert len(a) == SPEC.n_users + SPEC.n_rooms + SPEC.n_pairs
        assert a == b  # the same keys, the same stored bytes
        for key in list(a)[:50]:  # and the view's TTL (storage_ttl_s), as a load sets it
            view = key.split(b":")[0].decode()
            ttl_s = registry.views[view].storage_ttl_s
            assert ttl_s - 60 < ours.client().ttl(key) <= ttl_s
        again = write_view(spark.read.parquet(str(parquet["room_stats"])),
                           registry.views["room_stats"], text, ours.url)  # fmt: skip
        assert (again.written, again.ignored) == (0, SPEC.n_rooms)  # newest event wins
    finally:
        ours.stop()
        theirs.stop()


def test_publishes_the_written_keys(spark: Any, registry: Registry, parquet: dict[str, Path],
                                    redis_server: RedisServer) -> None:  # fmt: skip
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe(CHANNEL)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    keys: set[bytes] = set()
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                keys.update(decode_keys(message["data"]) or [])

    listener = threading.Thread(target=listen)
    listener.start()
    plan = registry.views["user_room_affinity"]
    write_view(spark.read.parquet(str(parquet["user_room_affinity"])), plan,
               REGISTRY.read_text(), redis_server.url)  # fmt: skip
    stored = set(redis_server.client().scan_iter(count=1000))
    deadline = threading.Event()
    for _ in range(50):
        if keys >= stored:
            break
        deadline.wait(0.1)
    done.set()
    listener.join()
    pubsub.close()
    assert len(stored) == SPEC.n_pairs
    assert keys == stored


def test_redis_cluster(spark: Any, registry: Registry, parquet: dict[str, Path],
                       tmp_path: Path) -> None:  # fmt: skip
    cluster = RedisCluster(tmp_path)
    single = RedisServer(tmp_path)
    try:
        path, plan = parquet["user_profile"], registry.views["user_profile"]
        text = REGISTRY.read_text()
        got = write_view(spark.read.parquet(str(path)), plan, text, cluster.url)
        assert got.written == SPEC.n_users
        write_view(spark.read.parquet(str(path)), plan, text, single.url)
        want = _dump(single.client())
        client = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        try:
            assert {k: client.get(k) for k in want} == want
            assert sum(n.client().dbsize() for n in cluster.nodes) == SPEC.n_users
        finally:
            client.close()
    finally:
        cluster.stop()
        single.stop()


def _frame(spark: Any, registry: Registry, path: Path, column: str, values: list[Any],
           type_: pa.DataType | None = None) -> Any:  # fmt: skip
    """The room file with `column`'s first rows replaced by `values`."""
    table = pq.read_table(path)
    col = table[column].to_pylist()
    col[: len(values)] = values
    i = table.schema.get_field_index(column)
    table = table.set_column(i, column, pa.array(col, type_ or table.schema.field(column).type))
    out = path.with_name(f"bad-{column}.parquet")
    pq.write_table(table, out)
    return spark.read.parquet(str(out))


@pytest.mark.parametrize(("column", "values", "reason"), [
    ("room_id", [None], "null key"),
    ("room_id", [5, -3], "negative id"),
    ("event_time", [2**48], "outside 1970"),
    ("like_rate", [float("nan")], "NaN or infinite"),
    ("engagement_score", [1.0, float("inf")], "NaN or infinite"),
    ("room_embedding", [[0.5] * 31], "not 32 values"),
    ("room_embedding", [[float("nan")] * 32], "NaN, infinite"),
    ("category", ["x" * 65_536], "string longer than 65535"),
])  # fmt: skip
def test_refused_before_any_write(spark: Any, registry: Registry, parquet: dict[str, Path],
                                  redis_server: RedisServer, column: str, values: list[Any],
                                  reason: str) -> None:  # fmt: skip
    path = parquet["room_stats"]
    vector = pa.list_(pa.float32()) if column == "room_embedding" else None
    df = _frame(spark, registry, path, column, values, vector)
    with pytest.raises(LoadError, match=rf"column {column!r}: {reason}.*e\.g\. room_id=") as err:
        write_view(df, registry.views["room_stats"], REGISTRY.read_text(), redis_server.url)
    assert "room_stats" in str(err.value)
    assert redis_server.client().dbsize() == 0  # nothing written


def test_refused_for_a_wrong_type(spark: Any, registry: Registry, parquet: dict[str, Path],
                                  redis_server: RedisServer) -> None:  # fmt: skip
    df = spark.read.parquet(str(parquet["room_stats"]))
    text = df.withColumn("viewer_count", df["viewer_count"].cast("string"))
    with pytest.raises(LoadError, match="column 'viewer_count': expected int64, found string"):
        write_view(text, registry.views["room_stats"], REGISTRY.read_text(), redis_server.url)
    with pytest.raises(LoadError, match="column 'category': missing"):
        write_view(df.drop("category"), registry.views["room_stats"], REGISTRY.read_text(),
                   redis_server.url)  # fmt: skip
    assert redis_server.client().dbsize() == 0


def test_redis_down_is_a_clear_error(spark: Any, registry: Registry, parquet: dict[str, Path],
                                     tmp_path: Path) -> None:  # fmt: skip
    server = RedisServer(tmp_path)
    url = server.url
    server.stop()  # a port nobody listens on now
    df = spark.read.parquet(str(parquet["room_stats"]))
    with pytest.raises(LoadError, match=r"room_stats.*writing to Redis failed"):
        write_view(df, registry.views["room_stats"], REGISTRY.read_text(), url)
