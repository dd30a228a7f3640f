"""Each test runs its own `livefeat serve`: SIGTERM drain, `livefeat get`, `load --server`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service.client import LivefeatClient
from service.workload import WorkloadSpec, write_parquet
from tests.conftest import LIVEFEAT, LiveServer, livefeat_env

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

Start = Callable[[Path], LiveServer]
ROOM = "room_stats"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


class HeldStream:
    """A PushFeaturesStream that sends one batch, then holds the call open until released."""

    def __init__(self, target: str, rooms: list[int]) -> None:
        self.rooms = rooms
        self.release = threading.Event()
        self.result: Any = None
        self.sent_first = threading.Event()
        self._client = LivefeatClient(target)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _batches(self) -> Iterator[list[dict[str, Any]]]:
        t = now_ms()
        for n, room in enumerate(self.rooms):
            yield [{"id": room, "event_time_ms": t, "values": {"viewer_count": 1000 + n}}]
            self.sent_first.set()
            self.release.wait(30)

    def _run(self) -> None:
        try:
            self.result = self._client.push_stream(ROOM, self._batches(), timeout=60)
        except grpc.RpcError as exc:
            self.result = exc
        finally:
            self._client.close()

    def join(self) -> Any:
        self._thread.join(30)
        return self.result


class ReadLoop:
    """GetBundle calls one after another until stopped, each outcome kept with its start time."""

    def __init__(self, target: str) -> None:
        self.outcomes: list[tuple[float, grpc.StatusCode]] = []
        self.stop = threading.Event()
        self._client = LivefeatClient(target)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self._client.get_bundle(7, [1, 2, 3], timeout=5)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            self.outcomes.append((started, code))
            time.sleep(0.01)
        self._client.close()

    def join(self) -> list[tuple[float, grpc.StatusCode]]:
        self.stop.set()
        self._thread.join(10)
        return self.outcomes


def test_sigterm_drains(start_server: Start, fresh_data_dir: Path) -> None:
    server = start_server(fresh_data_dir)
    rooms = [710_001, 710_002, 710_003]
    stream = HeldStream(server.grpc_target, rooms)
    assert stream.sent_first.wait(10)
    reads = ReadLoop(server.grpc_target)
    assert wait_for(lambda: len(reads.outcomes) >= 3)
    health_channel = grpc.insecure_channel(server.grpc_target)
    health = health_pb2_grpc.HealthStub(health_channel)

    sent_at = time.monotonic()
    os.kill(server.pid, signal.SIGTERM)
    # Readiness goes false while the process still serves.
    assert wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, 5)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
    assert status == NOT_SERVING
    assert server.proc.poll() is None
    health_channel.close()
    # The call in flight finishes after the ports closed, and is answered in full.
    assert wait_for(lambda: any(c != grpc.StatusCode.OK for _, c in reads.outcomes), 10)
    stream.release.set()
    summary = stream.join()
    assert not isinstance(summary, grpc.RpcError), summary
    assert (summary.written, summary.batches) == (3, 3)
    assert server.proc.wait(15) == 0
    outcomes = reads.join()
    # Before SIGTERM every call succeeds. After it, a new call is answered OK while
    # the ports are open, or refused: UNAVAILABLE, or CANCELLED when it raced gRPC
    # core's shutdown of the connection (a refusal of a new call, not a cut call).
    assert {c for t, c in outcomes if t <= sent_at} <= {grpc.StatusCode.OK}
    refused = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert {c for t, c in outcomes if t > sent_at} <= {grpc.StatusCode.OK} | refused
    served_while_draining = [t for t, c in outcomes if c == grpc.StatusCode.OK and t > sent_at]
    assert served_while_draining
    assert '"event": "stopped"' in server.stderr()
    # What the drained call wrote is durable.
    again = start_server(fresh_data_dir)
    with LivefeatClient(again.grpc_target) as client:
        rows = client.get_features(ROOM, rooms, timeout=5)
    assert rows.column("viewer_count").tolist() == [1000.0, 1001.0, 1002.0]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LIVEFEAT, *args], capture_output=True, text=True, timeout=120,
                          env=livefeat_env())  # fmt: skip


def test_cli_get_prints_the_bundle(server: LiveServer, client: httpx.Client) -> None:
    done = run_cli("get", "--server", server.grpc_target, "7", "1", "2", "1")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    want = client.post("/v1/bundle", json={"bundle": "live_ranker", "user_id": 7,
                                           "room_ids": [1, 2, 1]}).json()  # fmt: skip
    assert got["user"]["id"] == 7
    assert [r["id"] for r in got["rooms"]] == [1, 2, 1]
    assert [p["id"] for p in got["pairs"]] == [[7, 1], [7, 2], [7, 1]]
    for mine, theirs in zip(got["rooms"], want["rooms"], strict=True):
        assert mine["status"] == theirs["status"]
        for name, value in theirs["features"].items():
            if isinstance(value, str):
                assert mine["features"][name] == value
            else:
                assert np.float32(mine["features"][name]).tolist() == np.float32(value).tolist()
    bad = run_cli("get", "--server", server.grpc_target, "--bundle", "nope", "7", "1")
    assert bad.returncode == 2
    assert "NOT_FOUND" in bad.stderr and "bundle" in bad.stderr


def test_cli_load_streams_through_the_server(
    start_server: Start, fresh_data_dir: Path, tmp_path: Path
) -> None:
    server = start_server(fresh_data_dir)
    files = write_parquet(WorkloadSpec.small(seed=7), tmp_path / "files", now_ms())
    load = ("load", ROOM, str(files[ROOM]), "--server", server.grpc_target, "--batch-rows", "64")
    first = run_cli(*load)
    assert first.returncode == 0, first.stderr
    assert "200 rows in 4 batches" in first.stdout and "200 written, 0 ignored" in first.stdout
    again = run_cli(*load)
    assert again.returncode == 0 and "0 written, 200 ignored" in again.stdout
    import pyarrow.parquet as pq

    table = pq.read_table(files[ROOM], columns=["room_id", "viewer_count", "category"])
    with LivefeatClient(server.grpc_target) as client:
        rows = client.get_features(ROOM, table.column("room_id").to_pylist(), timeout=5)
    assert rows.status.tolist() == [pb.FOUND] * 200
    assert rows.column("viewer_count").tolist() == [
        float(np.float32(x)) for x in table.column("viewer_count").to_pylist()
    ]
    assert rows.strings["category"] == table.column("category").to_pylist()


def test_cli_load_refuses_a_bad_file_before_sending(server: LiveServer, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"room_id": [711_001], "event_time": [now_ms()],
                             "viewer_count": [3]}), path)  # fmt: skip
    done = run_cli("load", ROOM, str(path), "--server", server.grpc_target)
    assert done.returncode == 2
    assert "'likes_5m'" in done.stderr  # the first missing feature column
    with LivefeatClient(server.grpc_target) as client:
        assert client.get_features(ROOM, [711_001], timeout=5).status.tolist() == [pb.DEFAULTED]
