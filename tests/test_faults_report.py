"""loadtest/faults_report.py: the fault suite's results file as Markdown tables."""

from __future__ import annotations

from typing import Any

from loadtest.faults_report import report


def phase(requests: int, p99: float | None, errors: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "requests": requests,
        "ok": requests,
        "refused": 0,
        "errors": errors or {},
        "answered_within_deadline": requests,
        "answered_within_deadline_pct": 100.0 if requests else None,
        "statuses": {"FOUND": 3, "UNAVAILABLE": 1} if requests else {},
        "p50_ms": p99,
        "p99_ms": p99,
        "max_ms": p99,
        "wrong_values": 0,
    }


DOC = {
    "git": "abc1234",
    "form": "short",
    "written_utc": "2026-11-29T20:00:00Z",
    "read_deadline_s": 1.0,
    "scenarios": {
        "redis_sigstop": {
            "form": "short",
            "fault_s": 2.0,
            "recovery_s": 0.4,
            "push_recovery_s": None,
            "wrong_values": 0,
            "reads": {
                "baseline": phase(10, 5.0),
                "fault": phase(20, 101.5, {"timeout": 2}),
                "recovery": phase(0, None),
                "after": phase(5, 4.0),
                "all": phase(35, 101.5, {"timeout": 2}),
            },
            "pushes": {
                "attempted": 4,
                "acknowledged": 2,
                "refused_with_json": 2,
                "refused_but_written": 1,
                "acknowledged_lost_or_half": 0,
                "errors": {"http_503": 2},
                "fault": {"ok": 0, "errors": {"http_503": 2}},
            },
            "server_log": {"counts": {"error: boom": 1, "warning: slow": 3}},
            "storm": {"waves": 3},
        }
    },
}


def test_summary_row_and_phase_table() -> None:
    text = report(DOC)
    assert text.startswith("Run: git abc1234, form short")
    assert "| redis_sigstop | 2 | 0 | 0 | 100% | 5 -> 101.5 | timeout 2 | 2 / 2 | 0.4 / - |" in text
    assert (
        "| fault | 20 | 100% | 101.5 | 101.5 | 101.5 | timeout 2 | 0 | 75 / 0 / 0 / 25 | 0 | http_503 2 |"
        in text
    )
    assert "| recovery | 0 | -% | - | - | - | 0 | 0 | - | - | - |" in text
    assert "(of which written anyway 1)" in text
    assert 'Also: `{"storm": {"waves": 3}}`' in text
    assert "Server log errors: error: boom (1)" in text
    assert "warning: slow" not in text
