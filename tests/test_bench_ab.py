"""loadtest.ab: two trees of livefeat alternated, their CPU per request and its ratio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loadtest import ab

REPO = Path(__file__).resolve().parent.parent

METRICS = """\
# TYPE livefeat_tier_operation_duration_seconds histogram
livefeat_tier_operation_duration_seconds_count{op="get",tier="redis"} 620.0
livefeat_tier_operation_duration_seconds_count{op="put",tier="redis"} 7.0
livefeat_tier_operation_duration_seconds_count{op="get",tier="rocksdb"} 3.0
livefeat_requests_total{code="200",route="/v1/bundle",transport="http"} 600.0
livefeat_requests_total{code="OK",route="GetBundle",transport="grpc"} 400.0
livefeat_requests_total{code="400",route="/v1/bundle",transport="http"} 9.0
livefeat_requests_total{code="200",route="/readyz",transport="http"} 1.0
"""


def test_tier_calls_counts_reads_per_tier_and_answered_bundles() -> None:
    assert ab.tier_calls(METRICS) == {"redis": 620.0, "rocksdb": 3.0, "bundles": 1000.0}


def test_the_summary_is_the_median_of_each_side_and_of_the_per_round_ratios() -> None:
    rounds = [
        {"this": {"http": 0.5}, "other": {"http": 0.6}},
        {"this": {"http": 0.9}, "other": {"http": 0.8}},  # a slow moment hits both
        {"this": {"http": 0.4}, "other": {"http": 0.5}},
    ]
    got = ab.summarize(rounds, ["http"])["http"]
    assert got == {"this_ms": 0.5, "other_ms": 0.6, "ratios": [0.833, 1.125, 0.8],
                   "median_ratio": 0.833}  # fmt: skip


def test_a_tree_without_the_package_or_its_code_and_a_dir_without_data_are_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="no service/ package"):
        ab.check_inputs(tmp_path, REPO)
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "__init__.py").write_text("")
    with pytest.raises(ValueError, match="no generated code"):
        ab.check_inputs(tmp_path, REPO)
    with pytest.raises(ValueError, match="no demo data"):
        ab.check_inputs(REPO, tmp_path)
    argv = ["--other", str(tmp_path), "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]
    assert ab.main(argv) == 2
    assert not (tmp_path / "o").exists()


def test_a_round_runs_both_servers_on_both_transports_over_one_redis(
    demo_template: Path, tmp_path: Path
) -> None:
    """End to end, with this tree as the other one: what the report says comes from two
    real servers, a real Redis and the benchmark's client."""
    data = tmp_path / "data"
    shutil.copytree(demo_template, data, ignore=shutil.ignore_patterns("demo-parquet"))
    out = tmp_path / "ab.json"
    argv = ["--other", str(REPO), "--store", "cold", "--rounds", "1", "--duration", "1",
            "--warmup", "0.5", "--requests", "200", "--data-dir", str(data), "--out", str(out)]  # fmt: skip
    assert ab.main(argv) == 0
    report = json.loads(out.read_text())
    (row,) = report["rounds"]
    for side in ab.NAMES:
        assert set(row[side]) == {"http", "grpc"}
        assert all(ms > 0 for ms in row[side].values())
        calls = report["tier_calls"][side]
        assert calls["bundles"] > 0 and calls["redis"] > 0  # L1 off: every request read Redis
    assert set(report["summary"]) == {"http", "grpc"}
    assert report["candidates"] == 100  # the default; --candidates 500 for the other size


def test_candidates_are_one_of_the_benchmarks_two_sizes() -> None:
    base = ["--other", str(REPO)]
    assert ab.parser().parse_args(base).candidates == 100
    assert ab.parser().parse_args([*base, "--candidates", "500"]).candidates == 500
    with pytest.raises(SystemExit):
        ab.parser().parse_args([*base, "--candidates", "300"])
