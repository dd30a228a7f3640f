"""The benchmark's PNG report (loadtest/report.py) renders from a synthetic JSON report."""

from __future__ import annotations

import json
from pathlib import Path

from loadtest import report
from tests.test_bench_analysis import synthetic


def test_render_writes_a_png(tmp_path: Path) -> None:
    data = synthetic()
    data["machine"] = {"date": "2026-01-01T00:00:00+00:00", "git": {"commit": "abcdef1234567"}}
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(data))
    assert report.main([str(source)]) == 0
    png = tmp_path / "bench.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # panels and tables, not an empty canvas


def test_ratio_rows_name_each_comparison_once() -> None:
    rows = report._ratio_rows(synthetic()["ratios"])
    labels = [r[0] for r in rows if r[0]]
    assert "grpc-cold-100 / grpc-redis-100" in labels
    assert len(labels) == len(set(labels)) == 7
    assert len(rows) == 14  # 7 comparisons x 2 concurrencies
