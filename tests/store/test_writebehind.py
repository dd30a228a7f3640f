"""WriteBehind: the background fills of a tier, and what the local tier's fill skips."""

from __future__ import annotations

import asyncio

from service.errors import TierUnavailable
from service.store.writebehind import WriteBehind
from service.stored import header


def value(event_time: int, body: bytes = b"row") -> bytes:
    return header(0x1234, event_time) + body


def test_the_local_fill_writes_a_row_once_per_value_and_again_when_newer() -> None:
    asyncio.run(_the_local_fill_writes_a_row_once_per_value_and_again_when_newer())


async def _the_local_fill_writes_a_row_once_per_value_and_again_when_newer() -> None:
    batches: list[list[tuple[bytes, bytes]]] = []

    async def put(items: list[tuple[bytes, bytes]]) -> None:
        batches.append(list(items))

    fill = WriteBehind("local", put, remember=100)
    rows = [(b"room:%d" % i, value(1_000 + i)) for i in range(10)]
    assert fill.offer(rows) == 0
    await fill.drain()
    # The same values again (a cold read offers every row it served): nothing queued.
    assert fill.offer(list(rows)) == 0
    assert fill._queue == []
    # One newer value (a write elsewhere): only that one.
    newer = [(b"room:3", value(5_000, b"new")), *rows[:3]]
    fill.offer(newer)
    assert fill._queue == [(b"room:3", value(5_000, b"new"))]
    await fill.drain()
    assert [len(b) for b in batches] == [10, 1]


def test_a_failed_write_forgets_what_was_written() -> None:
    asyncio.run(_a_failed_write_forgets_what_was_written())


async def _a_failed_write_forgets_what_was_written() -> None:
    calls: list[int] = []

    async def put(items: list[tuple[bytes, bytes]]) -> None:
        calls.append(len(items))
        if len(calls) == 1:
            raise TierUnavailable("rocksdb", "disk full")

    fill = WriteBehind("local", put, remember=100)
    rows = [(b"user:%d" % i, value(7)) for i in range(5)]
    fill.offer(rows)
    await asyncio.sleep(0.01)
    fill.offer(rows)  # the failed batch may not be in the tier: offered again, queued again
    await fill.drain()
    assert calls == [5, 5]


def test_a_full_queue_drops_what_does_not_fit() -> None:
    asyncio.run(_a_full_queue_drops_what_does_not_fit())


async def _a_full_queue_drops_what_does_not_fit() -> None:
    gate = asyncio.Event()

    async def put(items: list[tuple[bytes, bytes]]) -> None:
        await gate.wait()

    fill = WriteBehind("redis", put, max_items=4)
    assert fill.offer([(b"k%d" % i, value(i)) for i in range(6)]) == 2
    gate.set()
    await fill.drain()
