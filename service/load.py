"""Batch loads from Parquet: checked whole before anything is written, then streamed.

The file is read in record batches (memory bounded by `batch_rows`, whatever
the file's size), each batch encoded column-wise (`ViewCodec.encode_columns`)
and written through the tiered store, newest event wins, so loading the same
file twice writes nothing the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from service.core.codec import EVENT_TIME_MAX, FLOAT32_MAX, INT64_MAX, MAX_STRING_BYTES
from service.core.registry import ViewPlan
from service.core.service import record_writes
from service.errors import LoadError, TierError
from service.store.tiered import TieredStore

_NUMPY = {"int64": np.int64, "double": np.float64, "float": np.float32, "bool": np.bool_}


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Rows in the file, written, ignored as no newer than what is stored, and
    skipped as loaded by an earlier run (resumed from its checkpoint)."""

    rows: int
    written: int
    ignored: int
    resumed: int = 0


def _type_ok(kind: str, t: pa.DataType, dim: int) -> bool:
    if kind == "int64":
        return bool(pa.types.is_integer(t))
    if kind in ("double", "float"):
        return bool(pa.types.is_floating(t) or pa.types.is_integer(t))
    if kind == "bool":
        return bool(pa.types.is_boolean(t))
    if kind == "string":
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t))
    if pa.types.is_fixed_size_list(t):
        return bool(t.list_size == dim and pa.types.is_floating(t.value_type))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return bool(pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))
    return False


