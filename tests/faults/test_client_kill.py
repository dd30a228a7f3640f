"""Scenario 8: a pushing client SIGKILLed mid-batch, under live reads.

Two clients: tests/faults/push_client.py (unary pushes, each acknowledged batch
logged to a file before the next is sent) and `livefeat load --server` (a
PushFeaturesStream of 1,000-row messages). Each is killed by its pid while pushing.
Every batch acknowledged before the kill must be stored, value for value; every
batch (message) must be stored whole or not at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import LIVEFEAT, livefeat_env
from tests.faults.harness import FULL, VIEWS, FaultServer, Oracle, record, run_fault
from tests.faults.push_client import batch_values
from tests.support.redis_proc import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.process]

ROWS = 200
FIRST = 1_000_000
LOAD_FIRST = 2_000_000
LOAD_ROWS = 100_000 if FULL else 10_000
LOAD_MESSAGE_ROWS = 1_000


def served(server: FaultServer, ids: list[int]) -> dict[int, tuple[str, dict[str, Any]]]:
    out = {}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for a in range(0, len(ids), 1000):
            body = {"view": "room_stats", "ids": ids[a : a + 1000]}
            r = client.post("/v1/features", json=body)
            while r.status_code == 429:  # the server is busy storing the load: it may refuse
                time.sleep(0.02)
                r = client.post("/v1/features", json=body)
            r.raise_for_status()
            rows = r.json()["rows"]
            out.update({row["id"]: (row["status"]["room_stats"], row["features"]) for row in rows})
    return out


def stored_rows(rows: dict[int, tuple[str, dict[str, Any]]], want: dict[int, dict]) -> int:
    """How many of `want` are served FOUND with exactly those values; raises on a stranger."""
    n = 0
    for room, values in want.items():
        status, features = rows[room]
        if status == "DEFAULTED":
            continue
        got = {k: features[f"room_stats.{k}"] for k in values}
        assert status == "FOUND" and got == values, f"room {room}: {status} {got} != {values}"
        n += 1
    return n


def wait_lines(path: Path, n: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never had {n} acknowledged batches")


def test_push_client_sigkill(
    fault_server: Callable[..., FaultServer],
    redis_server: RedisServer,
    oracle: Oracle,
    tmp_path: Path,
) -> None:
    server = fault_server("--redis-url", redis_server.url)
    acks = tmp_path / "acks"
    procs: dict[str, subprocess.Popen] = {}

    def start() -> None:
        procs["client"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.push_client",
                server.grpc_target,
                str(acks),
                "--first",
                str(FIRST),
                "--rows",
                str(ROWS),
            ],
            cwd=Path(__file__).resolve().parents[2],
            env=livefeat_env(),
        )
        wait_lines(acks, 5)
        os.kill(procs["client"].pid, signal.SIGKILL)  # mid-run: a batch is most likely in flight
        procs["client"].wait(10)

    figures = run_fault("push_client_sigkill", server, oracle, start, lambda: None, 0.0)
    acked = [int(b) for b in acks.read_text().split()]
    assert acked == list(range(len(acked)))
    checked = len(acked) + 3
    ids = list(range(FIRST, FIRST + checked * ROWS))
    rows = served(server, ids)
    whole = []
    for b in range(checked):
        want = {
            room: batch_values(room, b) for room in range(FIRST + b * ROWS, FIRST + (b + 1) * ROWS)
        }
        n = stored_rows(rows, want)
        assert n in (0, ROWS), f"batch {b}: {n} of {ROWS} rows stored (half a batch)"
        if b in acked:
            assert n == ROWS, f"acknowledged batch {b} lost ({n} of {ROWS} rows)"
        whole.append(n == ROWS)
    figures["client"] = {
        "acknowledged_batches": len(acked),
        "stored_batches": sum(whole),
        "stored_unacknowledged": sum(whole) - len(acked),
        "rows_per_batch": ROWS,
    }
    record("push_client_sigkill", figures)


def test_load_server_sigkill(
    fault_server: Callable[..., FaultServer],
    redis_server: RedisServer,
    oracle: Oracle,
    tmp_path: Path,
) -> None:
    server = fault_server("--redis-url", redis_server.url)
    ids = np.arange(LOAD_FIRST, LOAD_FIRST + LOAD_ROWS, dtype=np.int64)
    msg = (ids - LOAD_FIRST) // LOAD_MESSAGE_ROWS
    columns: dict[str, Any] = {
        "room_id": ids,
        "event_time": np.full(LOAD_ROWS, time.time_ns() // 1_000_000, np.int64),
    }
    for name, spec in VIEWS["room_stats"]["features"].items():
        if spec["type"] == "int64":
            columns[name] = np.zeros(LOAD_ROWS, np.int64)
        elif spec["type"] == "double":
            columns[name] = np.full(LOAD_ROWS, 0.25)
        elif spec["type"] == "string":
            columns[name] = pa.array(["load"] * LOAD_ROWS)
        else:
            flat = pa.array(np.zeros(LOAD_ROWS * spec["dim"], np.float32))
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, spec["dim"])
    columns |= {"viewer_count": msg, "likes_5m": ids, "gift_count_1m": msg * 7 + ids % 1000}
    table = pa.table(columns)
    path = tmp_path / "rooms.parquet"
    pq.write_table(table, path)
    procs: dict[str, subprocess.Popen] = {}
    log = tmp_path / "load.err"

    def start() -> None:
        with log.open("wb") as err:
            procs["load"] = subprocess.Popen(
                [
                    LIVEFEAT,
                    "load",
                    "room_stats",
                    str(path),
                    "--server",
                    server.grpc_target,
                    "--data-dir",
                    str(tmp_path / "unused"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=livefeat_env(),
            )
        # Kill it once some messages are stored (the first rows are served), mid-stream.
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                if (
                    served(server, [LOAD_FIRST + 2 * LOAD_MESSAGE_ROWS])[LOAD_FIRST + 2000][0]
                    == "FOUND"
                ):
                    break
                time.sleep(0.01)
        finally:  # also when the check fails: never leave the load running
            os.kill(procs["load"].pid, signal.SIGKILL)
            procs["load"].wait(10)

    figures = run_fault("load_server_sigkill", server, oracle, start, lambda: None, 0.0)
    rows = served(server, [int(i) for i in ids])
    counts = []
    for m in range(LOAD_ROWS // LOAD_MESSAGE_ROWS):
        a = LOAD_FIRST + m * LOAD_MESSAGE_ROWS
        want = {
            room: {"viewer_count": m, "likes_5m": room, "gift_count_1m": m * 7 + room % 1000}
            for room in range(a, a + LOAD_MESSAGE_ROWS)
        }
        counts.append(stored_rows(rows, want))
    half = [(m, n) for m, n in enumerate(counts) if n not in (0, LOAD_MESSAGE_ROWS)]
    figures["load"] = {
        "messages": len(counts),
        "stored_messages": sum(1 for n in counts if n == LOAD_MESSAGE_ROWS),
        "half_messages": half,
        "exit_code": procs["load"].returncode,
    }
    record("load_server_sigkill", figures)
    assert procs["load"].returncode == -signal.SIGKILL, log.read_text()
    assert not half, f"messages stored in part: {half}"
