"""A `livefeat serve` of the fuzz tests' own (module scope): fuzzed writes touch no one else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, copy_data_dir


@pytest.fixture(scope="module")
def fuzz_server(
    demo_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("fuzz-server")
    live = LiveServer(copy_data_dir(demo_template, root / "data"), root / "logs")
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()
