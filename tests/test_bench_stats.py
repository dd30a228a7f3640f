"""Tests of the benchmark runner's statistics (loadtest/stats.py)."""

from __future__ import annotations

import random

import pytest

from loadtest import stats


def test_nearest_rank_on_1_to_1000() -> None:
    samples = list(range(1, 1001))
    assert stats.percentiles(samples) == [500, 900, 990, 999]
    assert stats.percentile(samples, 100) == 1000
    assert stats.percentile(samples, 0.1) == 1
    assert stats.percentile(samples, 0.05) == 1  # rank rounds up, never below 1


def test_order_of_input_does_not_matter() -> None:
    samples = list(range(1, 1001))
    shuffled = samples[:]
    random.Random(7).shuffle(shuffled)
    assert stats.percentiles(shuffled) == stats.percentiles(samples)
    assert shuffled != samples  # the input is not sorted in place


def test_nearest_rank_on_small_lists() -> None:
    samples = [15, 20, 35, 40, 50]  # the textbook example of the nearest-rank method
    assert stats.percentile(samples, 5) == 15
    assert stats.percentile(samples, 30) == 20
    assert stats.percentile(samples, 40) == 20
    assert stats.percentile(samples, 50) == 35
    assert stats.percentile(samples, 100) == 50
    # fewer than 1000 samples: p99.9 is the maximum
    assert stats.percentile(list(range(1, 101)), 99.9) == 100
    assert stats.percentile(list(range(1, 101)), 99) == 99


def test_percentile_is_always_an_observed_sample() -> None:
    rng = random.Random(3)
    samples = [rng.expovariate(1.0) for _ in range(777)]
    for q in (1, 33.3, 50, 90, 99, 99.9, 100):
        assert stats.percentile(samples, q) in samples


def test_constant_samples() -> None:
    assert stats.percentiles([7] * 12_345) == [7, 7, 7, 7]
    summary = stats.latency_summary([2_000_000] * 10)
    assert summary["p50"] == summary["p99.9"] == summary["mean"] == summary["max"] == 2.0


def test_single_sample() -> None:
    assert stats.percentiles([42]) == [42, 42, 42, 42]
    assert stats.median([42]) == 42
    summary = stats.latency_summary([1_500_000])
    assert summary == {
        "count": 1, "p50": 1.5, "p90": 1.5, "p99": 1.5, "p99.9": 1.5,
        "mean": 1.5, "min": 1.5, "max": 1.5,
    }  # fmt: skip


def test_empty_samples_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match="empty"):
        stats.percentiles([])
    with pytest.raises(ValueError, match="no latency samples"):
        stats.latency_summary([])
    with pytest.raises(ValueError, match="empty"):
        stats.median([])
    with pytest.raises(ValueError, match="no runs"):
        stats.median_of_runs([])


@pytest.mark.parametrize("q", [0, -1, 100.01, 150])
def test_percentile_outside_range_is_an_error(q: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        stats.percentile([1, 2, 3], q)


def test_latency_summary_converts_ns_to_ms() -> None:
    samples_ns = [i * 1_000_000 for i in range(1, 1001)]  # 1..1000 ms
    summary = stats.latency_summary(samples_ns)
    assert summary["count"] == 1000
    assert (summary["p50"], summary["p90"], summary["p99"], summary["p99.9"]) == (
        500.0, 900.0, 990.0, 999.0,
    )  # fmt: skip
    assert summary["mean"] == pytest.approx(500.5)
    assert (summary["min"], summary["max"]) == (1.0, 1000.0)


def test_percentile_key() -> None:
    assert [stats.percentile_key(q) for q in stats.PERCENTILES] == ["p50", "p90", "p99", "p99.9"]


def test_median() -> None:
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.median(iter([5.0, 1.0, 9.0])) == 5.0


def test_throughput_and_cpu_percent() -> None:
    assert stats.throughput(20_000, 20.0) == 1000.0
    assert stats.throughput(0, 3.0) == 0.0
    assert stats.cpu_percent(1.5, 3.0) == 50.0
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="positive duration"):
            stats.throughput(10, bad)
        with pytest.raises(ValueError, match="positive duration"):
            stats.cpu_percent(1.0, bad)
    with pytest.raises(ValueError, match="negative"):
        stats.throughput(-1, 1.0)


def test_ratio() -> None:
    assert stats.ratio(800.0, 1000.0) == 0.8
    assert stats.ratio(1.0, 0) is None
    assert stats.ratio(None, 1.0) is None
    assert stats.ratio(1.0, None) is None


def test_median_of_runs_takes_each_figure_independently() -> None:
    runs = [
        {"case": "a", "rps": 100.0, "errors": 0, "latency_ms": {"p50": 1.0, "p99": 9.0}},
        {"case": "a", "rps": 300.0, "errors": 2, "latency_ms": {"p50": 3.0, "p99": 5.0}},
        {"case": "a", "rps": 200.0, "errors": 1, "latency_ms": {"p50": 2.0, "p99": 7.0}},
    ]
    assert stats.median_of_runs(runs) == {
        "case": "a", "rps": 200.0, "errors": 1, "latency_ms": {"p50": 2.0, "p99": 7.0},
    }  # fmt: skip


def test_median_of_runs_with_missing_and_disagreeing_values() -> None:
    runs = [
        {"rps": 1.0, "note": "x", "server_cpu": None, "label": "same"},
        {"rps": 3.0, "note": "y", "server_cpu": 4.0, "label": "same"},
    ]
    assert stats.median_of_runs(runs) == {"rps": 2.0, "server_cpu": 4.0, "label": "same"}
    assert stats.median_of_runs([{"x": None}]) == {"x": None}


def test_per_second_view_and_its_worst_second() -> None:
    from loadtest.stats import per_second, worst_second_p99

    t0 = 10_000_000_000
    # second 0: 30 requests of 1 ms; second 1: 29 of 1 ms and one of 50 ms; second 2: 3 slow
    done = [t0 + i * 10_000_000 for i in range(30)] + [t0 + 1_000_000_000 + i for i in range(30)]
    lat = [1_000_000] * 59 + [50_000_000]
    done += [t0 + 2_000_000_000] * 3
    lat += [90_000_000] * 3
    seconds = per_second(lat, done, t0)
    assert [s["second"] for s in seconds] == [0, 1, 2]
    assert [s["requests"] for s in seconds] == [30, 30, 3]
    assert seconds[0]["p99_ms"] == 1.0 and seconds[1]["p99_ms"] == 50.0
    assert worst_second_p99(seconds) == 50.0  # the 3-request second is too thin to count
