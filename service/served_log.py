"""The served-feature log: a sampled fraction of bundle answers, published in the background.

The request path does only a random draw and, when sampled, a non-blocking put of
the already-built `BundleResult` into a bounded queue; a full queue drops the record
and counts it (`livefeat_served_log_records_total{outcome="dropped"}`): serving
never waits. A background task encodes records (from the rows' pre-rendered JSON
fragments, so values are exactly what HTTP /v1/bundle serves) and hands them to the
sinks: a Kafka topic (record key: the user id as text) and/or JSON Lines files.
The record format is in docs/served-log.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from service import metrics
from service.core.codec import JSON
from service.core.service import BundleResult, ViewRows, wall_clock_ms

log = logging.getLogger(__name__)
FORMAT = 1
BATCH_RECORDS = 64  # records handed to the sinks at once


def _entity(id_json: bytes, views: Sequence[ViewRows], n: int) -> bytes:
    features = b",".join([v.rows[n][JSON] for v in views])
    status = b",".join([v.plan.status_json[v.statuses[n]] for v in views])
    ages = b",".join([b'"%s":%d' % (v.plan.name.encode(), v.ages_ms[n]) for v in views])
    return b'{"id":%s,"features":{%s},"status":{%s},"age_ms":{%s}}' % (
        id_json, features, status, ages,
    )  # fmt: skip


def encode_record(result: BundleResult, request_id: str, time_ms: int) -> bytes:
    """One served-log record (UTF-8 JSON, no newline); rooms and pairs in request order."""
    uid = b"%d" % result.user_id
    rids = [b"%d" % r for r in result.room_ids]
    rooms = b",".join([_entity(i, result.rooms, n) for n, i in enumerate(rids)])
    pairs = b",".join([_entity(b"[%s,%s]" % (uid, i), result.pairs, n)
                       for n, i in enumerate(rids)]) if result.pairs else b""  # fmt: skip
    return b"".join([
        b'{"format":%d,"request_id":' % FORMAT, orjson.dumps(request_id),
        b',"time_ms":%d,"bundle":' % time_ms, orjson.dumps(result.bundle),
        b',"user_id":', uid, b',"room_ids":[', b",".join(rids), b'],"user":',
        _entity(uid, result.user, 0), b',"rooms":[', rooms, b'],"pairs":[', pairs, b"]}",
    ])  # fmt: skip


class Sink(Protocol):
    """Where records go. `write` gets (key, value) pairs; raises on failure."""

    name: str

    async def write(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Deliver `records` (key: the user id as text; value: one JSON record)."""
        ...

    async def close(self) -> None:
        """Flush and release resources."""
        ...


