"""`livefeat load VIEW FILE --data-dir D` through the real CLI, in a subprocess.

Valid files come from the standard workload generator (WorkloadSpec.small());
bad ones are those files with one column broken. What the data dir holds
afterwards is read with RocksTier.scan once the CLI has exited.

A CLI process costs one to two CPU seconds (imports), so the loads that each
go into their own fresh data dir (every refused file, and a few good ones) are
run together, concurrently, by one session fixture; each test then checks its
own run. Tests that load several times into one data dir run on their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from service.core.registry import ViewPlan, load_registry
from service.settings import DEMO_REGISTRY
from service.store.rocks import RocksTier
from service.workload import WorkloadSpec, write_parquet

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

LIVEFEAT = str(Path(sys.executable).with_name("livefeat"))
PLANS = load_registry(DEMO_REGISTRY).views
ROOM = "room_stats"
PAIR = "user_room_affinity"
EVENT_TIME_MS = time.time_ns() // 1_000_000 - 60_000
SPEC = WorkloadSpec.small()
CONCURRENT_LOADS = 4

Done = subprocess.CompletedProcess[str]


def load(data_dir: Path, view: str, path: Path, *more: str) -> Done:
    """Run `livefeat load` and return what it did."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEFEAT_")}
    return subprocess.run(
        [LIVEFEAT, "load", view, str(path), "--data-dir", str(data_dir), *more],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def snapshot(data_dir: Path, view: str) -> dict[bytes, bytes]:
    """Every stored (key, value) of `view` in the data dir (no process may hold it)."""
    rocks_dir = data_dir / "rocksdb"
    if not rocks_dir.exists():
        return {}
    tier = RocksTier(rocks_dir, block_cache_mb=8, threads=1)
    try:
        return dict(tier.scan(PLANS[view].key_prefix))
    finally:
        tier.close_sync()


def decoded(plan: ViewPlan, stored: dict[bytes, bytes]) -> dict[bytes, tuple[int, dict[str, Any]]]:
    return {k: plan.codec.decode_values(v) for k, v in stored.items()}


def room_key(room_id: int) -> bytes:
    return PLANS[ROOM].key(room_id)


def replace(table: pa.Table, name: str, column: Any) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


def write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="session")
def workload(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small workload's Parquet files, one per view (never modified)."""
    return write_parquet(SPEC, tmp_path_factory.mktemp("workload"), EVENT_TIME_MS)


# --- ways to break a good file -------------------------------------------------------------

Breaker = Callable[[pa.Table], pa.Table]


def _drop(name: str) -> Breaker:
    return lambda t: t.drop_columns([name])


def _cast(name: str, to: pa.DataType) -> Breaker:
    return lambda t: replace(t, name, pc.cast(t.column(name), to))


def _column(name: str, make: Callable[[int], pa.Array]) -> Breaker:
    return lambda t: replace(t, name, make(t.num_rows))


def _set_row(name: str, row: int, value: Any) -> Breaker:
    def change(t: pa.Table) -> pa.Table:
        values = t.column(name).to_pylist()
        values[row] = value
        return replace(t, name, pa.array(values, t.schema.field(name).type))

    return change


def _vectors_of(dim: int) -> Breaker:
    def change(t: pa.Table) -> pa.Table:
        flat = pc.list_flatten(t.column("room_embedding")).combine_chunks()
        cut = flat.to_numpy().reshape(t.num_rows, -1)[:, :dim].ravel()
        return replace(t, "room_embedding", pa.FixedSizeListArray.from_arrays(pa.array(cut), dim))

    return change


def _one_short_vector(row: int) -> Breaker:
    def change(t: pa.Table) -> pa.Table:
        vectors = t.column("room_embedding").to_pylist()
        vectors[row] = vectors[row][:-1]
        return replace(t, "room_embedding", pa.array(vectors, pa.list_(pa.float32())))

    return change


def _uint64_row(name: str, row: int, value: int) -> Breaker:
    """The column as uint64 (valid values kept), with `value` at `row`."""

    def change(t: pa.Table) -> pa.Table:
        values = t.column(name).cast(pa.int64()).to_pylist()
        values[row] = value
        return replace(t, name, pa.array(values, pa.uint64()))

    return change


def _null_in_vector(row: int) -> Breaker:
    def change(t: pa.Table) -> pa.Table:
        vectors = t.column("room_embedding").to_pylist()
        vectors[row] = [None, *vectors[row][1:]]
        return replace(t, "room_embedding", pa.array(vectors, pa.list_(pa.float32())))

    return change


# --- the loads that each go into a fresh data dir, run concurrently ------------------------


@dataclass(frozen=True)
class Run:
    """One `livefeat load` into a fresh data dir: the view, the file (made from the workload)."""

    view: str
    breaks: Breaker | None = None  # None: the workload's own file
    rows: int | None = None  # only the first rows of the file
    file: str | None = None  # instead: write this text as the "Parquet" file
    args: tuple[str, ...] = ()
    source: str | None = None  # the workload file to start from, if not the view's

    def make_file(self, workload: dict[str, Path], where: Path) -> Path:
        path = where / "input.parquet"
        if self.file is not None:
            path.write_text(self.file)
            return path
        table = pq.read_table(workload[self.source or self.view])
        table = table.slice(0, self.rows)
        return write(self.breaks(table) if self.breaks else table, path)


@dataclass(frozen=True)
class Loaded:
    """A run's data dir and outcome."""

    data_dir: Path
    done: Done


# Small write batches: a bad row late in a file must still refuse the whole file.
BATCH = ("--batch-rows", "50")

REFUSED: dict[str, tuple[Run, str]] = {
    # name: (the run, what the message must name: the column, the file or the view)
    "missing-key-column": (Run(ROOM, _drop("room_id"), args=BATCH), "'room_id'"),
    "key-column-strings": (Run(ROOM, _cast("room_id", pa.string()), args=BATCH), "'room_id'"),
    "null-key": (Run(ROOM, _set_row("room_id", 150, None), args=BATCH), "'room_id'"),
    "negative-id": (Run(ROOM, _set_row("room_id", 170, -7), args=BATCH), "'room_id'"),
    "missing-feature-column": (Run(ROOM, _drop("category"), args=BATCH), "'category'"),
    "int-feature-as-strings": (
        Run(ROOM, _cast("viewer_count", pa.string()), args=BATCH),
        "'viewer_count'",
    ),
    "vector-wrong-dim": (Run(ROOM, _vectors_of(16), args=BATCH), "'room_embedding'"),
    "one-vector-too-short": (Run(ROOM, _one_short_vector(190), args=BATCH), "'room_embedding'"),
    "missing-event-time": (Run(ROOM, _drop("event_time"), args=BATCH), "'event_time'"),
    "pair-negative-room_id": (Run(PAIR, _set_row("room_id", 4_999, -1), args=BATCH), "'room_id'"),
    "not-parquet": (Run(ROOM, file="room_id,viewer_count\n1,2\n"), "input.parquet"),
    # Refused by push, so refused by load (before any write): the stored length is 16 bits.
    "string-over-65535-bytes": (
        Run(ROOM, _set_row("category", 180, "\u00e9" * 32_768), args=BATCH),
        "'category': row 180: string of 65536 bytes",
    ),
    # uint64 values over 2**63-1 would wrap to negative ids or values when stored.
    "uint64-id-over-int64": (
        Run(ROOM, _uint64_row("room_id", 160, 2**63), args=BATCH),
        "'room_id': row 160: id 9223372036854775808",
    ),
    "uint64-pair-user-over-int64": (
        Run(PAIR, _uint64_row("user_id", 4_000, 2**64 - 1), args=BATCH),
        "'user_id': row 4000",
    ),
    "uint64-feature-over-int64": (
        Run(ROOM, _uint64_row("viewer_count", 140, 2**63 + 5), args=BATCH),
        "'viewer_count': row 140: value 9223372036854775813",
    ),
    "uint64-event-time-over-int64": (
        Run(ROOM, _uint64_row("event_time", 120, 2**63), args=BATCH),
        "'event_time': row 120",
    ),
    "null-inside-a-vector": (Run(ROOM, _null_in_vector(110), args=BATCH), "'room_embedding'"),
    "unknown-view": (Run("room_statz", source=ROOM), "room_statz"),
}

TIMESTAMP_US = "event-time-timestamp-us"
NON_FINITE = "non-finite-double"
PAIRS = "pair-view"


def _microsecond_timestamps(n: int) -> pa.Array:
    """EVENT_TIME_MS + i ms, plus 123 us: not a whole number of milliseconds."""
    return pa.array([(EVENT_TIME_MS + i) * 1000 + 123 for i in range(n)], pa.timestamp("us"))


def _non_finite(n: int) -> pa.Array:
    return pa.array([float("nan"), float("inf"), 1.0][:n], pa.float64())


ACCEPTED: dict[str, Run] = {
    PAIRS: Run(PAIR, args=("--batch-rows", "1000")),
    # docs/design.md: event_time is "timestamp or int ms"; a microsecond timestamp is a timestamp.
    TIMESTAMP_US: Run(ROOM, _column("event_time", _microsecond_timestamps), rows=5),
    NON_FINITE: Run(ROOM, _column("gift_value_1m", _non_finite), rows=3),
}


@pytest.fixture(scope="session")
def single_loads(
    workload: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Loaded]:
    """Every run of REFUSED and ACCEPTED, each into its own fresh data dir, done concurrently."""
    root = tmp_path_factory.mktemp("single-loads")
    runs = {name: run for name, (run, _) in REFUSED.items()} | ACCEPTED
    jobs = {}
    for name, run in runs.items():
        where = root / name
        where.mkdir()
        jobs[name] = (where / "data", run.view, run.make_file(workload, where), run.args)
    with ThreadPoolExecutor(CONCURRENT_LOADS) as pool:
        futures = {name: pool.submit(load, d, v, f, *a) for name, (d, v, f, a) in jobs.items()}
        return {name: Loaded(jobs[name][0], f.result()) for name, f in futures.items()}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_with_exit_2_naming_the_culprit_and_nothing_written(
    single_loads: dict[str, Loaded], name: str
) -> None:
    run, names = REFUSED[name]
    loaded = single_loads[name]
    done = loaded.done
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert names in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert snapshot(loaded.data_dir, run.view if run.view in PLANS else ROOM) == {}


def test_load_pair_view(single_loads: dict[str, Loaded], workload: dict[str, Path]) -> None:
    loaded = single_loads[PAIRS]
    assert loaded.done.returncode == 0, loaded.done.stderr
    assert f"{SPEC.n_pairs} written, 0 ignored" in loaded.done.stdout, loaded.done.stdout
    src = pq.read_table(workload[PAIR]).slice(17, 1).to_pylist()[0]
    stored = decoded(PLANS[PAIR], snapshot(loaded.data_dir, PAIR))
    assert len(stored) == SPEC.n_pairs
    event_time, values = stored[PLANS[PAIR].key(src["user_id"], src["room_id"])]
    assert event_time == EVENT_TIME_MS
    assert values == {k: src[k] for k in ("watch_sec_30d", "gifts_30d", "last_visit_age_s")}
    assert snapshot(loaded.data_dir, ROOM) == {}  # only the view named was written


def test_timestamp_event_time_with_sub_ms_precision(single_loads: dict[str, Loaded]) -> None:
    loaded = single_loads[TIMESTAMP_US]
    assert loaded.done.returncode == 0, loaded.done.stderr
    stored = decoded(PLANS[ROOM], snapshot(loaded.data_dir, ROOM))
    assert [stored[room_key(r)][0] for r in range(1, 6)] == [EVENT_TIME_MS + i for i in range(5)]


def test_non_finite_double_is_not_stored(single_loads: dict[str, Loaded]) -> None:
    """Push refuses NaN and infinities ("expected a finite number"); a load must not store them.

    Either the file is refused (exit 2, naming the column, nothing written) or the
    values are replaced by finite ones; today NaN and inf are stored and served as null.
    """
    loaded = single_loads[NON_FINITE]
    if loaded.done.returncode == 2:
        assert "'gift_value_1m'" in loaded.done.stderr, loaded.done.stderr
        assert snapshot(loaded.data_dir, ROOM) == {}
        return
    assert loaded.done.returncode == 0, loaded.done.stderr
    stored = decoded(PLANS[ROOM], snapshot(loaded.data_dir, ROOM))
    served = [stored[room_key(room)][1]["gift_value_1m"] for room in (1, 2, 3)]
    assert all(isinstance(v, float) for v in served), served


# --- several loads into one data dir -------------------------------------------------------


def test_load_then_load_again_changes_nothing(workload: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = load(data, ROOM, workload[ROOM], "--batch-rows", "64")  # several write batches
    assert first.returncode == 0, first.stderr
    assert f"{SPEC.n_rooms} written, 0 ignored" in first.stdout, first.stdout
    before = snapshot(data, ROOM)
    assert set(before) == {room_key(i) for i in range(1, SPEC.n_rooms + 1)}

    table = pq.read_table(workload[ROOM]).to_pylist()
    stored = decoded(PLANS[ROOM], before)
    for src in (table[0], table[99], table[-1]):
        event_time, values = stored[room_key(src["room_id"])]
        assert event_time == src["event_time"] == EVENT_TIME_MS
        for name in ("viewer_count", "gift_value_1m", "category", "quality_score"):
            assert values[name] == src[name], name
        assert values["room_embedding"] == pytest.approx(src["room_embedding"])

    second = load(data, ROOM, workload[ROOM])
    assert second.returncode == 0, second.stderr
    assert f"0 written, {SPEC.n_rooms} ignored" in second.stdout, second.stdout
    assert snapshot(data, ROOM) == before


def test_older_rows_do_not_overwrite_newer_do(workload: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert load(data, ROOM, workload[ROOM]).returncode == 0
    before = decoded(PLANS[ROOM], snapshot(data, ROOM))

    # Rooms 1..10 at an older event time, rooms 11..20 at a newer one, all with new values.
    table = pq.read_table(workload[ROOM]).slice(0, 20)
    times = [EVENT_TIME_MS - 5_000] * 10 + [EVENT_TIME_MS + 5_000] * 10
    table = replace(table, "event_time", pa.array(times, pa.int64()))
    table = replace(table, "viewer_count", pa.array([900_000 + i for i in range(20)], pa.int64()))
    table = replace(table, "category", pa.array(["second-file"] * 20, pa.string()))
    done = load(data, ROOM, write(table, tmp_path / "second.parquet"))
    assert done.returncode == 0, done.stderr
    assert "10 written, 10 ignored" in done.stdout, done.stdout

    after = decoded(PLANS[ROOM], snapshot(data, ROOM))
    for room in [*range(1, 11), *range(21, SPEC.n_rooms + 1)]:
        assert after[room_key(room)] == before[room_key(room)], room
    for room in range(11, 21):
        event_time, values = after[room_key(room)]
        assert event_time == EVENT_TIME_MS + 5_000
        assert values["viewer_count"] == 900_000 + room - 1
        assert values["category"] == "second-file"

    # A refused file of newer rows (its last row is bad) leaves the data as it was.
    stored = snapshot(data, ROOM)
    newer = pq.read_table(workload[ROOM])
    newer = replace(newer, "event_time", pa.array([EVENT_TIME_MS + 60_000] * newer.num_rows))
    newer = _set_row("room_id", newer.num_rows - 1, -1)(newer)
    bad = load(data, ROOM, write(newer, tmp_path / "bad.parquet"), "--batch-rows", "10")
    assert bad.returncode == 2, bad.stderr
    assert snapshot(data, ROOM) == stored


def test_load_refused_while_a_server_holds_the_data_dir(
    workload: dict[str, Path],
    fresh_data_dir: Path,
    start_server: Callable[[Path], Any],
) -> None:
    server = start_server(fresh_data_dir)
    newer = pq.read_table(workload[ROOM]).slice(0, 5)
    newer = replace(newer, "event_time", pa.array([EVENT_TIME_MS * 2] * 5, pa.int64()))
    done = load(fresh_data_dir, ROOM, write(newer, fresh_data_dir.parent / "newer.parquet"))
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "in use" in done.stderr, done.stderr
    assert str(fresh_data_dir) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    server.stop()
    stored = decoded(PLANS[ROOM], snapshot(fresh_data_dir, ROOM))
    assert len(stored) == SPEC.n_rooms  # the demo's rooms, as they were
    assert all(t != EVENT_TIME_MS * 2 for t, _ in stored.values())


def test_a_load_into_redis_paces_itself_while_replicas_subscribe(
    workload: dict[str, Path], tmp_path: Path, redis_server: Any
) -> None:
    import redis

    from service.store import notify

    url = ["--redis-url", redis_server.url]
    alone = load(tmp_path / "alone", ROOM, workload[ROOM], *url)
    assert alone.returncode == 0, alone.stderr
    assert "paced" not in alone.stdout, alone.stdout  # nobody serves from this Redis

    client = redis.Redis(port=redis_server.port)
    replica = client.pubsub()  # stands for a serving replica's change feed
    replica.subscribe(notify.CHANNEL)
    assert replica.get_message(timeout=5)["type"] == "subscribe"
    newer = replace(pq.read_table(workload[ROOM]), "event_time",
                    pa.array([EVENT_TIME_MS + 1] * SPEC.n_rooms, pa.int64()))  # fmt: skip
    paced = load(tmp_path / "beside", ROOM, write(newer, tmp_path / "newer.parquet"), *url)
    assert paced.returncode == 0, paced.stderr
    assert f"{SPEC.n_rooms} written" in paced.stdout, paced.stdout
    assert "paced to 10,000 rows/s while 1 serving replica(s)" in paced.stdout, paced.stdout
    messages = []
    while (message := replica.get_message(timeout=1)) is not None:
        messages.append(message["data"])
    assert messages and all(m.startswith(notify.MAGIC_KEYS) for m in messages)  # keys only
    notified = {k for m in messages for k in notify.decode_keys(m) or []}
    assert notified == {room_key(i) for i in range(1, SPEC.n_rooms + 1)}

    # A fixed rate applies with or without replicas: 200 rows in batches of 50 at 100
    # rows/s; each batch after the first waits for the ones before it.
    fixed = load(tmp_path / "fixed", ROOM, workload[ROOM], *url, "--batch-rows", "50",
                 "--max-rows-per-s", "100")  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    assert "paced to 100 rows/s (--max-rows-per-s)" in fixed.stdout, fixed.stdout
    seconds = float(fixed.stdout.split(" rows in ", 1)[1].split(" s ", 1)[0])
    assert seconds >= (SPEC.n_rooms - 50) / 100 * 0.95
    replica.close()
    client.close()
