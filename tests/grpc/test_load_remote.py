"""`livefeat load --server`: the check converts and refuses exactly as the server will.

A file the check passes is sent whole; one it refuses sends nothing. Against a
real `livefeat serve`; what is stored is read back through /debug/entity.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.core.registry import load_registry
from service.settings import DEMO_REGISTRY
from tests.conftest import LIVEFEAT, LiveServer, livefeat_env

pytestmark = pytest.mark.process

ROOM = "room_stats"
PLAN = load_registry(DEMO_REGISTRY).views[ROOM]
NOW_MS = time.time_ns() // 1_000_000


def room_table(ids: list[int], event_time: pa.Array, **columns: Any) -> pa.Table:
    """A room_stats file: every feature at a plain value unless given."""
    n = len(ids)
    data: dict[str, Any] = {"room_id": pa.array(ids, pa.int64()), "event_time": event_time}
    for f in PLAN.codec.features:
        if f.name in columns:
            data[f.name] = columns[f.name]
        elif f.type == "float_vector":
            data[f.name] = pa.array([[0.5] * f.dim] * n, pa.list_(pa.float32()))
        elif f.type == "string":
            data[f.name] = pa.array(["music"] * n)
        elif f.type == "int64":
            data[f.name] = pa.array(list(range(n)), pa.int64())
        else:
            data[f.name] = pa.array([1.5] * n, pa.float64())
    return pa.table(data)


def load_remote(server: LiveServer, path: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIVEFEAT, "load", ROOM, str(path), "--server", server.grpc_target, *more],
        capture_output=True, text=True, timeout=120, env=livefeat_env(),
    )  # fmt: skip


def stored(client: httpx.Client, room: int) -> dict[str, Any]:
    got = client.get(f"/debug/entity/{ROOM}/{room}")
    assert got.status_code == 200, got.text
    return dict(got.json()["tiers"]["rocksdb"])


@pytest.mark.parametrize("unit", ["us", "ns"])
def test_sub_millisecond_timestamps_are_floored_as_a_local_load_does(
    server: LiveServer, client: httpx.Client, tmp_path: Path, unit: str
) -> None:
    """Before: the check floored them, the stream cast them strictly and failed mid-way."""
    rooms = [713_001, 713_002, 713_003] if unit == "us" else [713_011, 713_012, 713_013]
    scale = 1_000 if unit == "us" else 1_000_000
    times = pa.array([(NOW_MS + i) * scale + 7 for i in range(3)], pa.timestamp(unit))
    path = tmp_path / "sub_ms.parquet"
    pq.write_table(room_table(rooms, times), path)
    done = load_remote(server, path, "--batch-rows", "1")
    assert done.returncode == 0, done.stderr
    assert [stored(client, r)["event_time_ms"] for r in rooms] == [NOW_MS + i for i in range(3)]


def test_a_string_over_the_limit_late_in_the_file_sends_nothing(
    server: LiveServer, client: httpx.Client, tmp_path: Path
) -> None:
    rooms = list(range(714_000, 714_300))
    category = ["music"] * 300
    category[250] = "x" * 65_536
    times = pa.array([NOW_MS] * 300, pa.int64())
    path = tmp_path / "long_string.parquet"
    pq.write_table(room_table(rooms, times, category=pa.array(category)), path)
    done = load_remote(server, path, "--batch-rows", "100")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "'category': row 250" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    for room in (rooms[0], rooms[99], rooms[249]):
        assert stored(client, room) == {"present": False}, room


def test_uint64_ids_over_int64_send_nothing(
    server: LiveServer, client: httpx.Client, tmp_path: Path
) -> None:
    ids = [715_001, 715_002, 2**63 + 1]
    table = room_table([715_001, 715_002, 0], pa.array([NOW_MS] * 3, pa.int64()))
    table = table.set_column(0, "room_id", pa.array(ids, pa.uint64()))
    path = tmp_path / "uint64.parquet"
    pq.write_table(table, path)
    done = load_remote(server, path, "--batch-rows", "1")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "'room_id': row 2" in done.stderr, done.stderr
    assert stored(client, 715_001) == {"present": False}