class ServedLog:
    """Samples bundle answers into a bounded queue; a background task sends them.

    `draw()` returns a float in [0, 1) (random.random; injected for tests); an
    answer is logged when it is below `fraction`. `clock_ms` stamps `time_ms`.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        fraction: float,
        queue_records: int = 10_000,
        *,
        draw: Callable[[], float] = random.random,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.sinks = tuple(sinks)
        self.fraction = fraction if self.sinks else 0.0
        self._queue: asyncio.Queue[tuple[BundleResult, str, int]] = asyncio.Queue(queue_records)
        self._draw = draw
        self._clock_ms = clock_ms
        self._task: asyncio.Task[None] | None = None
        self._sent = metrics.SERVED_LOG_RECORDS.labels("sent")
        self._dropped = metrics.SERVED_LOG_RECORDS.labels("dropped")
        self._failed = metrics.SERVED_LOG_RECORDS.labels("failed")
        metrics.SERVED_LOG_QUEUED.set_function(self._queue.qsize)

    def __repr__(self) -> str:
        sinks = ",".join(s.name for s in self.sinks) or "off"
        return f"<ServedLog {sinks} fraction={self.fraction} queued={self._queue.qsize()}>"

    @property
    def active(self) -> bool:
        """Whether answers may be logged (and so their rows' JSON read)."""
        return self.fraction > 0

    def offer(self, result: BundleResult, request_id: str | Callable[[], str]) -> None:
        """Maybe log one answer: a draw, and when sampled a put that never waits.
        `request_id` may be a callable, called only when the answer is sampled."""
        if self._draw() >= self.fraction:
            return
        rid = request_id if isinstance(request_id, str) else request_id()
        try:
            self._queue.put_nowait((result, rid, self._clock_ms()))
        except asyncio.QueueFull:
            self._dropped.inc()

    def start(self) -> None:
        """Start the background sender (on the running loop); a no-op when off."""
        if self.sinks and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_RECORDS and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._send(batch)

    async def _send(self, batch: list[tuple[BundleResult, str, int]]) -> None:
        records = [(b"%d" % r.user_id, encode_record(r, rid, t)) for r, rid, t in batch]
        for sink in self.sinks:
            try:
                await sink.write(records)
            except Exception as exc:  # a sink's failure must never reach serving
                self._failed.inc(len(records))
                log.warning("served log: %s failed %d records: %s", sink.name, len(records), exc)
            else:
                self._sent.inc(len(records))

    async def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (up to `timeout_s`), stop, close the sinks."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()

    async def _drain(self) -> None:
        while not self._queue.empty():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # let the sender finish the batch it took


DISABLED = ServedLog([], 0.0, 1)  # what front ends get when nothing is logged


class FileSink:
    """JSON Lines files `served-YYYYMMDDTHHMMSS-<pid>.jsonl` (UTC, at opening) in
    `directory`; a new file once the current one is `max_age_s` old or `max_bytes` big.
    Writes run on a thread: a record of 500 rooms is about 300 kB."""

    name = "file"

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 100 << 20,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._file: IO[bytes] | None = None
        self._opened_at = 0.0
        self.path: Path | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"<FileSink {self.path or self.directory}>"

    async def write(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        await asyncio.to_thread(self._write, [value for _, value in records])

    def _write(self, lines: list[bytes]) -> None:
        now = self._clock()
        if (self._file is None or now - self._opened_at >= self.max_age_s
                or self._file.tell() >= self.max_bytes):  # fmt: skip
            self._rotate(now)
        assert self._file is not None
        self._file.write(b"\n".join(lines) + b"\n")
        self._file.flush()

    def _rotate(self, now: float) -> None:
        if self._file is not None:
            self._file.close()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        self.path = self.directory / f"served-{stamp}-{os.getpid()}.jsonl"
        self._file = self.path.open("ab")  # the same second twice: append, still JSON Lines
        self._opened_at = now

    async def close(self) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None


class KafkaSink:
    """Records to a Kafka topic (key: user id as text). The producer connects on the first
    write, and again after a failure, so a broker that is down never stops serving."""

    name = "kafka"

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._producer: Any = None

    def __repr__(self) -> str:
        return f"<KafkaSink {self.topic}@{self.bootstrap}>"

    async def write(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        from aiokafka import AIOKafkaProducer

        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=50,
                                        max_request_size=8 << 20)  # fmt: skip
            try:
                await producer.start()
            except Exception:
                await producer.stop()
                raise
            self._producer = producer
        try:
            futures = [await self._producer.send(self.topic, v, key=k) for k, v in records]
            await asyncio.gather(*futures)
        except Exception:
            await self.close()  # reconnect on the next write
            raise

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def open_served_log(
    kafka: str | None, topic: str | None, directory: Path | None, fraction: float, queue: int
) -> ServedLog:
    """The served log the settings ask for (DISABLED-like when no sink is configured).
    Raises LivefeatError (check_served_log)."""
    check_served_log(kafka, topic)
    sinks: list[Sink] = []
    if topic and kafka:
        sinks.append(KafkaSink(kafka, topic))
    if directory is not None:
        sinks.append(FileSink(directory))
    return ServedLog(sinks, fraction, queue)


def check_served_log(kafka: str | None, topic: str | None) -> None:
    """Refuse a served-log topic without brokers (before any process starts)."""
    if topic and not kafka:
        from service.errors import LivefeatError

        raise LivefeatError("--log-served-topic needs --kafka HOST:PORT")
