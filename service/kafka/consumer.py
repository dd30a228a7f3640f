"""The ingestion loop: Kafka batches -> checked rows -> the core's write path -> commit.

At-least-once delivery with exactly-once results: a batch's offsets are committed
only after its rows are durable (written to every tier and synced) and its bad
messages are in the dead-letter topic. A crash or a rebalance before the commit
makes the batch be read again, and writing it again changes nothing, since the
newest event wins. A rebalance waits for the batches in hand (and their commits)
before their partitions go (`_Rebalance`).

A bad message never stops the stream: it is dead-lettered (or logged) and
counted, and the good messages of its batch are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from service import metrics
from service.core.service import FeatureService
from service.errors import TierError
from service.kafka.deadletter import DeadLetters
from service.kafka.messages import BadMessage, CheckedBatch, MessageParser

log = logging.getLogger(__name__)
Rows = dict[str, list[CheckedBatch]]  # topic -> checked parts of the batch, in offset order
Letters = list[tuple[Any, BadMessage]]  # refused records and why


@dataclass(frozen=True, slots=True)
class ConsumeOptions:
    """Batching and retry knobs of the loop (units in the names)."""

    batch_max_messages: int = 20_000  # per poll, all partitions together
    poll_timeout_ms: int = 200  # an idle poll returns after this; also bounds SIGTERM's wait
    write_rows: int = 10_000  # messages per check and write call (the core's push limit)
    retry_max_s: float = 5.0  # a failed write is retried, backing off up to this


class Stopping(Exception):
    """SIGTERM came while a batch could not be written: leave it uncommitted."""


class _TopicMetrics:
    """Pre-bound metric children of one topic."""

    def __init__(self, topic: str) -> None:
        outcome = metrics.KAFKA_MESSAGES.labels
        self.consumed = outcome(topic, "consumed")
        self.written = outcome(topic, "written")
        self.ignored = outcome(topic, "ignored")
        self.bad = outcome(topic, "bad")


class KafkaIngest:
    """Reads the subscribed topics and writes each topic's messages into its view.

    `parsers` maps a topic to the MessageParser of its view. `consumer` is a started
    AIOKafkaConsumer with auto-commit off; `subscribe()` subscribes it with the
    rebalance listener. Public state for probes: `running`, `batches`.
    """

    def __init__(
        self,
        core: FeatureService,
        consumer: AIOKafkaConsumer,
        parsers: dict[str, MessageParser],
        dead_letters: DeadLetters,
        options: ConsumeOptions = ConsumeOptions(),
    ) -> None:
        self.core = core
        self.consumer = consumer
        self.parsers = parsers
        self.dead_letters = dead_letters
        self.options = options
        self.running = False
        self.batches = 0
        self._in_hand = 0  # batches read and not yet committed (or given up)
        self._idle = asyncio.Event()
        self._idle.set()
        self._revoking = False  # a rebalance waits for the batches in hand
        self._stop = asyncio.Event()
        self._done: dict[TopicPartition, int] = {}  # next offset to read, as committed
        self._m = {topic: _TopicMetrics(topic) for topic in parsers}

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<KafkaIngest {sorted(self.parsers)} {state}, {self.batches} batches>"

    def subscribe(self) -> None:
        """Join the group for every topic, with the listener that commits before a rebalance."""
        self.consumer.subscribe(list(self.parsers), listener=_Rebalance(self))

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and return from `run` (SIGTERM)."""
        self._stop.set()

    async def run(self) -> None:
        """Poll, check, write, commit, until `stop()`. Kafka errors are logged and retried.

        Two batches in hand at most: one is checked (this process's CPU) while the one
        before it is written and committed (mostly waiting for Redis and the broker); it is
        written only once that one is committed, so writes and commits stay in order.
        """
        self.running = True
        writing: asyncio.Future[None] | None = None
        try:
            while not self._stop.is_set():
                if writing is not None and (writing.done() or self._revoking):
                    await writing  # a rebalance waits: take no more batches meanwhile
                    writing = None
                try:
                    got = await self.consumer.getmany(
                        timeout_ms=self.options.poll_timeout_ms,
                        max_records=self.options.batch_max_messages,
                    )
                except KafkaError as exc:
                    metrics.KAFKA_FAILURES.labels("fetch").inc()
                    log.warning("kafka fetch failed: %s; retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                if got:
                    self._in_hand += 1
                    self._idle.clear()
                    checked = self._check(got)
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(self._finish(got, *checked))
                self._update_lag()
            if writing is not None:  # stopping: the batches in hand are written first
                await writing
                writing = None
        except Stopping:
            log.warning("stopped with a batch not written: it will be read again")
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(BaseException):
                    await writing
            self._in_hand = 0  # nothing more will be committed: a rebalance need not wait
            self._idle.set()
            self.running = False

    def _check(self, got: dict[TopicPartition, list[Any]]) -> tuple[Rows, Letters, float]:
        """Each topic's messages checked column-wise, `write_rows` at a time (each message
        judged on its own): rows per topic, and the refused ones."""
        started = time.perf_counter()
        by_topic: dict[str, list[Any]] = {}
        for tp, records in got.items():
            self._m[tp.topic].consumed.inc(len(records))
            by_topic.setdefault(tp.topic, []).extend(records)  # partitions in turn, offset order
        rows: Rows = {}
        letters: Letters = []
        step = self.options.write_rows
        for topic, records in by_topic.items():
            parser = self.parsers[topic]
            m = self._m[topic]
            topic_rows = rows.setdefault(topic, [])
            for start in range(0, len(records), step):
                part = records[start : start + step]
                checked = parser.check_batch([r.key for r in part], [r.value for r in part])
                for pos, bad in checked.bad:
                    m.bad.inc()
                    metrics.KAFKA_BAD_MESSAGES.labels(topic, bad.reason).inc()
                    letters.append((part[pos], bad))
                topic_rows.append(checked)
        return rows, letters, started

    async def _finish(
        self, got: dict[TopicPartition, list[Any]], rows: Rows, letters: Letters, started: float
    ) -> None:
        """Write, dead-letter, sync and commit one checked batch. Raises Stopping."""
        try:
            for topic, parts in rows.items():
                await self._write(topic, parts)
            if letters:
                await self._retry("dead_letter", lambda: self.dead_letters.send(letters))
            await self._retry("sync", self.core.store.sync)
            await self._commit({tp: records[-1].offset + 1 for tp, records in got.items()})
            self.batches += 1
            metrics.KAFKA_BATCH_MESSAGES.observe(sum(len(r) for r in got.values()))
            metrics.KAFKA_BATCH_SECONDS.observe(time.perf_counter() - started)
        finally:
            self._in_hand -= 1
            if not self._in_hand:
                self._idle.set()

    async def _write(self, topic: str, parts: list[CheckedBatch]) -> None:
        plan = self.parsers[topic].plan
        m = self._m[topic]
        for part in parts:
            if part.full is None and not part.rows:
                continue

            async def write(part: CheckedBatch = part) -> Any:
                # In offset order: the core applies rows of one entity as successive
                # pushes. Keys only in change notifications, as for loads: at stream
                # rates, replicas read new values from Redis on their next miss.
                return await self.core.write_batch(
                    plan, part.full, part.rows, "kafka", notify_values=False
                )

            result = await self._retry("write", write)
            m.written.inc(result.written)
            m.ignored.inc(result.ignored)

    async def _retry(self, step: str, call: Any) -> Any:
        """`call()` until it succeeds; backs off on TierError and KafkaError. Raises Stopping
        if asked to stop meanwhile (the batch stays uncommitted)."""
        delay = 0.1
        while True:
            try:
                return await call()
            except (TierError, KafkaError) as exc:
                metrics.KAFKA_FAILURES.labels(step).inc()
                log.warning("kafka consumer: %s failed (%s); retrying in %.1f s", step, exc, delay)
                if self._stop.is_set():
                    raise Stopping(step) from exc
                self._update_lag()  # the lag alert must see a stuck consumer fall behind
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.retry_max_s)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The group moved on (a rebalance): the new owner reads the batch again,
            # and writing it again changes nothing.
            metrics.KAFKA_FAILURES.labels("commit").inc()
            log.warning("kafka commit failed (%s): the batch will be read again", exc)
            return
        self._done.update(offsets)
        self._update_lag()  # committed in the background: the gauge follows at once

    def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            done = self._done.get(tp)
            if high is not None and done is not None:
                metrics.KAFKA_LAG.labels(tp.topic, str(tp.partition)).set(max(high - done, 0))

    async def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Start each new partition's lag from its committed offset (or the log's start),
        so that a consumer stuck before its first batch still shows its lag."""
        fresh = [tp for tp in assigned if tp not in self._done]
        try:
            for tp in fresh:
                committed = await self.consumer.committed(tp)
                if committed is None:
                    committed = (await self.consumer.beginning_offsets([tp]))[tp]
                self._done[tp] = committed
        except KafkaError as exc:
            log.warning("kafka: no committed offsets for the lag gauge yet: %s", exc)

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Wait until the batches in hand are written and committed; forget the partitions."""
        self._revoking = True
        try:
            await self._idle.wait()
        finally:
            self._revoking = False
        for tp in revoked:
            self._done.pop(tp, None)
            with contextlib.suppress(KeyError):
                metrics.KAFKA_LAG.remove(tp.topic, str(tp.partition))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka calls this around a rebalance; revoked partitions are committed first."""

    def __init__(self, ingest: KafkaIngest) -> None:
        self.ingest = ingest

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.ingest.on_revoked(revoked)
        log.info("partitions revoked: %s", sorted(str(tp) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        counts = Counter(tp.topic for tp in assigned)
        log.info("partitions assigned: %s", dict(counts))
        await self.ingest.on_assigned(assigned)
