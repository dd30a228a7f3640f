"""A dataset with known shares and distributions, for the report tests.

Rooms 1..N_ROOMS exist offline (the training data). Online, MISSING_SHARE of
them were never loaded (DEFAULTED), STALE_SHARE were loaded two hours old
(STALE: max_age_s is 600), the rest now (FOUND). Online values equal offline
values except `score`, shifted by +1 standard deviation (skew). The pair view
is loaded whole, for distributions checked against the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

N_ROOMS = 4000
N_PAIRS = 600
MISSING_SHARE = 0.20
STALE_SHARE = 0.15
STALE_AGE_MS = 2 * 3600 * 1000
SCORE_SHIFT = 1.0

REGISTRY = """
entities:
  user: {key: user_id}
  room: {key: room_id}
  user_room: {key: [user_id, room_id]}
views:
  room_stats:
    entity: room
    max_age_s: 600
    storage_ttl_s: 86400
    features:
      viewer_count: {type: int64, default: 0}
      score: {type: double, default: 0.0}
      stable: {type: float, default: 0.0}
      live: {type: bool, default: false}
      category: {type: string, default: ""}
      room_embedding: {type: float_vector, dim: 4}
  user_room_affinity:
    entity: user_room
    max_age_s: 86400
    storage_ttl_s: 86400
    features:
      watch_sec_30d: {type: int64, default: 0}
      gifts_30d: {type: int64, default: 0}
bundles:
  live_ranker:
    room: [room_stats]
    user_room: [user_room_affinity]
"""

CATEGORIES = ["gaming", "music", "chat", "dance"]


@dataclass
class Dataset:
    """Paths and the source values the tests compare with."""

    registry: Path
    offline: Path  # room_stats, the training data: every room
    online: Path  # room_stats as loaded
    pairs: Path
    rooms: dict[str, np.ndarray]  # offline columns, row i = room i + 1
    status: dict[int, str]  # room id -> FOUND / STALE / DEFAULTED (set by construction)
    pair_columns: dict[str, np.ndarray]


def make(root: Path, now_ms: int, seed: int = 7) -> Dataset:
    """Write the registry and Parquet files under `root`."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    registry = root / "registry.yaml"
    registry.write_text(REGISTRY)
    ids = np.arange(1, N_ROOMS + 1, dtype=np.int64)
    rooms = {
        "viewer_count": rng.lognormal(5, 1, N_ROOMS).astype(np.int64),
        "score": rng.normal(0, 1, N_ROOMS),
        "stable": rng.uniform(0, 1, N_ROOMS).astype(np.float32),
        "live": rng.random(N_ROOMS) < 0.3,
        "category": np.array(rng.choice(CATEGORIES, N_ROOMS, p=[0.4, 0.3, 0.2, 0.1])),
        "room_embedding": rng.normal(0, 1, (N_ROOMS, 4)).astype(np.float32),
    }
    draw = rng.permutation(N_ROOMS)
    n_missing, n_stale = int(N_ROOMS * MISSING_SHARE), int(N_ROOMS * STALE_SHARE)
    status = np.full(N_ROOMS, "FOUND", dtype=object)
    status[draw[:n_missing]] = "DEFAULTED"
    status[draw[n_missing : n_missing + n_stale]] = "STALE"
    offline = root / "room_stats_offline.parquet"
    _write(offline, {"room_id": ids}, np.full(N_ROOMS, now_ms - 3 * STALE_AGE_MS), rooms)
    keep = status != "DEFAULTED"
    online_times = np.where(status == "STALE", now_ms - STALE_AGE_MS, now_ms)[keep]
    online_cols = {k: v[keep] for k, v in rooms.items()}
    online_cols["score"] = online_cols["score"] + SCORE_SHIFT
    online = root / "room_stats_online.parquet"
    _write(online, {"room_id": ids[keep]}, online_times, online_cols)
    pair_columns = {
        "user_id": rng.integers(1, 50, N_PAIRS),
        "room_id": np.arange(1, N_PAIRS + 1, dtype=np.int64),
        "watch_sec_30d": rng.poisson(300, N_PAIRS).astype(np.int64),
        "gifts_30d": rng.poisson(2, N_PAIRS).astype(np.int64),
    }
    pairs = root / "user_room_affinity.parquet"
    keys = {k: pair_columns[k] for k in ("user_id", "room_id")}
    values = {k: pair_columns[k] for k in ("watch_sec_30d", "gifts_30d")}
    _write(pairs, keys, np.full(N_PAIRS, now_ms), values)
    by_id = {int(i): str(s) for i, s in zip(ids, status, strict=True)}
    return Dataset(registry, offline, online, pairs, rooms, by_id, pair_columns)


def _write(path: Path, keys: dict[str, Any], event_ms: np.ndarray, cols: dict[str, Any]) -> None:
    arrays = {**keys, "event_time": pa.array(event_ms.astype(np.int64))}
    for name, col in cols.items():
        if col.ndim == 2:
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(col.ravel()), col.shape[1])
        else:
            arrays[name] = pa.array(col.tolist() if col.dtype == object else col)
    pq.write_table(pa.table(arrays), path)


def served_record(time_ms: int, room_id: int, status: str, viewer_count: int) -> dict[str, Any]:
    """One served-log record (the shared format) for a bundle of one room."""
    age = -1 if status == "DEFAULTED" else 1000
    return {
        "format": 1, "request_id": f"r{time_ms}", "time_ms": time_ms, "bundle": "live_ranker",
        "user_id": 7, "room_ids": [room_id],
        "user": None,
        "rooms": [{"id": room_id, "features": {"room_stats.viewer_count": viewer_count},
                   "status": {"room_stats": status}, "age_ms": {"room_stats": age}}],
        "pairs": [{"id": [7, room_id], "features": {"user_room_affinity.gifts_30d": 0},
                   "status": {"user_room_affinity": "DEFAULTED"},
                   "age_ms": {"user_room_affinity": -1}}],
    }  # fmt: skip


def write_served_log(directory: Path, start_ms: int) -> dict[str, Any]:
    """Ten minutes of records, 12 a minute: the first five minutes all FOUND, the last
    five half DEFAULTED. Plus one line that is not a record. Returns the expectations."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for minute in range(10):
        for k in range(12):
            status = "DEFAULTED" if minute >= 5 and k % 2 else "FOUND"
            lines.append(orjson.dumps(served_record(start_ms + minute * 60_000 + k * 5000,
                                                    k + 1, status, 100 + k)))  # fmt: skip
    half = len(lines) // 2
    (directory / "served-20261129T100000-1.jsonl").write_bytes(b"\n".join(lines[:half]) + b"\n")
    (directory / "served-20261129T100500-2.jsonl").write_bytes(
        b"\n".join([*lines[half:], b'{"format": 1, "time_ms": "soon"}']) + b"\n"
    )
    return {"records": len(lines), "bad_lines": 1, "defaulted_share": 30 / 120}
