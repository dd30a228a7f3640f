"""What `livefeat serve` says it runs with: the compiled per-row loops (service/native.py)
and glibc's allocator kept from mapping each big answer afresh (service/server.py)."""

from __future__ import annotations

import json
import time

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


def test_a_server_runs_the_compiled_loops_and_keeps_big_buffers_in_the_heap(
    server: LiveServer,
) -> None:
    line = serving_line(server)
    assert line["native"] == "compiled"
    assert line["malloc"] == "glibc"
