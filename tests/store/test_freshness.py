"""A read that starts after a write was acknowledged never returns an older value,
and no reader inherits another's deadline or cancellation (coalesce.py).

The storage is a real RocksDB; a gate held by the test holds one read back after
RocksDB answered it, so that the write can land while that read is under way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from service.store.base import UNAVAILABLE
from service.store.factory import assemble
from service.store.l1 import L1Cache
from service.store.rocks import RocksTier
from service.stored import event_time_of, header

KEY = b"room:00000001:1"


def value(event_time_ms: int) -> bytes:
    return header(1, event_time_ms)


def decode(raw: bytes) -> int:
    return event_time_of(raw)


class GatedRocks(RocksTier):
    """A real RocksTier whose next `held` reads wait for `gate` after reading."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.held = 0
        self.reads = 0

    def get_many_now(self, keys: Sequence[bytes]) -> list[bytes | None] | None:
        return None  # never at once: every read is a fetch, which the gate can hold

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        got = await super().get_many(keys)
        self.reads += 1
        if self.held:
            self.held -= 1
            await self.gate.wait()
        return got


def test_a_read_under_way_during_a_write_does_not_cache_the_old_value(tmp_path: Path) -> None:
    async def go() -> None:
        rocks = GatedRocks(tmp_path / "db")
        store = assemble(L1Cache(100, 60.0), [rocks])
        await store.put_many([(KEY, value(1))])
        rocks.held = 1
        before = asyncio.create_task(store.get_many([KEY], [decode]))
        while rocks.reads == 0:
            await asyncio.sleep(0.001)  # it has read the old value and waits at the gate
        assert await store.put_many([(KEY, value(2))]) == [True]  # acknowledged
        rocks.gate.set()
        assert await before == [1]  # it started before the write: either value is right
        assert await store.get_many([KEY], [decode]) == [2]
        assert await store.get_many([KEY], [decode]) == [2]  # and L1 holds the new one
        await store.close()

    asyncio.run(go())


def test_a_read_after_a_write_does_not_join_a_fetch_that_started_before(tmp_path: Path) -> None:
    async def go() -> None:
        rocks = GatedRocks(tmp_path / "db")
        store = assemble(L1Cache(100, 60.0), [rocks])
        await store.put_many([(KEY, value(1))])
        rocks.held = 1
        before = asyncio.create_task(store.get_many([KEY], [decode]))
        while rocks.reads == 0:
            await asyncio.sleep(0.001)
        await store.put_many([(KEY, value(2))])
        after = await asyncio.wait_for(store.get_many([KEY], [decode]), 5.0)
        assert after == [2]
        rocks.gate.set()
        await before
        await store.close()

    asyncio.run(go())


def test_a_reader_keeps_its_own_deadline_when_the_first_reader_gives_up(tmp_path: Path) -> None:
    async def go() -> None:
        rocks = GatedRocks(tmp_path / "db")
        store = assemble(L1Cache(100, 60.0), [rocks])
        await store.put_many([(KEY, value(5))])
        rocks.held = 1
        hasty = asyncio.create_task(store.get_many([KEY], [decode], timeout_s=0.01))
        cancelled = asyncio.create_task(store.get_many([KEY], [decode], timeout_s=10.0))
        patient = asyncio.create_task(store.get_many([KEY], [decode], timeout_s=10.0))
        assert await hasty == [UNAVAILABLE]  # its deadline passed: defaults for it alone
        cancelled.cancel()  # its client went away
        await asyncio.sleep(0.05)
        rocks.gate.set()
        assert await patient == [5]
        assert rocks.reads == 1  # one fetch served all three
        await store.close()

    asyncio.run(go())
