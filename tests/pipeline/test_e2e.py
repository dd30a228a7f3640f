"""The whole offline flow against real processes: raw events -> Spark features -> the Spark
writer into a real redis-server -> a real `livefeat serve --redis-url` answers /v1/features
with the values of the job's output Parquet. And the pipeline's command line."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from service.core.registry import Registry
from service.pipeline import cli, features
from service.pipeline.events import EventSpec, write_events
from service.pipeline.writer import write_view
from tests.conftest import LiveServer
from tests.pipeline.conftest import REGISTRY
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process
SAMPLE = 150  # ids asked per view


def _ids(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return [row[k] for k in keys] if len(keys) == 2 else row[keys[0]]


# Three feature jobs, three writes and a server: about 2 minutes on a busy 2-core machine
# (the first Spark jobs of a session also pay the JVM's warm-up).
@pytest.mark.timeout(600)
def test_events_to_features_to_redis_to_serve(spark: Any, registry: Registry, tmp_path: Path,
                                              redis_server: RedisServer,
                                              start_server: Callable[..., LiveServer]) -> None:  # fmt: skip
    end_ms = (time.time_ns() // 1_000_000) // 60_000 * 60_000  # fresh: served as FOUND
    events = tmp_path / "events"
    write_events(EventSpec.sized("tiny", end_ms, seed=11), events)
    log = features.read_events(spark, events)
    outputs = {}
    for view, plan in registry.views.items():
        path = features.write_parquet(features.compute(log, plan, end_ms), tmp_path / f"{view}.pq")
        got = write_view(
            spark.read.parquet(str(path)), plan, REGISTRY.read_text(), redis_server.url
        )
        outputs[view] = pq.read_table(path).to_pylist()
        assert got.written == got.rows == len(outputs[view]) > 0
    server = start_server(tmp_path / "data", "--redis-url", redis_server.url)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        for view, rows in outputs.items():
            plan = registry.views[view]
            sample = rows[:: max(len(rows) // SAMPLE, 1)]
            answer = client.post("/v1/features", json={
                "view": view, "ids": [_ids(r, plan.key_columns) for r in sample]})  # fmt: skip
            assert answer.status_code == 200, answer.text
            served = answer.json()["rows"]
            assert len(served) == len(sample)
            for want, got in zip(sample, served, strict=True):
                assert got["id"] == _ids(want, plan.key_columns)
                assert got["status"] == {view: "FOUND"}, got
                for f in plan.codec.features:
                    value = got["features"][f"{view}.{f.name}"]
                    if f.type == "float_vector":  # stored and served as float32
                        np.testing.assert_array_equal(np.float32(value), np.float32(want[f.name]))
                    else:
                        assert value == want[f.name], (view, want, f.name)


def test_cli_run_then_write(spark: Any, tmp_path: Path, redis_server: RedisServer,
                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`python -m service.pipeline run`, then `write`, as `make pipeline` chains them; called
    in this process, where the Spark session of the tests is the one it gets."""
    out = tmp_path / "out"
    args = ["--master", "local[2]", "--views", "user_room_affinity"]
    code = cli.main(["run", str(out), "--size", "tiny", "--end", "2026-11-20T12:00Z", *args])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "as of 2026-11-20T12:00:00+00:00" in printed.out
    assert sorted(p.name for p in (out / "events").iterdir())[:2] == [
        "_spec.json",
        "date=2026-10-21",
    ]
    rows = pq.read_metadata(out / "features" / "user_room_affinity.parquet").num_rows
    assert cli.main(["write", str(out / "features"), "--redis-url", redis_server.url, *args]) == 0
    assert f"{rows:,} written" in capsys.readouterr().out
    assert redis_server.client().dbsize() == rows
    assert cli.main(["features", str(out / "events"), str(tmp_path / "f"), "--cutoff", "May"]) == 2
    assert (
        "pipeline features: 'May' is not 'now', integer ms or ISO 8601" in capsys.readouterr().err
    )
    assert cli.main(["run", str(out), "--size", "tiny"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert cli.main(["events", str(tmp_path / "e"), "--size", "huge"]) == 2
    assert "size: 'huge' is not one of" in capsys.readouterr().err


def test_cli_is_a_module() -> None:
    """`python -m service.pipeline --help` works (no Spark started for it)."""
    done = subprocess.run([sys.executable, "-m", "service.pipeline", "--help"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "events" in done.stdout and "features" in done.stdout
