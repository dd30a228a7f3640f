"""A load killed with SIGKILL halfway and run again ends with exactly the file's content."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from service.core.registry import load_registry
from service.load import check_file, encode_batch, iter_batches
from service.settings import DEMO_REGISTRY
from service.store.rocks import RocksTier
from service.workload import WorkloadSpec, write_parquet
from tests.conftest import LIVEFEAT, livefeat_env

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it


def test_sigkill_halfway_then_rerun(tmp_path: Path) -> None:
    spec = WorkloadSpec(n_users=1_000, n_rooms=200, n_pairs=60_000, seed=5)
    files = write_parquet(spec, tmp_path / "in", event_time_ms=1_790_000_000_000)
    path = files["user_room_affinity"]
    data = tmp_path / "data"
    cmd = [LIVEFEAT, "load", "user_room_affinity", str(path), "--data-dir", str(data),
           "--batch-rows", "2000"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=livefeat_env())  # fmt: skip
    checkpoints = data / "loads"
    deadline = time.monotonic() + 60
    while not (checkpoints.exists() and any(checkpoints.glob("*.json"))):
        assert proc.poll() is None, f"the load ended before a checkpoint: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)  # reaps it and closes its pipes
    assert proc.returncode == -signal.SIGKILL

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=livefeat_env())
    assert again.returncode == 0, again.stderr
    assert "done by an earlier run" in again.stdout
    assert not list(checkpoints.glob("*.json"))  # a finished load leaves no checkpoint

    plan = load_registry(DEMO_REGISTRY).views["user_room_affinity"]
    expected = {}
    for batch in iter_batches(check_file(plan, path), plan, 10_000):
        expected.update(encode_batch(plan, batch))
    assert len(expected) == pq.ParquetFile(path).metadata.num_rows
    tier = RocksTier(data / "rocksdb")
    try:
        assert dict(tier.scan(plan.key_prefix)) == expected
    finally:
        tier.close_sync()
