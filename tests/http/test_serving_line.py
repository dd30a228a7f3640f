"""What `livefeat serve` says it runs with: the compiled per-row loops (service/native.py),
glibc's allocator kept from mapping each big answer afresh (service/server.py), and
grpc's experiments chosen before grpc was imported (service/grpc_env.py)."""

from __future__ import annotations

import json
import os
import time

from service.grpc_env import SERVING_EXPERIMENTS
from tests.conftest import LiveServer


def serving_line(server: LiveServer, timeout_s: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        for path in (server.stdout_path, server.stderr_path):
            for line in path.read_text(errors="replace").splitlines():
                if '"serving"' in line:
                    return dict(json.loads(line))
        assert time.monotonic() < deadline, "no 'serving' log line"
        time.sleep(0.1)


def test_a_server_says_what_it_runs_with(
    server: LiveServer,
) -> None:
    line = serving_line(server)
    assert line["native"] == "compiled"
    assert line["malloc"] == "glibc"
    # an operator's own GRPC_EXPERIMENTS is kept; else livefeat's
    assert line["grpc_experiments"] == os.environ.get("GRPC_EXPERIMENTS", SERVING_EXPERIMENTS)
