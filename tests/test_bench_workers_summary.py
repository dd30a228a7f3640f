"""loadtest.workers' summary: the ratio of the medians, and each repetition's own ratio."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.workers import CLIENTS, summarize


def run(rep: int, store: str, workers: int, rps: float) -> dict[str, Any]:
    return {"repetition": rep, "store": store, "transport": "grpc", "workers": workers,
            "throughput_rps": rps, "client_cpu_pct": 10.0 * workers, "server_cpu_pct": 90.0,
            "redis_cpu_pct": 0.0, "p99_ms": 5.0}  # fmt: skip


def test_each_repetition_is_paired_with_itself() -> None:
    # A machine that slows down over the run: the medians pair a fast 1-worker run with a
    # slow 2-worker one; each repetition's ratio does not.
    runs = [run(0, "embedded", 1, 3000), run(0, "embedded", 2, 4800),
            run(1, "embedded", 2, 3200), run(1, "embedded", 1, 2000),
            run(2, "embedded", 1, 1500), run(2, "embedded", 2, 2400)]  # fmt: skip
    [row] = summarize(runs)
    assert row["throughput_rps_1w"] == 2000 and row["throughput_rps_2w"] == 3200
    assert row["ratio"] == pytest.approx(1.6)
    assert row["ratios"] == [1.6, 1.6, 1.6]
    assert row["median_ratio"] == 1.6
    assert row["client_cpu_pct_2w"] == 20.0


def test_a_repetition_missing_a_side_or_with_no_throughput_has_no_ratio() -> None:
    runs = [run(0, "redis", 1, 2000), run(0, "redis", 2, 3000),
            run(1, "redis", 1, 0.0), run(1, "redis", 2, 2500),
            run(2, "redis", 2, 2800)]  # fmt: skip
    [row] = summarize(runs)
    assert row["ratios"] == [1.5]
    assert row["median_ratio"] == 1.5


def test_every_client_names_a_kind_for_both_transports() -> None:
    from loadtest.clients import CLIENTS as KINDS

    for transports in CLIENTS.values():
        assert set(transports) == {"http", "grpc"}
        assert set(transports.values()) <= set(KINDS)
