"""Replicas for the replica tests: `livefeat serve` processes on copies of the demo data,
all reading one Redis."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import LiveServer, start_live


@contextlib.contextmanager
def replicas_of(demo_template: Path, root: Path, redis_url: str, n: int = 3) -> Iterator[
    list[LiveServer]
]:  # fmt: skip
    """`n` ready replicas over their own copies of the demo data; stopped on exit."""
    started: list[LiveServer] = []
    try:
        for name in "abcdefgh"[:n]:
            data = shutil.copytree(demo_template, root / name)
            start_live(data, root / "logs", ["--redis-url", redis_url], started)
        yield started
    finally:
        for server in started:
            server.stop()