def check_file(plan: ViewPlan, path: Path, batch_rows: int = 65_536) -> pq.ParquetFile:
    """Open `path` and check every column `plan` needs, and every key. Raises LoadError."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise LoadError(f"{path}: cannot read as Parquet: {exc}") from exc
    schema = pf.schema_arrow
    where = f"{path}: column"
    for key in plan.key_columns:
        if key not in schema.names:
            raise LoadError(f"{where} {key!r}: missing (the key of view {plan.name!r})")
        if not pa.types.is_integer(schema.field(key).type):
            raise LoadError(f"{where} {key!r}: expected integers, found {schema.field(key).type}")
    if "event_time" not in schema.names:
        raise LoadError(f"{where} 'event_time': missing (timestamp or integer milliseconds)")
    et = schema.field("event_time").type
    if not (pa.types.is_integer(et) or pa.types.is_timestamp(et)):
        raise LoadError(f"{where} 'event_time': expected a timestamp or integer ms, found {et}")
    for f in plan.codec.features:
        if f.name not in schema.names:
            raise LoadError(f"{where} {f.name!r}: missing (feature {f.type} of {plan.name!r})")
        t = schema.field(f.name).type
        if not _type_ok(f.type, t, f.dim):
            raise LoadError(f"{where} {f.name!r}: expected {f.type}, found {t}")
    # Keys, event times, vector lengths, float values, strings and unsigned
    # integers can only be checked by reading them: do it now, column by column,
    # so a bad row refuses the file before any write (push refuses the same values).
    vectors = [f for f in plan.codec.features if f.type == "float_vector"
               and not pa.types.is_fixed_size_list(schema.field(f.name).type)]  # fmt: skip
    floats = [f for f in plan.codec.features if f.type in ("double", "float", "float_vector")
              and not pa.types.is_integer(schema.field(f.name).type)]  # fmt: skip
    strings = [f for f in plan.codec.features if f.type == "string"]
    # uint64 can hold values int64 cannot: they would wrap to negatives when stored.
    unsigned = [f for f in plan.codec.features if f.type == "int64"
                and schema.field(f.name).type == pa.uint64()]  # fmt: skip
    every_vector = [f for f in plan.codec.features if f.type == "float_vector"]
    wanted = (*every_vector, *floats, *strings, *unsigned)
    columns = [*plan.key_columns, "event_time", *{f.name: 0 for f in wanted}]
    seen = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        for key in plan.key_columns:
            col = batch.column(key)
            if col.null_count:
                raise LoadError(f"{where} {key!r}: null in row {seen + _first_null(col)}")
            low = pc.min(col).as_py()
            if low < 0:
                raise LoadError(f"{where} {key!r}: negative id {low}")
            _check_int64(where, key, "id", col, seen)
        _check_event_times(where, batch.column("event_time"), seen)
        for f in floats:
            _check_floats(where, f, batch.column(f.name), seen)
        for f in vectors:
            lengths = pc.list_value_length(batch.column(f.name)).fill_null(f.dim)
            bad = pc.not_equal(lengths, f.dim)
            if pc.any(bad).as_py():
                row = seen + int(pc.index(bad, True).as_py())
                raise LoadError(f"{where} {f.name!r}: row {row} has not {f.dim} values")
        for f in every_vector:  # a whole vector may be null (default), not one of its values
            if batch.column(f.name).flatten().null_count:
                raise LoadError(f"{where} {f.name!r}: a null inside a vector (rows from {seen})")
        for f in strings:
            _check_strings(where, f.name, batch.column(f.name), seen)
        for f in unsigned:
            _check_int64(where, f.name, "value", batch.column(f.name), seen)
        seen += batch.num_rows
    return pf


def _check_event_times(where: str, col: pa.Array, seen: int) -> None:
    """Event times as the write path takes them: ms (timestamps floored) in 0..2**48-1."""
    if col.null_count:
        raise LoadError(f"{where} 'event_time': null in row {seen + _first_null(col)}")
    if pa.types.is_unsigned_integer(col.type):
        _check_int64(where, "event_time", "event time", col, seen)
    ms = event_times_ms(col).to_numpy()
    bad = (ms < 0) | (ms > EVENT_TIME_MAX)
    if bad.any():
        raise LoadError(
            f"{where} 'event_time': row {seen + int(bad.argmax())} outside 1970..year 10889 "
            "(ms 0..2**48-1)"
        )


def _check_int64(where: str, name: str, what: str, col: pa.Array, seen: int) -> None:
    """Refuse unsigned values over 2**63-1, naming the row (they would wrap negative)."""
    if not pa.types.is_unsigned_integer(col.type) or col.type.bit_width < 64:
        return
    over = pc.greater(col, pa.scalar(INT64_MAX, pa.uint64()))
    if pc.any(over).as_py():
        row = int(pc.index(over, True).as_py())
        raise LoadError(
            f"{where} {name!r}: row {seen + row}: {what} {col[row].as_py()} over 2**63-1 (int64)"
        )


def _check_strings(where: str, name: str, col: pa.Array, seen: int) -> None:
    """Refuse strings over MAX_STRING_BYTES of UTF-8 (the stored length is 16 bits)."""
    lengths = pc.binary_length(col).fill_null(0)
    if len(lengths) and pc.max(lengths).as_py() > MAX_STRING_BYTES:
        row = int(pc.index(pc.greater(lengths, MAX_STRING_BYTES), True).as_py())
        raise LoadError(
            f"{where} {name!r}: row {seen + row}: string of {lengths[row].as_py()} bytes, "
            f"at most {MAX_STRING_BYTES}"
        )


def _check_floats(where: str, f: Any, col: pa.Array, seen: int) -> None:
    values = col.flatten() if f.type == "float_vector" else col
    values = values.drop_null()
    if not len(values):
        return
    bad = pc.invert(pc.is_finite(values))
    if pc.any(bad).as_py():
        raise LoadError(f"{where} {f.name!r}: NaN or infinite value (rows from {seen})")
    if f.type != "double" and pc.max(pc.abs(values)).as_py() > FLOAT32_MAX:
        raise LoadError(f"{where} {f.name!r}: value out of the float32 range (rows from {seen})")


def event_times_ms(col: pa.Array) -> pa.Array:
    """Event times as int64 milliseconds (timestamps of any unit are floored to ms)."""
    if pa.types.is_timestamp(col.type):
        return pc.cast(col, pa.timestamp("ms"), safe=False).cast(pa.int64())
    return col.cast(pa.int64())


def _first_null(col: pa.Array) -> int:
    return int(pc.index(pc.is_null(col), True).as_py())


def encode_batch(plan: ViewPlan, batch: pa.RecordBatch) -> list[tuple[bytes, bytes]]:
    """(key, stored value) of every row of a checked batch; nulls become defaults."""
    keys = plan.column_keys([batch.column(k).to_numpy().tolist() for k in plan.key_columns])
    et = event_times_ms(batch.column("event_time"))
    columns: dict[str, Any] = {}
    for f in plan.codec.features:
        col = batch.column(f.name)
        if f.type == "string":
            columns[f.name] = col.fill_null(f.default).to_pylist()
        elif f.type == "float_vector":
            columns[f.name] = _vectors(col, f.dim, f.default)
        else:
            columns[f.name] = (
                col.fill_null(f.default)
                .to_numpy(zero_copy_only=False)
                .astype(_NUMPY[f.type], copy=False)
            )
    values = plan.codec.encode_columns(et.to_numpy().astype(np.int64), columns)
    return list(zip(keys, values, strict=True))


def _vectors(col: pa.Array, dim: int, default: list[float]) -> np.ndarray:
    if col.null_count:
        fill = np.asarray(default, dtype=np.float32)
        return np.stack([fill if v is None else np.asarray(v, np.float32) for v in col.to_pylist()])
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def iter_batches(pf: pq.ParquetFile, plan: ViewPlan, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's record batches with only the columns `plan` needs."""
    columns = [*plan.key_columns, "event_time", *(f.name for f in plan.codec.features)]
    yield from pf.iter_batches(batch_size=batch_rows, columns=columns)


