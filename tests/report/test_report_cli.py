"""`livefeat report` over a known dataset: report.json against the dataset's source values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.report import dataset
from tests.report.conftest import SAMPLE, SEED, ReportRun, run_livefeat

pytestmark = pytest.mark.process

SHARE_TOLERANCE = 0.03  # a 2,000-of-4,000 draw: the sd of a 20% share is about 0.006


def test_status_shares_are_the_shares_set(report_run: ReportRun) -> None:
    view = report_run.doc["views"]["room_stats"]
    assert view["id_source"] == "offline"
    assert view["population"] == dataset.N_ROOMS and view["sampled"] == SAMPLE
    expected = {"DEFAULTED": dataset.MISSING_SHARE, "STALE": dataset.STALE_SHARE,
                "FOUND": 1 - dataset.MISSING_SHARE - dataset.STALE_SHARE, "UNAVAILABLE": 0.0}  # fmt: skip
    for status, share in expected.items():
        assert view["status"][status] == pytest.approx(share, abs=SHARE_TOLERANCE), status


def test_the_shifted_feature_and_only_it_is_flagged(report_run: ReportRun) -> None:
    view = report_run.doc["views"]["room_stats"]
    assert view["flagged"] == ["score"]
    score = view["features"]["score"]["skew"]
    assert score["psi"] > 0.2 and score["ks"] > 0.1 and score["mismatch"] == 1.0
    assert set(score["flags"]) == {"psi", "ks", "mismatch"}
    for name in ("viewer_count", "stable", "live", "category", "room_embedding"):
        skew = view["features"][name]["skew"]
        assert skew["flags"] == [], name
        assert skew["mismatch"] == 0.0, name  # served exactly what was trained on
    assert view["worst"]["psi"] == score["psi"]
    assert "score" in report_run.stdout


def test_distribution_of_a_fully_sampled_view_matches_the_source(report_run: ReportRun) -> None:
    view = report_run.doc["views"]["user_room_affinity"]
    assert view["id_source"] == "store" and view["sampled"] == dataset.N_PAIRS
    assert view["status"]["FOUND"] == 1.0
    for name in ("watch_sec_30d", "gifts_30d"):
        source = report_run.data.pair_columns[name].astype(np.float64)
        got = view["features"][name]["distribution"]
        assert got["count"] == dataset.N_PAIRS
        assert got["mean"] == pytest.approx(source.mean())
        assert got["quantiles"]["p50"] == pytest.approx(np.percentile(source, 50))
        assert got["quantiles"]["p99"] == pytest.approx(np.percentile(source, 99))
        assert sum(got["histogram"]["counts"]) == dataset.N_PAIRS


def test_typed_summaries_match_the_source(report_run: ReportRun) -> None:
    features = report_run.doc["views"]["room_stats"]["features"]
    rooms = report_run.data.rooms
    live = features["live"]["distribution"]
    assert live["true_share"] == pytest.approx(rooms["live"].mean(), abs=SHARE_TOLERANCE)
    category = features["category"]["distribution"]
    assert category["cardinality"] == len(dataset.CATEGORIES)
    assert category["top"][0][0] == "gaming"
    vectors = features["room_embedding"]["distribution"]
    assert vectors["dim"] == 4
    norms = np.linalg.norm(rooms["room_embedding"].astype(np.float64), axis=1)
    assert vectors["norm"]["mean"] == pytest.approx(norms.mean(), rel=0.05)
    # Missing rooms are served their defaults: at least the DEFAULTED share.
    assert features["viewer_count"]["default_share"] >= dataset.MISSING_SHARE - SHARE_TOLERANCE


def test_value_ages_show_the_stale_rows(report_run: ReportRun) -> None:
    ages = report_run.doc["views"]["room_stats"]["age_ms"]
    stale_s = dataset.STALE_AGE_MS / 1000
    assert ages["quantiles_ms"]["p1"] / 1000 < 300  # fresh rows: loaded just before
    assert stale_s <= ages["quantiles_ms"]["p99"] / 1000 < stale_s + 600
    assert sum(ages["histogram_ms"]["counts"]) == ages["count"]


def test_served_log_status_over_time(report_run: ReportRun) -> None:
    served = report_run.doc["served"]
    assert served["records"] == report_run.served["records"]
    assert served["bad_lines"] == 1 and "time_ms" in served["errors"][0]
    rooms = served["views"]["room_stats"]
    assert rooms["status"]["DEFAULTED"] == pytest.approx(report_run.served["defaulted_share"])
    series = rooms["series"]
    assert series["width_s"] == 60 and len(series["start_ms"]) == 10
    assert series["DEFAULTED"] == [0] * 5 + [6] * 5
    assert served["views"]["user_room_affinity"]["status"]["DEFAULTED"] == 1.0
    assert rooms["features"]["viewer_count"]["mean"] == pytest.approx(100 + 5.5)


def test_same_seed_same_report_fail_on_skew_and_plots_listed(
    report_run: ReportRun, tmp_path: Path
) -> None:
    data = report_run.data
    done = run_livefeat("report", "--registry", str(data.registry), "--data-dir",
                        str(report_run.data_dir), "--out", str(tmp_path), "--sample", str(SAMPLE),
                        "--seed", str(SEED), "--offline", f"room_stats={data.offline}",
                        "--fail-on-skew")  # fmt: skip
    assert done.returncode == 1, done.stderr  # --fail-on-skew: score is flagged
    assert "flagged: room_stats.score" in done.stdout
    again = orjson.loads((tmp_path / "report.json").read_bytes())["views"]["room_stats"]
    first = report_run.doc["views"]["room_stats"]
    assert again["status"] == first["status"]
    assert again["features"]["score"]["skew"] == first["features"]["score"]["skew"]
    plots = set(report_run.doc["plots"])
    for view in ("room_stats", "user_room_affinity"):
        for name in report_run.doc["views"][view]["features"]:
            assert f"{view}/{name}" in plots
        assert f"{view}/age" in plots
    assert {"status", "served/room_stats"} <= plots


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--offline", "room_stats"], "--offline 'room_stats': expected VIEW=FILE.parquet"),
        (["--offline", "nope=x.parquet"], "no view 'nope'"),
        (["--offline", "room_stats={pairs}"], "column 'viewer_count': missing"),
        (["--served", "/nonexistent/served"], "--served /nonexistent/served: no such file"),
        (["--sample", "0"], "--sample 0: expected at least 1"),
    ],
)
def test_bad_flags_are_named(
    report_run: ReportRun, tmp_path: Path, flags: list[str], message: str
) -> None:
    data = report_run.data
    flags = [f.format(pairs=data.pairs) for f in flags]
    done = run_livefeat("report", "--registry", str(data.registry), "--data-dir",
                        str(report_run.data_dir), "--out", str(tmp_path), *flags)  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
