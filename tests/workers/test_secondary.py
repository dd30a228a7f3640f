"""A secondary RocksDB instance (real RocksDB): it sees the primary's writes once caught up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.errors import TierUnavailable
from service.store.rocks import RocksTier
from service.stored import header


def value(event_time_ms: int) -> bytes:
    return header(1, event_time_ms) + b"payload"


def test_a_secondary_reads_what_the_primary_wrote_after_catching_up(tmp_path: Path) -> None:
    path = tmp_path / "rocksdb"
    with pytest.raises(TierUnavailable):  # no database yet: a secondary waits for the primary
        RocksTier(path, secondary=tmp_path / "secondary")
    primary = RocksTier(path)
    primary.put_many_sync([(b"a", value(1))])
    secondary = RocksTier(path, secondary=tmp_path / "secondary")

    async def go() -> None:
        assert await secondary.get_many([b"a", b"b"]) == [value(1), None]
        assert await primary.put_many([(b"b", value(2)), (b"a", value(3))]) == [True, True]
        assert await secondary.get_many([b"a", b"b"]) == [value(1), None]  # not caught up
        await asyncio.gather(*(secondary.catch_up() for _ in range(5)))  # shared catch-ups
        assert await secondary.get_many([b"a", b"b"]) == [value(3), value(2)]
        await secondary.close()
        await primary.close()

    asyncio.run(go())
