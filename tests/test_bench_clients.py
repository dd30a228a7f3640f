"""The benchmark's load generator (loadtest/clients.py) against the real echo servers.

Each client protocol runs a short closed loop in its own process against the echo
baseline of its transport (a subprocess), so the HTTP/1.1 parser and the gRPC
identity-serialized calls are checked end to end: every response counted, of the
echo body's size, no errors, CPU figures present.
"""

from __future__ import annotations

import http.server
import json
import pickle
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from loadtest import prepare
from loadtest.clients import RunSpec, encoding_of, run_client
from loadtest.servers import HOST, echo_server

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it


@pytest.mark.parametrize(("transport", "client", "channels"), [
    ("http", "http1", "shared"), ("grpc", "grpc", "shared"), ("grpc", "grpc", "per-slot"),
    ("http", "native-http1", "shared"), ("grpc", "native-grpc", "shared"),
    ("grpc", "native-grpc", "per-slot"), ("grpc", "native-grpc-h2", "shared"),
    ("grpc", "native-grpc-h2", "per-slot"),
])  # fmt: skip
def test_client_against_echo(tmp_path: Path, transport: str, client: str, channels: str) -> None:
    body = tmp_path / "body"
    body.write_bytes(b'{"pad":"' + b"x" * 20_000 + b'"}')
    requests = tmp_path / "requests.pickle"
    encode = prepare.ENCODERS[encoding_of(client)]  # a native kind: the same bytes
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
    assert got["status_counts"] == {"200" if transport == "http" else "OK": got["requests"]}
    assert got["mean_response_bytes"] == len(body.read_bytes())
    assert got["latency_ms"]["count"] == got["requests"]
    assert got["throughput_rps"] == pytest.approx(got["requests"] / got["window_s"])
    assert got["window_s"] == pytest.approx(1.0, abs=0.1)
    assert got["server_cpu_ms_per_request"] > 0
    assert got["backend_cpu_ms_per_request"] == got["server_cpu_ms_per_request"]


class _RefusingHandler(http.server.BaseHTTPRequestHandler):
    """Answers 200 to requests for user ids below 20, else 400 (both with a JSON body)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as livefeat's server
    disable_nagle_algorithm = True  # head and body are two writes

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        code = 200 if body["user_id"] < 20 else 400
        out = json.dumps({"user_id": body["user_id"], "pad": "y" * (code * 10)}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


def _refusing_grpc_server() -> tuple[grpc.Server, int]:
    """GetBundle answers OK to requests for user ids below 20, else INVALID_ARGUMENT."""
    from service._gen.livefeat.v1 import livefeat_pb2

    def get_bundle(request: bytes, context: grpc.ServicerContext) -> bytes:
        user = livefeat_pb2.GetBundleRequest.FromString(request).user_id
        if user >= 20:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id: too large")
        return b"z" * 300

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "livefeat.v1.FeatureService", {"GetBundle": grpc.unary_unary_rpc_method_handler(get_bundle)}
    )])  # fmt: skip
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    return server, port


@pytest.mark.parametrize(
    "client", ["http1", "native-http1", "grpc", "native-grpc", "native-grpc-h2"]
)
def test_client_counts_refusals_apart(tmp_path: Path, client: str) -> None:
    """Answers that are not OK are counted by status, apart from the good ones, by the
    Python and the compiled clients alike; their latencies stay out of `ok_latency_ms`."""
    requests = tmp_path / "requests.pickle"
    encode = prepare.ENCODERS[encoding_of(client)]
    requests.write_bytes(pickle.dumps([encode(u, [u, u + 1]) for u in range(10, 30)]))
    if client.endswith("http1"):
        httpd = http.server.ThreadingHTTPServer((HOST, 0), _RefusingHandler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        port = httpd.server_address[1]

        def stop() -> None:
            httpd.shutdown()
            httpd.server_close()

        ok, refused, refused_bytes = "200", "400", None
    else:
        server, port = _refusing_grpc_server()

        def stop() -> None:
            server.stop(None).wait()

        ok, refused, refused_bytes = "OK", "INVALID_ARGUMENT", 0
    try:
        got = run_client(RunSpec(HOST, port, str(requests), 2, 0.2, 1.0, ()), client)
    finally:
        stop()
    counts = got["status_counts"]
    assert set(counts) == {ok, refused}
    assert counts[ok] + counts[refused] == got["requests"] > 20
    # The cursor goes round the 20 requests, ten answered, then ten refused.
    assert min(counts.values()) >= got["requests"] // 4
    assert got["errors"] == counts[refused]
    assert got["ok_latency_ms"]["count"] == counts[ok]
    assert got["connection_errors"] == {} and got["timeouts"] == 0
    if refused_bytes is not None:  # gRPC: a refused call has no body
        ok_body = 300
        assert got["mean_response_bytes"] == pytest.approx(ok_body * counts[ok] / got["requests"])
