"""read_offline: the newest row per entity, nulls as defaults, the load's checks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.core.registry import parse_registry
from service.errors import LoadError
from service.report.offline import read_offline
from tests.report.dataset import REGISTRY

PLAN = parse_registry(REGISTRY).views["user_room_affinity"]


def at(second: int) -> datetime:
    return datetime.fromtimestamp(1_764_000_000 + second, UTC)


def test_newest_row_per_entity_with_nulls_as_defaults(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({
        "user_id": [7, 7, 7, 1],
        "room_id": [5, 5, 2, 9],
        "event_time": pa.array([at(2), at(1), at(1), at(3)], pa.timestamp("us", tz="UTC")),
        "watch_sec_30d": [20, 10, None, 40],
        "gifts_30d": [2, 1, 3, 4],
    }), path)  # fmt: skip
    read: list[int] = []
    got = read_offline(PLAN, path, read.append)
    assert sum(read) == 4 and got.rows_read == 4
    assert got.ids == [(1, 9), (7, 2), (7, 5)]
    assert got.columns["watch_sec_30d"].tolist() == [40, 0, 20]  # (7, 5): the newer row
    assert got.columns["gifts_30d"].tolist() == [4, 3, 2]
    assert got.index()[(7, 5)] == 2


def test_a_file_the_load_would_refuse_is_refused_naming_the_column(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"user_id": [1], "room_id": [2], "event_time": [5]}), path)
    with pytest.raises(LoadError, match="column 'watch_sec_30d': missing"):
        read_offline(PLAN, path, lambda _: None)
