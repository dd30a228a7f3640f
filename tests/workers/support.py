"""Helpers for tests of `livefeat serve --workers N`: which worker answered, the workers' pids."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LiveServer

HEADER = "x-livefeat-worker"
# No connection is kept: every request connects anew, and the kernel picks the worker.
_FRESH = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=10.0)


def children(pid: int) -> list[int]:
    """The child processes of `pid` (the supervisor's workers), from /proc."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def worker_pid(server: LiveServer, index: int) -> int:
    """The pid of the supervisor's worker `index` (from its command line)."""
    for pid in children(server.pid):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if args[args.index(b"--worker-index") + 1] == str(index).encode():
            return pid
    raise LookupError(f"no worker {index} under pid {server.pid}")


def get(server: LiveServer, path: str) -> httpx.Response:
    """GET on a new connection (the kernel picks the worker that accepts it)."""
    return _FRESH.get(f"{server.url}{path}")


def post(server: LiveServer, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST on a new connection."""
    return _FRESH.post(f"{server.url}{path}", json=body)


def worker_of(response: httpx.Response) -> int:
    """The index of the worker that answered."""
    return int(response.headers[HEADER])


def reach_every_worker(server: LiveServer, count: int, timeout_s: float = 60.0) -> set[int]:
    """GET /readyz over new connections until each of `count` workers has answered (a
    worker still starting is not listening yet; at most `timeout_s`); the indexes seen."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < count and time.monotonic() < deadline:
        r = get(server, "/readyz")
        assert r.status_code == 200, r.text
        seen.add(worker_of(r))
    return seen
