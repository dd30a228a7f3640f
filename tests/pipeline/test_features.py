"""The Spark feature jobs against a reference computed with duckdb and numpy on the same
tiny event log: counts and sums exact, floats within 1e-9 (doubles) or 1e-5 (float32
embeddings); and point-in-time correctness: events after the cut-off change nothing."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from service.core.registry import Registry
from service.pipeline import features
from service.pipeline.events import EventSpec, write_events
from tests.pipeline import reference

pytestmark = pytest.mark.process


def _by_key(path: Path, keys: tuple[str, ...]) -> dict[tuple[int, ...], dict[str, Any]]:
    rows = pq.read_table(path).to_pylist()
    return {tuple(r.pop(k) for k in keys): r for r in rows}


def assert_same(view: str, got: dict[tuple[int, ...], dict[str, Any]],
                want: dict[tuple[int, ...], dict[str, Any]], registry: Registry) -> None:  # fmt: skip
    """Every row and feature equal: exact for int64 and strings, close for floats."""
    assert got.keys() == want.keys(), f"{view}: rows differ"
    for feature in registry.views[view].codec.features:
        for key, row in want.items():
            a, b = got[key][feature.name], row[feature.name]
            where = f"{view} {key} {feature.name}"
            if feature.type == "float_vector":
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=where)
            elif feature.type == "double":
                assert a == pytest.approx(b, rel=1e-9, abs=1e-12), where
            else:
                assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def outputs(spark: Any, events: Path, registry: Registry, live_cutoff_ms: int,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # fmt: skip
    """Each job's output Parquet for the tiny log at the live cut-off, computed once."""
    out = tmp_path_factory.mktemp("features")
    log = features.read_events(spark, events)
    return {
        view: features.write_parquet(
            features.compute(log, plan, live_cutoff_ms), out / f"{view}.pq"
        )
        for view, plan in registry.views.items()
    }


def test_parquet_has_the_registry_types(outputs: dict[str, Path], registry: Registry,
                                        live_cutoff_ms: int) -> None:  # fmt: skip
    plan, path = registry.views["room_stats"], outputs["room_stats"]
    schema = pq.read_schema(path)
    assert schema.names == ["room_id", "event_time", *(f.name for f in plan.codec.features)]
    assert str(schema.field("event_time").type) == "int64"
    assert str(schema.field("viewer_count").type) == "int64"
    assert str(schema.field("like_rate").type) == "double"
    assert str(schema.field("category").type) == "string"
    assert str(schema.field("room_embedding").type) == "list<element: float>"
    times = pq.read_table(path, columns=["event_time"])["event_time"].to_pylist()
    assert set(times) == {live_cutoff_ms}


@pytest.mark.parametrize("view", list(features.JOBS))
def test_job_matches_the_reference(outputs: dict[str, Path], events: Path, registry: Registry,
                                   live_cutoff_ms: int, view: str) -> None:  # fmt: skip
    got = _by_key(outputs[view], registry.views[view].key_columns)
    want = reference.VIEWS[view](events, live_cutoff_ms)
    assert_same(view, got, want, registry)
    assert len(got) > 10
    if view == "room_stats":  # the cut-off is inside room 1's stream: live features count
        room = got[(1,)]
        assert room["viewer_count"] > 0 and room["stream_age_s"] > 0
        assert room["peak_viewers_1h"] >= room["viewer_count"]
        assert room["retention_5m"] > 0 and room["avg_watch_s"] > 0


@pytest.mark.timeout(600)  # three feature jobs: about 45 s on a busy 2-core machine
def test_events_after_the_cutoff_change_nothing(spark: Any, events: Path, registry: Registry,
                                                tiny_spec: EventSpec, live_cutoff_ms: int,
                                                outputs: dict[str, Path],
                                                tmp_path: Path) -> None:  # fmt: skip
    """The log with another log's events after the cut-off added (another seed's, in the
    cut-off's partition and later ones): every view's features are the same."""
    other = tmp_path / "other"
    write_events(EventSpec(**{**tiny_spec.__dict__, "seed": 7}), other)
    mixed = tmp_path / "mixed"
    shutil.copytree(events, mixed)
    later = 0
    for part in other.glob("date=*/*.parquet"):
        table = pq.read_table(part)
        table = table.filter(pc.greater(table["event_time"].cast("int64"), live_cutoff_ms))
        if table.num_rows:
            later += table.num_rows
            pq.write_table(table, mixed / part.parent.name / f"later-{part.name}")
    assert later > 100  # the test means something: events after the cut-off
    log = features.read_events(spark, mixed)
    for view, plan in registry.views.items():
        path = features.write_parquet(features.compute(log, plan, live_cutoff_ms),
                                      tmp_path / f"{view}.parquet")  # fmt: skip
        alone = _by_key(outputs[view], plan.key_columns)
        # Equal up to the order floats were summed in (the files differ).
        assert_same(view, _by_key(path, plan.key_columns), alone, registry)


def test_windows_read_only_their_partitions(spark: Any, events: Path, live_cutoff_ms: int,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """A 1-day window is planned with partition filters on `date` (Spark lists them as
    PartitionFilters: files of other dates are never opened)."""
    from service.pipeline.windows import DAY_MS, events_until

    day = events_until(features.read_events(spark, events), live_cutoff_ms, DAY_MS)
    day.explain()
    plan = capsys.readouterr().out
    hi = datetime.fromtimestamp(live_cutoff_ms / 1000, UTC).date()
    lo = datetime.fromtimestamp((live_cutoff_ms - DAY_MS) / 1000, UTC).date()
    filters = plan[plan.index("PartitionFilters: [") :].split("]")[0]
    assert "(date#" in filters and f"<= {hi})" in filters and f">= {lo})" in filters, filters