# Batches written at once (unpaced): Redis stays busy while the loader finishes an
# older one (notifications, sync, checkpoint) and encodes the next. Measured on the
# standard pairs into RocksDB + Redis: 1 in flight 128-133k rows/s, 2 165-176k,
# 3 179-183k. Rows of one key with the same event time in two batches of a file may
# then land in either order (newest event still wins; which of equals is kept is
# unspecified, as for racing pushes, and Redis and RocksDB may keep different ones).
WRITES_IN_FLIGHT = 3


class Pacer:
    """How fast a load writes: at most `max_rows_per_s` (0: no limit), or, when that is
    None ("auto"), `serving_rows_per_s` while serving replicas subscribe to the change
    feed of the Redis being loaded and no limit otherwise (asked again every batch).

    Why: a full-speed load keeps Redis busy with its scripts, and every replica busy
    with its change notifications; beside one, serving p99 rose 14-fold at 150,000
    rows/s. Paced, writes go in slices of SLICE_ROWS spread evenly over time: at
    10,000 rows/s, p99 stayed under 2x idle (docs/benchmarks.md).
    """

    SLICE_ROWS = 500

    def __init__(
        self,
        max_rows_per_s: float | None = 0,
        serving_rows_per_s: float = 10_000,
        count_replicas: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.max_rows_per_s = max_rows_per_s
        self.serving_rows_per_s = serving_rows_per_s
        self._count_replicas = count_replicas
        self.rate = max_rows_per_s or 0.0
        self.replicas: int | None = None
        self.paced_rows = 0
        self._next = 0.0

    async def refresh(self) -> None:
        """In "auto" mode, ask how many replicas serve from the Redis being loaded."""
        if self.max_rows_per_s is not None or self._count_replicas is None:
            return
        with contextlib.suppress(TierError):  # unknown: keep the last answer
            self.replicas = await self._count_replicas()
        self.rate = self.serving_rows_per_s if self.replicas else 0.0

    def slices(self, items: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
        """`items` cut into the slices to write one after another."""
        if not self.rate:
            return [items]
        return [items[i : i + self.SLICE_ROWS] for i in range(0, len(items), self.SLICE_ROWS)]

    async def wait(self, rows: int) -> None:
        """Wait until `rows` more rows may be written."""
        if not self.rate:
            return
        now = asyncio.get_running_loop().time()
        self._next = max(self._next, now)
        delay = self._next - now
        self._next += rows / self.rate
        self.paced_rows += rows
        if delay > 0:
            await asyncio.sleep(delay)

    def describe(self) -> str:
        """How the load was paced, for its summary ("" if it never was)."""
        if not self.paced_rows:
            return ""
        if self.max_rows_per_s is not None:
            return f"; paced to {self.rate:,.0f} rows/s (--max-rows-per-s)"
        return (
            f"; {self.paced_rows} rows paced to {self.serving_rows_per_s:,.0f} rows/s while "
            f"{self.replicas} serving replica(s) subscribed to this Redis "
            "(--max-rows-per-s 0: full speed)"
        )


class Checkpoint:
    """How many rows of one file are durably loaded, so a re-run after a crash resumes.

    Kept beside the data as JSON; bound to the file's path, size and mtime and to
    the batch size, so a changed file starts again from the top. Written (atomically)
    only after the store has made the batch durable; removed when the load ends.
    """

    def __init__(self, directory: Path, view: str, path: Path, batch_rows: int) -> None:
        st = path.stat()
        identity = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{batch_rows}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.path = directory / f"{view}.{digest}.json"
        self.identity = identity

    def rows_done(self) -> int:
        """Rows a previous run of the same load made durable (0 if none)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        return int(data["rows_done"]) if data.get("identity") == self.identity else 0

    def save(self, rows_done: int) -> None:
        """Record progress (write to a temporary file, then rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"identity": self.identity, "rows_done": rows_done}))
        os.replace(tmp, self.path)

    def clear(self) -> None:
        """The load finished: nothing to resume."""
        self.path.unlink(missing_ok=True)


