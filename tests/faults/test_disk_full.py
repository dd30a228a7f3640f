"""Scenario 7: RocksDB on a small filesystem that fills up (embedded mode: RocksDB is the
only tier, so nothing hides the failure).

A tmpfs of a few MB is mounted under the test's tmp dir (skipped, with the reason,
where the kernel refuses the mount), the demo's RocksDB copied onto it, and a ballast
file fills what is left. Pushes that cannot be stored must be refused (an error
answer with a JSON body), never acknowledged and lost; reads keep serving; once the
ballast is deleted, pushes are acknowledged again.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FULL, FaultServer, Oracle, run_fault

pytestmark = [pytest.mark.faults, pytest.mark.process]

FS_MB = 16


@contextlib.contextmanager
def small_fs(mountpoint: Path, size_mb: int) -> Iterator[Path]:
    mountpoint.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {size_mb} MB tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, timeout=30)


def fill(path: Path) -> int:
    """Write zeros to `path` until the filesystem is full; returns the bytes written."""
    written = 0
    block = b"\0" * (64 << 10)
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                written += f.write(block)
        except OSError:
            pass
        with contextlib.suppress(OSError):  # the last few bytes
            while f.write(b"\0" * 512):
                written += 512
    return written


def test_rocksdb_disk_full(
    fault_server: Callable[..., FaultServer], demo_template: Path, oracle: Oracle, tmp_path: Path
) -> None:
    ballast: dict[str, int] = {}
    with small_fs(tmp_path / "small", FS_MB) as fs:
        data = fs / "data"
        shutil.copytree(demo_template, data, ignore=shutil.ignore_patterns("demo-parquet"))
        server = fault_server(data_dir=data)
        try:
            run_fault(
                "rocksdb_disk_full",
                server,
                oracle,
                lambda: ballast.update(bytes=fill(fs / "ballast")),
                lambda: (fs / "ballast").unlink(),
                10.0 if FULL else 2.0,
                need_redis=False,
                extra=lambda: {"fs_mb": FS_MB, "ballast_bytes": ballast.get("bytes")},
            )
        finally:
            server.stop()  # before the unmount
