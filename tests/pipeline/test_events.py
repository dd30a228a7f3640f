"""The event generator (numpy/pyarrow, no Spark): deterministic, Hive-partitioned by date,
the entity counts of its size, and events that make sense together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from service.pipeline.events import EVENT_SCHEMA, EventSpec, host_of, read_spec, write_events
from tests.pipeline.conftest import END_MS


def _table(path: Path) -> pa.Table:
    return ds.dataset(path, partitioning="hive").to_table()


def test_same_seed_same_rows_other_seed_other_rows(tmp_path: Path, events: Path) -> None:
    spec = EventSpec.sized("tiny", END_MS)
    write_events(spec, tmp_path / "again")
    write_events(EventSpec(**{**spec.__dict__, "seed": 43}), tmp_path / "other")
    names = sorted(p.relative_to(events) for p in events.rglob("*.parquet"))
    assert names == sorted(
        p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*.parquet")
    )
    for name in names:
        assert pq.read_table(events / name).equals(pq.read_table(tmp_path / "again" / name))
    assert not _table(events).equals(_table(tmp_path / "other"))


def test_hive_layout_schema_and_time_span(events: Path, tiny_spec: EventSpec) -> None:
    assert read_spec(events) == tiny_spec
    for part in events.glob("date=*/*.parquet"):
        table = pq.read_table(part, partitioning=None)
        assert table.schema.equals(EVENT_SCHEMA, check_metadata=False)
        dates = pc.unique(pc.strftime(table["event_time"], format="%Y-%m-%d")).to_pylist()
        assert dates == [part.parent.name.removeprefix("date=")]  # rows in their own partition
    table = _table(events)
    times = table["event_time"].cast("int64")
    assert tiny_spec.start_ms <= pc.min(times).as_py() and pc.max(times).as_py() <= END_MS
    assert len(list(events.glob("date=*"))) in (30, 31)


def test_entity_counts_and_consistency(events: Path, tiny_spec: EventSpec) -> None:
    table = _table(events)
    kind = table["event_type"]
    viewers = table.filter(pc.equal(kind, "join"))
    pairs = {
        (u, r)
        for u, r in zip(viewers["user_id"].to_pylist(), viewers["room_id"].to_pylist(), strict=True)
    }
    assert len(pairs) == tiny_spec.n_pairs  # every pair of the workload watched at least once
    starts = table.filter(pc.equal(kind, "room_start"))
    assert set(starts["room_id"].to_pylist()) == set(range(1, tiny_spec.n_rooms + 1))
    hosts = dict(zip(starts["room_id"].to_pylist(), starts["user_id"].to_pylist(), strict=True))
    rooms = np.array(sorted(hosts))
    assert [hosts[r] for r in rooms] == host_of(rooms, tiny_spec.n_users).tolist()
    leaves = table.filter(pc.equal(kind, "leave"))
    assert pc.min(leaves["watch_s"]).as_py() >= 1 and leaves["watch_s"].null_count == 0
    assert table.filter(pc.equal(kind, "gift"))["gift_value"].null_count == 0
    assert starts["category"].null_count == 0
    assert len(leaves) <= len(viewers)  # a leave per join, unless still watching at the end


def test_bad_specs_are_refused(tmp_path: Path, events: Path) -> None:
    with pytest.raises(ValueError, match="size: 'huge' is not one of"):
        EventSpec.sized("huge", END_MS)
    with pytest.raises(ValueError, match="is not empty"):
        write_events(EventSpec.sized("tiny", END_MS), events)
    with pytest.raises(ValueError, match="at least 1"):
        write_events(EventSpec(10, 0, 5, 30, END_MS), tmp_path / "none")
    with pytest.raises(ValueError, match=r"no readable _spec\.json"):
        read_spec(tmp_path)
