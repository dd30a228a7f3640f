import asyncio
from pathlib import Path

import pytest

from service.core.codec import header
from service.errors import DataDirBusy
from service.store.rocks import RocksTier


def value(event_time_ms: int, payload: bytes = b"x") -> bytes:
    return header(1, event_time_ms) + payload


def test_newest_event_wins(tmp_path: Path) -> None:
    async def go() -> None:
        tier = RocksTier(tmp_path / "db")
        try:
            assert await tier.put_many([(b"k", value(10, b"ten"))]) == [True]
            assert await tier.put_many([(b"k", value(5, b"five"))]) == [False]
            assert await tier.put_many([(b"k", value(10, b"again"))]) == [False]
            assert await tier.get_many([b"k", b"absent"]) == [value(10, b"ten"), None]
            assert await tier.put_many([(b"k", value(11, b"eleven"))]) == [True]
            assert await tier.get_many([b"k"]) == [value(11, b"eleven")]
        finally:
            await tier.close()

    asyncio.run(go())


def test_duplicates_in_one_batch_keep_the_newest(tmp_path: Path) -> None:
    tier = RocksTier(tmp_path / "db")
    try:
        items = [(b"k", value(3, b"3")), (b"k", value(9, b"9")), (b"k", value(4, b"4"))]
        assert tier.put_many_sync(items) == [False, True, False]
        assert tier.get_many_sync([b"k"]) == [value(9, b"9")]
    finally:
        tier.close_sync()


def test_values_survive_reopen(tmp_path: Path) -> None:
    tier = RocksTier(tmp_path / "db")
    tier.put_many_sync([(b"a:1", value(1)), (b"a:2", value(2)), (b"b:1", value(3))])
    tier.close_sync()
    tier = RocksTier(tmp_path / "db")
    try:
        assert [k for k, _ in tier.scan(b"a:")] == [b"a:1", b"a:2"]
    finally:
        tier.close_sync()


def test_second_opener_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    tier = RocksTier(tmp_path / "db")
    try:
        with pytest.raises(DataDirBusy, match="in use by another livefeat process"):
            RocksTier(tmp_path / "db")
    finally:
        tier.close_sync()
