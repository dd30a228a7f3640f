"""The Spark feature jobs against a reference computed with duckdb and numpy on the same
tiny event log: counts and sums exact, floats within 1e-9 (doubles) or 1e-5 (float32
embeddings); and point-in-time correctness: events after the cut-off change nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
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


def test_parquet_has_the_registry_types(spark: Any, events: Path, registry: Registry,
                                        live_cutoff_ms: int, tmp_path: Path) -> None:  # fmt: skip
    ev = features.read_events(spark, events)
    plan = registry.views["room_stats"]
    path = features.write_parquet(features.compute(ev, plan, live_cutoff_ms), tmp_path / "r.pq")
    schema = pq.read_schema(path)
    assert schema.names == ["room_id", "event_time", *(f.name for f in plan.codec.features)]
    assert str(schema.field("event_time").type) == "int64"
    assert str(schema.field("viewer_count").type) == "int64"
    assert str(schema.field("like_rate").type) == "double"
    assert str(schema.field("category").type) == "string"
    assert str(schema.field("room_embedding").type) == "list<element: float>"
    assert set(pq.read_table(path, columns=["event_time"])["event_time"].to_pylist()) == {
        live_cutoff_ms
    }


@pytest.mark.parametrize("view", list(features.JOBS))
def test_job_matches_the_reference(spark: Any, events: Path, registry: Registry,
                                   live_cutoff_ms: int, tmp_path: Path, view: str) -> None:  # fmt: skip
    plan = registry.views[view]
    df = features.compute(features.read_events(spark, events), plan, live_cutoff_ms)
    path = features.write_parquet(df, tmp_path / f"{view}.parquet")
    got = _by_key(path, plan.key_columns)
    want = reference.VIEWS[view](events, live_cutoff_ms)
    assert_same(view, got, want, registry)
    assert len(got) > 10
    if view == "room_stats":  # the cut-off is inside room 1's stream: live features count
        room = got[(1,)]
        assert room["viewer_count"] > 0 and room["stream_age_s"] > 0
        assert room["peak_viewers_1h"] >= room["viewer_count"]


def test_events_after_the_cutoff_change_nothing(spark: Any, events: Path, registry: Registry,
                                                tiny_spec: EventSpec, live_cutoff_ms: int,
                                                tmp_path: Path) -> None:  # fmt: skip
    """The same log, and a log with other events after the cut-off (another seed's, in
    the same partitions and later ones): every view's features are equal."""
    other = tmp_path / "other"
    write_events(EventSpec(**{**tiny_spec.__dict__, "seed": 7}), other)
    mixed = tmp_path / "mixed"
    shutil.copytree(events, mixed)
    import pyarrow.compute as pc

    later = 0
    for part in other.glob("date=*/*.parquet"):
        table = pq.read_table(part)
        table = table.filter(pc.greater(table["event_time"].cast("int64"), live_cutoff_ms))
        if table.num_rows:
            later += table.num_rows
            pq.write_table(table, mixed / part.parent.name / f"later-{part.name}")
    assert later > 100  # the test means something: events after the cut-off, in its partition too
    for view, plan in registry.views.items():
        a = features.compute(features.read_events(spark, events), plan, live_cutoff_ms)
        b = features.compute(features.read_events(spark, mixed), plan, live_cutoff_ms)
        pa_, pb = (features.write_parquet(d, tmp_path / f"{view}-{n}.pq") for n, d in (("a", a), ("b", b)))
        assert pq.read_table(pa_).equals(pq.read_table(pb)), view