async def load_file(
    plan: ViewPlan,
    path: Path,
    store: TieredStore[Any],
    batch_rows: int = 50_000,
    progress: Callable[[int], None] | None = None,
    checkpoint: Checkpoint | None = None,
    pacer: Pacer | None = None,
) -> LoadResult:
    """Check, then load `path` into `store`. Raises LoadError before any write if refused.

    With a checkpoint, batches a previous (crashed) run made durable are skipped; with
    a pacer, writes are spaced out (see Pacer).
    """
    pf = check_file(plan, path)
    pacer = pacer or Pacer()

    async def write(items: list[tuple[bytes, bytes]]) -> list[bool]:
        written: list[bool] = []
        for part in pacer.slices(items):
            await pacer.wait(len(part))
            written += await store.put_many(part, notify_values=False)
        return written

    skip = checkpoint.rows_done() if checkpoint else 0
    rows = written = 0
    # Batches being written, oldest first: (write, items, rows up to its end, newest event).
    in_flight: deque[tuple[asyncio.Task[list[bool]], list[tuple[bytes, bytes]], int, int]]
    in_flight = deque()

    async def finish(
        task: asyncio.Task[list[bool]], items: list[tuple[bytes, bytes]], upto: int, newest: int
    ) -> int:
        done = sum(await task)
        record_writes(plan.name, "load", len(items), done, newest)
        if checkpoint:
            await store.sync()
            checkpoint.save(upto)
        if progress:
            progress(len(items))
        return done

    try:
        for batch in iter_batches(pf, plan, batch_rows):
            if rows + batch.num_rows <= skip:
                rows += batch.num_rows
                if progress:
                    progress(batch.num_rows)
                continue
            items = encode_batch(plan, batch)  # while earlier batches are being written
            await pacer.refresh()
            depth = 1 if pacer.rate else WRITES_IN_FLIGHT  # paced: one writer is enough
            while len(in_flight) >= depth:
                written += await finish(*in_flight.popleft())  # in order: checkpoints too
            rows += len(items)
            newest = int(pc.max(event_times_ms(batch.column("event_time"))).as_py())
            in_flight.append((asyncio.ensure_future(write(items)), items, rows, newest))
        while in_flight:
            written += await finish(*in_flight.popleft())
    finally:
        for task, *_ in in_flight:  # an error or a cancel: leave no write running unobserved
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if checkpoint:
        checkpoint.clear()
    return LoadResult(rows, written, rows - written - skip, skip)
