"""Shared fixtures: demo data made by the real CLI, and real `livefeat serve` subprocesses.

Nothing here is autouse: a test that does not ask for a server starts none.

- `demo_template`: a data dir filled once per session by `livefeat demo --small`
  (1,000 users, 200 rooms, 5,000 pairs); never served from, only copied.
- `server` / `client`: one server per session over a copy of the template, for
  tests that read, or write only ids no other test uses.
- `start_server` / `fresh_data_dir`: per-test servers over their own data dirs,
  for tests that stop and restart a server or must not share its data.

Servers are started by path (the venv's `livefeat`), addressed by the pid
recorded at start, asked to stop with SIGTERM and killed only if they have not
exited 10 s later.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from hypothesis import settings as hypothesis_settings

from tests.support.redis_proc import RedisServer

# Property tests (hypothesis): "ci", the default, is derandomized (the same examples on
# every run, no example database) and small enough for the property set to run in
# under a minute; HYPOTHESIS_PROFILE=dev runs 10x the examples with fresh randomness.
# No per-example deadline in either: a shared CI machine must not fail a slow example.
hypothesis_settings.register_profile("ci", max_examples=60, derandomize=True, database=None,
                                     deadline=None, print_blob=True)  # fmt: skip
hypothesis_settings.register_profile("dev", max_examples=600, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

LIVEFEAT = str(Path(sys.executable).with_name("livefeat"))
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
DEMO_TIMEOUT_S = 120.0


# Servers started by tests give HTTP reads 5 s, not the production 0.25 s: on a shared
# CI machine under the whole suite a read can take longer, and tests of values must not
# see UNAVAILABLE rows for a slow machine. Tests of the deadline set their own.
TEST_HTTP_TIMEOUT_S = "5"


def livefeat_env() -> dict[str, str]:
    """The environment for livefeat subprocesses: ours, minus any LIVEFEAT_* setting, and
    one worker per server (the default is one per CPU): tests of several workers ask
    for them with `--workers N` (tests/workers/)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEFEAT_")}
    return {**env, "LIVEFEAT_HTTP_TIMEOUT_S": TEST_HTTP_TIMEOUT_S, "LIVEFEAT_WORKERS": "1"}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """One `livefeat serve` subprocess on 127.0.0.1, its output in files under `log_dir`."""

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()  # every server also serves gRPC; never the default port
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"serve-{self.port}.out"
        self.stderr_path = log_dir / f"serve-{self.port}.err"
        cmd = [
            LIVEFEAT,
            "serve",
            "--data-dir",
            str(data_dir),
            "--http-port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            "--http-host",
            "127.0.0.1",
            *extra_args,
        ]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**livefeat_env(), **(env or {})},
            )
        self.pid = self.proc.pid

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"<LiveServer pid={self.pid} {self.url} {state}>"

    def stderr(self) -> str:
        """What the server wrote to stderr so far (its structured log)."""
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll /readyz until it answers 200; fail the test with the server's stderr if not."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"livefeat serve exited with {self.proc.returncode} before ready; "
                    f"stderr:\n{self.stderr()}"
                )
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2.0)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.05)
        self.stop()
        pytest.fail(
            f"livefeat serve not ready after {timeout_s} s ({last}); stderr:\n{self.stderr()}"
        )

    def stop(self) -> int:
        """SIGTERM by pid, wait up to 10 s, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        return self.proc.returncode


PORT_TAKEN = "address already in use"


def start_live(
    data_dir: Path,
    log_dir: Path,
    extra_args: Sequence[str],
    started: list[LiveServer],
    env: dict[str, str] | None = None,
) -> LiveServer:
    """A ready LiveServer; started again on other ports if one of its free ports was
    taken between choosing it and binding it (other processes share the machine)."""
    for attempt in range(3):
        server = LiveServer(data_dir, log_dir, extra_args, env)
        started.append(server)
        try:
            server.wait_ready()
            return server
        except pytest.fail.Exception:
            if attempt == 2 or server.proc.poll() is None or PORT_TAKEN not in server.stderr():
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the small demo workload, loaded once by the real CLI. Copy it."""
    data_dir = tmp_path_factory.mktemp("demo-template") / "data"
    done = subprocess.run(
        [LIVEFEAT, "demo", "--small", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        env=livefeat_env(),
    )
    if done.returncode != 0:
        pytest.fail(f"livefeat demo --small failed ({done.returncode}):\n{done.stderr}")
    return data_dir


def copy_data_dir(template: Path, dest: Path) -> Path:
    """A private copy of a data dir no process holds."""
    shutil.copytree(template, dest)
    return dest


@pytest.fixture
def fresh_data_dir(demo_template: Path, tmp_path: Path) -> Path:
    """This test's own copy of the demo data dir."""
    return copy_data_dir(demo_template, tmp_path / "data")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start (and wait for) servers over given data dirs, with extra `serve` flags and
    LIVEFEAT_* settings (`env`); every one is stopped at teardown."""
    started: list[LiveServer] = []

    def start(data_dir: Path, *extra_args: str, env: dict[str, str] | None = None) -> LiveServer:
        return start_live(data_dir, tmp_path / "logs", extra_args, started, env)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(demo_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The session's server over its own copy of the demo data."""
    root = tmp_path_factory.mktemp("session-server")
    started: list[LiveServer] = []
    try:
        yield start_live(copy_data_dir(demo_template, root / "data"), root / "logs", (), started)
    finally:
        for live in started:
            live.stop()


@pytest.fixture(scope="session")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client for the session's server."""
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        yield c


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, on a free port; stopped by pid at teardown."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()
