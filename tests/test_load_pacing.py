"""Pacer: how fast `livefeat load` writes (fixed, unlimited, or "auto" beside serving replicas)."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import TierUnavailable
from service.load import Pacer

ITEMS = [(b"k%d" % i, b"v") for i in range(2_000)]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the pacer asks asyncio.sleep for (none is slept: no clock in the checks)."""
    asked: list[float] = []

    async def sleep(delay: float) -> None:
        asked.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return asked


def test_no_limit_writes_each_batch_whole_without_waiting(sleeps: list[float]) -> None:
    async def go() -> None:
        pacer = Pacer(0)
        await pacer.refresh()
        assert pacer.slices(ITEMS) == [ITEMS]
        await pacer.wait(1_000_000)
        assert sleeps == []
        assert pacer.describe() == ""

    asyncio.run(go())


def test_a_fixed_rate_spreads_slices_over_time(sleeps: list[float]) -> None:
    async def go() -> None:
        pacer = Pacer(10_000)
        slices = pacer.slices(ITEMS)
        assert [len(s) for s in slices] == [Pacer.SLICE_ROWS] * (2_000 // Pacer.SLICE_ROWS)
        for part in slices:
            await pacer.wait(len(part))
        # The first slice goes at once; each later one waits for the rows before it
        # (the sleeps are not slept, so each delay counts from the first slice).
        assert len(sleeps) == len(slices) - 1
        assert sleeps == sorted(sleeps)
        assert max(sleeps) == pytest.approx((2_000 - Pacer.SLICE_ROWS) / 10_000, abs=0.01)
        assert pacer.describe() == "; paced to 10,000 rows/s (--max-rows-per-s)"

    asyncio.run(go())


def test_auto_paces_only_while_replicas_subscribe() -> None:
    answers: list[int | Exception] = [0, 2, TierUnavailable("change_feed", "down"), 0]

    async def count() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def go() -> None:
        pacer = Pacer(None, serving_rows_per_s=5_000, count_replicas=count)
        await pacer.refresh()
        assert (pacer.rate, pacer.replicas) == (0, 0)
        assert pacer.slices(ITEMS) == [ITEMS]
        await pacer.refresh()
        assert (pacer.rate, pacer.replicas) == (5_000, 2)
        assert len(pacer.slices(ITEMS)) > 1
        await pacer.refresh()  # Redis did not answer: keep pacing as before
        assert (pacer.rate, pacer.replicas) == (5_000, 2)
        await pacer.wait(Pacer.SLICE_ROWS)
        assert "rows paced to 5,000 rows/s while 2 serving replica(s)" in pacer.describe()
        await pacer.refresh()
        assert pacer.rate == 0

    asyncio.run(go())


def test_auto_without_redis_never_paces() -> None:
    async def go() -> None:
        pacer = Pacer(None, count_replicas=None)
        await pacer.refresh()
        assert pacer.rate == 0

    asyncio.run(go())
