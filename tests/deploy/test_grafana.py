"""deploy/grafana/livefeat.json: a well-formed dashboard over series livefeat really exports.

(tests/deploy/test_prometheus_scrape.py also runs every query against a real Prometheus.)
"""

from __future__ import annotations

import json
from typing import Any

from tests.deploy.support import DEPLOY, METRIC_NAME, exposed_metric_names

DASHBOARD = DEPLOY / "grafana" / "livefeat.json"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_panels_are_well_formed_and_do_not_overlap() -> None:
    board = dashboard()
    assert board["uid"] == "livefeat" and board["schemaVersion"] >= 36
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "pod"} <= variables
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    taken: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"panel {p['title']!r} overlaps another"
        taken |= cells
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for target in p["targets"]:
            assert target["expr"].strip() and target["refId"], p["title"]


def test_queries_name_real_series_and_cover_the_signals() -> None:
    exprs = queries(dashboard())
    used = {m for e in exprs for m in METRIC_NAME.findall(e)}
    unknown = used - exposed_metric_names()
    assert not unknown, f"the dashboard queries series livefeat does not export: {unknown}"
    for needed in ("livefeat_requests_total", "livefeat_request_duration_seconds_bucket",
                   "livefeat_tier_keys_total", "livefeat_tier_operation_duration_seconds_bucket",
                   "livefeat_served_rows_total", "livefeat_served_value_age_seconds_bucket",
                   "livefeat_newest_event_timestamp_seconds", "livefeat_tier_circuit_open"):  # fmt: skip
        assert needed in used, f"no panel shows {needed}"
    assert any('source="load"' in e for e in exprs), "load progress"
    assert all('namespace=~"$namespace"' in e for e in exprs if "livefeat_" in e)
