"""Fixtures of the fault suite: the oracle, a Redis behind a fault proxy, servers, results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import copy_data_dir
from tests.faults.harness import FaultServer, Oracle, write_results
from tests.support.fault_proxy import FaultProxy
from tests.support.redis_proc import RedisServer


@pytest.fixture(scope="session", autouse=True)
def _results_file() -> Iterator[None]:
    """Write build/faults/results.json once every scenario of the session has run."""
    yield
    write_results()


@pytest.fixture(scope="session")
def oracle(demo_template: Path) -> Oracle:
    return Oracle(demo_template / "demo-parquet")


@pytest.fixture
def redis_proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of this test's redis-server; livefeat gets proxy's port."""
    proxy = FaultProxy(redis_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def fault_server(demo_template: Path, tmp_path: Path) -> Iterator[Callable[..., FaultServer]]:
    """Start (and wait for) servers over copies of the demo data; stopped at teardown."""
    started: list[FaultServer] = []

    def start(
        *extra_args: str, data_dir: Path | None = None, env: dict[str, str] | None = None
    ) -> FaultServer:
        if data_dir is None:
            data_dir = copy_data_dir(demo_template, tmp_path / f"data{len(started)}")
        for attempt in range(3):
            server = FaultServer(data_dir, tmp_path / "logs", extra_args, env)
            started.append(server)
            try:
                server.wait_ready()
                return server
            except pytest.fail.Exception:
                # A port picked free was taken meanwhile (by another test run): try others.
                if attempt == 2 or "address already in use" not in server.stderr():
                    raise
        raise AssertionError("unreachable")

    yield start
    for server in started:
        server.stop()
