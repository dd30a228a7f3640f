"""ReportGauges: the livefeat_report_* gauges follow report.json as it is replaced."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from service import metrics
from service.http.console import ReportGauges


def value(name: str, view: str | None = None) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, {"view": view} if view else {})


def report(path: Path, psi: float | None, flagged: list[str], generated_ms: int) -> None:
    doc: dict[str, Any] = {
        "generated_ms": generated_ms,
        "views": {"rooms": {"worst": {"psi": psi}, "flagged": flagged},
                  "pairs": {"worst": {"psi": None}, "flagged": []}},
    }  # fmt: skip
    path.write_bytes(orjson.dumps(doc))
    stamp = generated_ms // 1000  # a distinct mtime per version, whatever the clock
    os.utime(path, (stamp, stamp))


def test_gauges_follow_the_file(tmp_path: Path) -> None:
    gauges = ReportGauges(tmp_path)
    gauges.refresh()
    assert value("livefeat_report_worst_psi", "rooms") is None
    assert value("livefeat_report_generated_timestamp_seconds") == 0
    report(tmp_path / "report.json", 0.31, ["score"], 1_764_000_000_000)
    gauges.refresh()
    assert value("livefeat_report_worst_psi", "rooms") == 0.31
    assert value("livefeat_report_worst_psi", "pairs") is None  # not measured: absent
    assert value("livefeat_report_flagged_features", "rooms") == 1
    assert value("livefeat_report_generated_timestamp_seconds") == 1_764_000_000
    report(tmp_path / "report.json", 0.05, [], 1_764_000_100_000)
    gauges.refresh()
    assert value("livefeat_report_worst_psi", "rooms") == 0.05
    assert value("livefeat_report_flagged_features", "rooms") == 0
    (tmp_path / "report.json").write_bytes(b"{not json")
    gauges.refresh()
    assert value("livefeat_report_worst_psi", "rooms") is None
    (tmp_path / "report.json").unlink()
    gauges.refresh()
    assert value("livefeat_report_generated_timestamp_seconds") == 0


def test_no_report_dir_sets_nothing() -> None:
    ReportGauges(None).refresh()  # never touches the file system
    assert repr(ReportGauges(None)) == "<ReportGauges None seen=None>"
