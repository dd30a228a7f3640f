"""docs/metrics.md catalogues exactly the metrics of service/metrics.py, with their types and labels."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from service import metrics
from tests.deploy.support import ROOT

CATALOGUE = ROOT / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(?P<name>livefeat_[a-z0-9_]+)` \| (?P<type>\w+) \| (?P<labels>[^|]*) \|")


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) of every row of the catalogue's table."""
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in CATALOGUE.read_text().splitlines():
        match = ROW.match(line)
        if match:
            assert match["name"] not in rows, f"{match['name']} is catalogued twice"
            labels = tuple(re.findall(r"`([a-z_]+)`", match["labels"]))
            rows[match["name"]] = (match["type"], labels)
    return rows


def declared() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) of every metric in service/metrics.py's REGISTRY."""
    wrappers: dict[str, Any] = {
        w._name: w for w in vars(metrics).values() if isinstance(w, MetricWrapperBase)
    }
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in metrics.REGISTRY.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        wrapper = wrappers.get(family.name)
        assert wrapper is not None, f"{family.name} is registered but not declared in metrics.py"
        out[name] = (family.type, tuple(wrapper._labelnames))
    return out


def test_every_metric_is_catalogued_with_its_type_and_labels() -> None:
    doc, code = documented(), declared()
    assert code, "service/metrics.py's REGISTRY is empty"
    missing = sorted(set(code) - set(doc))
    assert not missing, f"add these metrics to docs/metrics.md: {missing}"
    gone = sorted(set(doc) - set(code))
    assert not gone, f"docs/metrics.md lists metrics service/metrics.py no longer has: {gone}"
    for name, (kind, labels) in code.items():
        assert doc[name] == (kind, labels), (
            f"{name}: docs say {doc[name]}, code says {(kind, labels)}"
        )


def test_catalogue_parser_reads_rows() -> None:
    rows = documented()
    assert rows["livefeat_requests_total"] == ("counter", ("transport", "route", "code"))
    assert rows["livefeat_l1_rows"] == ("gauge", ())
