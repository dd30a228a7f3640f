"""KafkaIngest.run with a fake consumer and a slow fake core: the next batch is checked
while the one before it is written, yet writes and commits stay in order, each commit
after its batch's write; a rebalance and a stop wait for the batches in hand."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from service.core.registry import load_registry
from service.core.service import PushResult
from service.kafka.consumer import KafkaIngest
from service.kafka.deadletter import DeadLetters
from service.kafka.messages import MessageParser
from service.settings import DEMO_REGISTRY

PLAN = load_registry(DEMO_REGISTRY).views["room_stats"]
NOW = 1_800_000_000_000
TP = TopicPartition("rooms", 0)


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    room = offset % 7 + 1
    value = orjson.dumps({"room_id": room, "event_time_ms": NOW - 1000 + offset, "viewer_count": offset})  # fmt: skip
    return ConsumerRecord("rooms", 0, offset, 0, 0, b"%d" % room, value, None, 1, len(value), [])


class FakeConsumer:
    def __init__(
        self, batches: list[list[ConsumerRecord[bytes, bytes]]], events: list[str]
    ) -> None:
        self.batches = list(batches)
        self.events = events

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        await asyncio.sleep(0)
        if not self.batches:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        return {TP: self.batches.pop(0)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0.005)
        self.events.append(f"commit {offsets[TP]}")

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


class FakeStore:
    async def sync(self) -> None:
        await asyncio.sleep(0)


class SlowCore:
    """Writes take 30 ms (Redis working meanwhile)."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.store = FakeStore()

    async def write_batch(self, plan: Any, full: Any, rows: Any, source: str, **_: Any) -> PushResult:  # fmt: skip
        last = max(full.positions) if full is not None else max(p for p, _ in rows)
        n = (0 if full is None else len(full.keys)) + len(rows)
        self.events.append(f"write start {n} {last}")
        await asyncio.sleep(0.03)
        self.events.append("write end")
        return PushResult(n, 0)


class TracingParser(MessageParser):
    def __init__(self, events: list[str]) -> None:
        super().__init__(PLAN, 300_000, lambda: NOW)
        self.events = events

    def check_batch(self, keys: Any, values: Any) -> Any:
        self.events.append("check")
        return super().check_batch(keys, values)


def run_ingest(batches: list[list[ConsumerRecord[bytes, bytes]]]) -> list[str]:
    events: list[str] = []

    async def main() -> None:
        consumer = FakeConsumer(batches, events)
        ingest = KafkaIngest(SlowCore(events), consumer, {"rooms": TracingParser(events)},  # type: ignore[arg-type]
                             DeadLetters(None, None))  # fmt: skip
        task = asyncio.create_task(ingest.run())
        while consumer.batches or not any(e.startswith(f"commit {total}") for e in events):
            await asyncio.sleep(0.01)
        ingest.stop()
        await task

    total = sum(len(b) for b in batches)
    asyncio.run(main())
    return events


def test_batches_are_checked_ahead_and_written_and_committed_in_order() -> None:
    sizes = [3, 5, 2, 4, 6]
    batches, offset = [], 0
    for size in sizes:
        batches.append([record(offset + i) for i in range(size)])
        offset += size
    events = run_ingest(batches)
    writes = [e for e in events if e.startswith("write start")]
    commits = [int(e.split()[1]) for e in events if e.startswith("commit")]
    assert commits == [sum(sizes[: i + 1]) for i in range(len(sizes))]  # each batch, in order
    assert writes == [f"write start {n} {n - 1}" for n in sizes]
    # Each commit comes after its write ended, and before the next write starts.
    for i in range(len(sizes)):
        start = events.index(writes[i])
        end = events.index("write end", start)
        assert end < events.index(f"commit {commits[i]}")
        if i + 1 < len(sizes):
            assert events.index(f"commit {commits[i]}") < events.index(writes[i + 1])
    # The next batch was checked while a write was under way (two in hand).
    started = ended = 0
    overlapped = 0
    for e in events:
        started += e.startswith("write start")
        ended += e == "write end"
        overlapped += e == "check" and started > ended
    assert overlapped >= len(sizes) - 1


def test_a_rebalance_waits_for_the_batches_in_hand() -> None:
    events: list[str] = []

    async def main() -> None:
        consumer = FakeConsumer([[record(i) for i in range(4)], [record(i) for i in range(4, 8)]], events)  # fmt: skip
        ingest = KafkaIngest(SlowCore(events), consumer, {"rooms": TracingParser(events)},  # type: ignore[arg-type]
                             DeadLetters(None, None))  # fmt: skip
        task = asyncio.create_task(ingest.run())
        while "write start 4 3" not in events:
            await asyncio.sleep(0.001)
        await ingest.on_revoked([TP])  # a write is under way: returns once all is committed
        events.append("revoked")
        ingest.stop()
        await task

    asyncio.run(main())
    revoked = events.index("revoked")
    assert "commit 4" in events[:revoked]
    assert "commit 8" not in events or events.index("commit 8") < revoked
