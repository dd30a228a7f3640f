"""loadtest/miss_path.py: the timing loop reads what the tier holds, in every place."""

from __future__ import annotations

import asyncio
from pathlib import Path

from loadtest import miss_path

ROOT = Path(__file__).resolve().parent.parent


def test_every_read_of_the_loop_answers_every_key_with_the_tiers_row() -> None:
    us, last = asyncio.run(miss_path.measure(concurrency=3, reads=20))
    assert us > 0
    assert len(last) == 101 and all(row is miss_path.ROW for row in last)


def test_a_round_of_another_tree_runs_in_its_own_process() -> None:
    assert miss_path.other_round(ROOT, concurrency=2, reads=10) > 0
