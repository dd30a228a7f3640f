"""Tests of the standard-workload generator (service/workload.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from service import workload
from service.workload import RequestGenerator, WorkloadSpec, write_parquet

REGISTRY = Path(__file__).resolve().parents[1] / "service" / "demo_registry.yaml"
EVENT_TIME_MS = 1_700_000_000_000
VIEWS = ("user_profile", "room_stats", "user_room_affinity")


def _registry() -> dict[str, Any]:
    with REGISTRY.open() as f:
        return yaml.safe_load(f)


def _arrow_type(feature: dict[str, Any]) -> pa.DataType:
    kind = feature["type"]
    if kind == "float_vector":
        return pa.list_(pa.float32(), feature["dim"])
    return {"int64": pa.int64(), "double": pa.float64(), "string": pa.string()}[kind]


def _tables(paths: dict[str, Path]) -> dict[str, pa.Table]:
    return {view: pq.read_table(path) for view, path in paths.items()}


@pytest.fixture(scope="module")
def small_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_parquet(WorkloadSpec.small(), tmp_path_factory.mktemp("small"), EVENT_TIME_MS)


# ----------------------------------------------------------------------------- requests


def test_requests_same_seed_identical_different_seed_differ() -> None:
    a = RequestGenerator(1_000, 2_000, seed=7).requests(200)
    b = RequestGenerator(1_000, 2_000, seed=7).requests(200)
    c = RequestGenerator(1_000, 2_000, seed=8).requests(200)
    assert a == b
    assert a != c


def test_requests_matches_repeated_next() -> None:
    g1, g2 = RequestGenerator(500, 300, seed=3), RequestGenerator(500, 300, seed=3)
    assert g1.requests(20) == [g2.next() for _ in range(20)]


@pytest.mark.parametrize(
    ("n_rooms", "k"), [(20_000, 100), (20_000, 500), (200, 100), (150, 140), (50, 50), (10, 1)]
)
def test_candidates_distinct_in_range_with_count(n_rooms: int, k: int) -> None:
    gen = RequestGenerator(n_users=1_000, n_rooms=n_rooms, n_candidates=k, seed=1)
    for user, candidates in gen.requests(50):
        assert isinstance(user, int) and 1 <= user <= 1_000
        assert len(candidates) == k
        assert len(set(candidates)) == k
        assert all(isinstance(r, int) and 1 <= r <= n_rooms for r in candidates)


def test_all_rooms_when_candidates_equal_rooms() -> None:
    _, candidates = RequestGenerator(10, 50, n_candidates=50).next()
    assert sorted(candidates) == list(range(1, 51))


@pytest.mark.parametrize(("n_rooms", "k"), [(10, 11), (10, 0)])
def test_invalid_candidate_count_rejected(n_rooms: int, k: int) -> None:
    with pytest.raises(ValueError):
        RequestGenerator(10, n_rooms, n_candidates=k)


def test_users_cover_range() -> None:
    users = [u for u, _ in RequestGenerator(100, 500, seed=2).requests(2_000)]
    assert set(users) == set(range(1, 101))


def test_zipf_skew_present() -> None:
    n_rooms = 1_000
    reqs = RequestGenerator(1_000, n_rooms, n_candidates=100, seed=5).requests(2_000)
    counts = Counter(r for _, cands in reqs for r in cands)
    freq = np.array([counts.get(r, 0) for r in range(1, n_rooms + 1)])
    # Uniform draws would put every room in about 200 requests (ratio near 1).
    assert freq.max() > 10 * max(float(np.median(freq)), 1.0)
    assert counts[1] > 0.95 * len(reqs)  # rank == room id: room 1 is the hottest
    assert freq[:10].mean() > 10 * freq[n_rooms // 2 :].mean()  # head vs. tail


# ----------------------------------------------------------------------------- parquet


def test_parquet_schema_matches_registry(small_paths: dict[str, Path]) -> None:
    reg = _registry()
    assert set(small_paths) == set(VIEWS)
    for view, path in small_paths.items():
        spec = reg["views"][view]
        key = reg["entities"][spec["entity"]]["key"]
        keys = [key] if isinstance(key, str) else list(key)
        features = spec["features"]
        schema = pq.read_schema(path)
        assert path.name == f"{view}.parquet"
        assert schema.names == [*keys, "event_time", *features]
        for name in [*keys, "event_time"]:
            assert schema.field(name).type == pa.int64()
        for name, feature in features.items():
            assert schema.field(name).type == _arrow_type(feature), (view, name)


def test_parquet_rows_and_values(small_paths: dict[str, Path]) -> None:
    spec = WorkloadSpec.small()
    tables = _tables(small_paths)
    assert tables["user_profile"]["user_id"].to_pylist() == list(range(1, spec.n_users + 1))
    assert tables["room_stats"]["room_id"].to_pylist() == list(range(1, spec.n_rooms + 1))
    assert tables["user_room_affinity"].num_rows == spec.n_pairs
    for table in tables.values():
        assert set(table["event_time"].to_pylist()) == {EVENT_TIME_MS}
        for field in table.schema:
            col = table[field.name]
            assert col.null_count == 0
            if field.type == pa.int64():
                assert np.all(col.to_numpy() >= 0), field.name
            if field.type == pa.float64():
                assert np.all(np.isfinite(col.to_numpy())), field.name
            if any(w in field.name for w in ("ctr_", "_rate", "retention", "_score")):
                values = col.to_numpy()
                assert np.all((values >= 0) & (values <= 1)), field.name
    countries = Counter(tables["user_profile"]["country"].to_pylist())
    assert len(countries) >= 5 and countries.most_common(1)[0][1] > spec.n_users / 10
    assert len(set(tables["room_stats"]["category"].to_pylist())) >= 8
    emb = np.stack(tables["user_profile"]["user_embedding"].to_numpy(zero_copy_only=False))
    assert emb.shape == (spec.n_users, 32)
    viewers = tables["room_stats"]["viewer_count"].to_numpy()
    assert viewers[:5].mean() > 10 * np.median(viewers)  # popular rooms have more viewers


def test_pair_keys_unique_in_range_and_partly_requested(small_paths: dict[str, Path]) -> None:
    spec = WorkloadSpec.small()
    pairs = pq.read_table(small_paths["user_room_affinity"])
    users, rooms = pairs["user_id"].to_numpy(), pairs["room_id"].to_numpy()
    assert users.min() >= 1 and users.max() <= spec.n_users
    assert rooms.min() >= 1 and rooms.max() <= spec.n_rooms
    keys = set(zip(users.tolist(), rooms.tolist(), strict=True))
    assert len(keys) == spec.n_pairs
    reqs = RequestGenerator(spec.n_users, spec.n_rooms, seed=0).requests(200)
    hits = sum((u, r) in keys for u, cands in reqs for r in cands)
    assert 0 < hits < 0.5 * 200 * 100  # some requested pairs exist, most do not


def test_parquet_deterministic_and_seed_dependent(
    small_paths: dict[str, Path], tmp_path: Path
) -> None:
    again = _tables(write_parquet(WorkloadSpec.small(), tmp_path / "a", EVENT_TIME_MS))
    other = _tables(write_parquet(WorkloadSpec.small(seed=43), tmp_path / "b", EVENT_TIME_MS))
    first = _tables(small_paths)
    for view in VIEWS:
        assert first[view].equals(again[view]), view
        assert not first[view].equals(other[view]), view


def test_chunked_writing_and_progress(
    small_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workload, "CHUNK_ROWS", 1_500)
    calls: list[int] = []
    paths = write_parquet(WorkloadSpec.small(), tmp_path, EVENT_TIME_MS, progress=calls.append)
    spec = WorkloadSpec.small()
    assert sum(calls) == spec.n_users + spec.n_rooms + spec.n_pairs
    assert max(calls) <= 1_500
    assert pq.ParquetFile(paths["user_room_affinity"]).metadata.num_row_groups == 4
    # The chunk size changes how the random streams are consumed, not the keys.
    pairs, expected = _tables(paths)["user_room_affinity"], _tables(small_paths)
    assert pairs.select(["user_id", "room_id"]).equals(
        expected["user_room_affinity"].select(["user_id", "room_id"])
    )
