"""The pure logic of loadtest/load_rate.py and loadtest/load_impact.py (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.load_impact import (
    metric_deltas,
    newer_pairs_file,
    overlap,
    p99_ratio,
    parse_metrics,
    redis_get_quantiles,
)
from loadtest.load_rate import (
    CLK_TCK,
    check,
    command_deltas,
    cpu_times_busy,
    parse_load_output,
    totals,
)

CLI_LINE = (
    "user_room_affinity: 1000000 rows in 7.6 s (130,927 rows/s): "
    "999000 written, 1000 ignored as not newer\n"
)


def test_parse_load_output_takes_rows_per_s_in_full() -> None:
    got = parse_load_output("some progress\n" + CLI_LINE)
    assert got is not None
    assert got["view"] == "user_room_affinity"
    assert (got["rows"], got["written"], got["ignored"]) == (1_000_000, 999_000, 1_000)
    assert got["cli_rows_per_s"] == 130_927
    assert got["cli_s"] == pytest.approx(1_000_000 / 130_927)  # finer than the printed 7.6 s


def test_parse_load_output_with_a_resumed_load() -> None:
    line = (
        "room_stats: 20000 rows in 0.3 s (63,139 rows/s): 20000 written, 0 ignored as not "
        "newer, 5000 done by an earlier run"
    )
    got = parse_load_output(line)
    assert got is not None and got["rows"] == 20_000


def test_parse_load_output_without_a_summary() -> None:
    assert parse_load_output("livefeat load: no view 'x'\n") is None


def test_cpu_times_busy_counts_idle_and_iowait_as_idle() -> None:
    line = "cpu  100 10 50 800 40 5 5 0 0 0"
    busy, total = cpu_times_busy(line)
    assert total == pytest.approx(1010 / CLK_TCK)
    assert busy == pytest.approx((1010 - 800 - 40) / CLK_TCK)


def _view(rows: int, wall: float, cli: float | None, **more: float) -> dict[str, float | None]:
    return {"rows": rows, "wall_s": wall, "cli_s": cli, "load_cpu_s": 1.0, **more}


def test_totals_take_rates_from_the_sums() -> None:
    views = {
        "a": _view(100, 2.0, 1.0, redis_cpu_s=0.5, redis_script_us_per_row=4.0,
                   machine_busy_cores=2.0),
        "b": _view(300, 2.0, 1.0, redis_cpu_s=0.5, redis_script_us_per_row=8.0,
                   machine_busy_cores=1.0),
    }  # fmt: skip
    got = totals(views)
    assert got["rows"] == 400
    assert got["rows_per_s"] == pytest.approx(100.0)  # 400 rows / 4 s, not a mean of rates
    assert got["cli_rows_per_s"] == pytest.approx(200.0)
    assert got["load_cpu_s"] == 2.0 and got["redis_cpu_s"] == 1.0
    assert got["redis_script_us_per_row"] == pytest.approx((400 + 2400) / 400)
    assert got["machine_busy_cores"] == pytest.approx(1.5)  # weighted by wall time


def test_totals_without_redis_or_cli_timer() -> None:
    got = totals({"a": _view(100, 1.0, None), "b": _view(100, 1.0, 0.5)})
    assert got["cli_s"] is None and got["cli_rows_per_s"] is None
    assert "redis_cpu_s" not in got


@pytest.mark.parametrize(
    ("value", "higher", "ok"),
    [(120_000.0, True, True), (90_000.0, True, False), (None, True, None), (40.0, False, True)],
)
def test_check(value: float | None, higher: bool, ok: bool | None) -> None:
    limit = 100_000.0 if higher else 50.0
    got = check("t", value, limit, higher)
    assert got["ok"] is ok
    assert got["limit"] == (">= 100000" if higher else "<= 50")


def test_command_deltas() -> None:
    before = {"evalsha": [10, 1_000], "mget": [5, 50], "publish": [0, 0]}
    after = {"evalsha": [30, 101_000], "mget": [5, 50], "publish": [4, 400]}
    got = command_deltas(before, after)
    assert got["evalsha"] == {"calls": 20, "seconds": 0.1, "usec_per_call": 5_000.0}
    assert "mget" not in got  # no calls in between
    assert got["publish"]["usec_per_call"] == 100.0


METRICS = """\
# HELP livefeat_change_feed_keys_total Keys in change notifications.
# TYPE livefeat_change_feed_keys_total counter
livefeat_change_feed_keys_total{direction="received"} 950000.0
livefeat_change_feed_connected 1.0
livefeat_l1_rows 20283.0
livefeat_requests_total{path="/v1/bundle"} 12.0
"""


def test_parse_metrics_keeps_watched_names_only() -> None:
    got = parse_metrics(METRICS)
    assert got == {
        'livefeat_change_feed_keys_total{direction="received"}': 950_000.0,
        "livefeat_change_feed_connected": 1.0,
        "livefeat_l1_rows": 20_283.0,
    }


def test_metric_deltas_subtract_counters_keep_gauges() -> None:
    before = {'c_total{d="r"}': 10.0, "g": 5.0}
    after = {'c_total{d="r"}': 15.0, "g": 7.0, "new_total": 3.0}
    assert metric_deltas(before, after) == {'c_total{d="r"}': 5.0, "g": 7.0, "new_total": 3.0}


@pytest.mark.parametrize(
    ("window", "span", "fraction"),
    [
        ((2, 4), (0, 10), 1.0),
        ((2, 4), (3, 10), 0.5),
        ((2, 4), (5, 10), 0.0),
        ((2, 4), (0, 3), 0.5),
        ((2, 2), (0, 10), 0.0),
    ],
)
def test_overlap(window: tuple[int, int], span: tuple[int, int], fraction: float) -> None:
    assert overlap(window, span) == pytest.approx(fraction)


def test_p99_ratio() -> None:
    assert p99_ratio({"p99": 10.0}, {"p99": 5.0}) == 2.0
    assert p99_ratio({"p50": 3.0}, {"p50": 1.5}, "p50") == 2.0
    assert p99_ratio(None, {"p99": 5.0}) is None
    assert p99_ratio({"p99": 5.0}, {"p99": 0.0}) is None


def test_metric_deltas_subtract_histogram_buckets() -> None:
    name = 'h_bucket{le="0.001"}'
    assert metric_deltas({name: 4.0}, {name: 10.0}) == {name: 6.0}


def test_redis_get_quantiles_from_bucket_deltas() -> None:
    series = "livefeat_tier_operation_duration_seconds_bucket"
    counts = {"0.0005": 50.0, "0.001": 90.0, "0.005": 99.0, "0.01": 100.0, "+Inf": 100.0}
    deltas = {f'{series}{{le="{le}",op="get",tier="redis"}}': n for le, n in counts.items()}
    deltas[f'{series}{{le="+Inf",op="put",tier="redis"}}'] = 7.0  # other series: ignored
    deltas[f'{series}{{le="+Inf",op="get",tier="rocksdb"}}'] = 7.0
    got = redis_get_quantiles(deltas)
    assert got == {"count": 100.0, "p50_under_ms": 0.5, "p99_under_ms": 5.0}
    assert redis_get_quantiles({}) is None


def test_newer_pairs_file_copies_and_cuts(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"user_id": [1, 2, 3], "event_time": [5, 5, 5]}), source)
    dest = tmp_path / "newer.parquet"
    assert newer_pairs_file(source, dest, 100, copies=2) == 6
    assert pq.read_table(dest).column("event_time").to_pylist() == [100] * 3 + [101] * 3
    assert newer_pairs_file(source, dest, 100, copies=2, rows=4) == 4
    assert pq.read_table(dest).column("user_id").to_pylist() == [1, 2, 3, 1]
