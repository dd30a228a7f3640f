"""One real run of the report over a known dataset, shared by this directory's tests.

The data dir is filled by the real `livefeat load`; the report is the real
`livefeat report` command. Everything is compared with the dataset's source
values (tests/report/dataset.py), never with another output of livefeat.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import LIVEFEAT, livefeat_env
from tests.report import dataset

SAMPLE = 2000
SEED = 1


@dataclass
class ReportRun:
    data: dataset.Dataset
    data_dir: Path
    out: Path
    served_dir: Path
    served: dict[str, Any]
    doc: dict[str, Any]
    stdout: str
    started_ms: int


def run_livefeat(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`livefeat ARGS`, its output captured (never raises on a non-zero exit)."""
    return subprocess.run([LIVEFEAT, *args], capture_output=True, text=True, timeout=timeout_s,
                          env=livefeat_env(), check=False)  # fmt: skip


@pytest.fixture(scope="session")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    root = tmp_path_factory.mktemp("report")
    now_ms = time.time_ns() // 1_000_000
    data = dataset.make(root / "src", now_ms)
    data_dir = root / "data"
    common = ["--registry", str(data.registry), "--data-dir", str(data_dir)]
    for view, path in (("room_stats", data.online), ("user_room_affinity", data.pairs)):
        done = run_livefeat("load", view, str(path), *common)
        assert done.returncode == 0, done.stderr
    served_dir = root / "served"
    served = dataset.write_served_log(served_dir, now_ms - 3_600_000)
    out = root / "out"
    done = run_livefeat("report", *common, "--out", str(out), "--sample", str(SAMPLE),
                        "--seed", str(SEED), "--offline", f"room_stats={data.offline}",
                        "--served", str(served_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = orjson.loads((out / "report.json").read_bytes())
    return ReportRun(data, data_dir, out, served_dir, served, doc, done.stdout, now_ms)
