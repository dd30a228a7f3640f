"""The benchmark's load generator (loadtest/clients.py) against the real echo servers.

Each client protocol runs a short closed loop in its own process against the echo
baseline of its transport (a subprocess), so the HTTP/1.1 parser and the gRPC
identity-serialized calls are checked end to end: every response counted, of the
echo body's size, no errors, CPU figures present.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from loadtest import prepare
from loadtest.clients import RunSpec, run_client
from loadtest.servers import HOST, echo_server

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it


@pytest.mark.parametrize(("transport", "client", "channels"), [
    ("http", "http1", "shared"), ("grpc", "grpc", "shared"), ("grpc", "grpc", "per-slot"),
])  # fmt: skip
def test_client_against_echo(tmp_path: Path, transport: str, client: str, channels: str) -> None:
    body = tmp_path / "body"
    body.write_bytes(b'{"pad":"' + b"x" * 20_000 + b'"}')
    requests = tmp_path / "requests.pickle"
    encode = prepare.ENCODERS[client]
    requests.write_bytes(pickle.dumps([encode(u, [u, u + 1]) for u in range(1, 50)]))
    server = echo_server(transport, f"echo-{transport}", body, tmp_path / "echo.log")
    server.start()
    try:
        server.wait_ready(30)
        spec = RunSpec(HOST, server.port, str(requests), 3, 0.3, 1.0, (("server", server.pid),),
                       grpc_channels=channels)  # fmt: skip
        got = run_client(spec, client)
    finally:
        assert server.stop() is not None
    assert got["requests"] > 10
    assert got["errors"] == 0 and got["timeouts"] == 0
    assert got["status_counts"] == {"200" if client == "http1" else "OK": got["requests"]}
    assert got["mean_response_bytes"] == len(body.read_bytes())
    assert got["latency_ms"]["count"] == got["requests"]
    assert got["throughput_rps"] == pytest.approx(got["requests"] / got["window_s"])
    assert got["window_s"] == pytest.approx(1.0, abs=0.1)
    assert got["server_cpu_ms_per_request"] > 0
    assert got["backend_cpu_ms_per_request"] == got["server_cpu_ms_per_request"]
