"""Snapshot (beside a live writer) and restore (ingest into empty, merge into non-empty)."""

from pathlib import Path

import pytest

from service.core.codec import header
from service.errors import DataDirBusy, LivefeatError
from service.snapshot import restore, snapshot
from service.store.rocks import RocksTier


def value(event_time_ms: int, payload: bytes = b"") -> bytes:
    return header(1, event_time_ms) + payload


def test_snapshot_beside_a_running_writer_then_restore_into_empty(tmp_path: Path) -> None:
    live = RocksTier(tmp_path / "a")
    items = [(b"v:1:%05d" % i, value(i, b"x" * (i % 7))) for i in range(2500)]
    live.put_many_sync(items)
    live.flush()
    try:
        manifest = snapshot(tmp_path / "a", tmp_path / "snap", rows_per_file=1000)
    finally:
        live.close_sync()
    assert manifest["rows"] == 2500 and len(manifest["files"]) == 3  # type: ignore[arg-type]
    result = restore(tmp_path / "snap", tmp_path / "b")
    assert result["mode"] == "ingested"
    fresh = RocksTier(tmp_path / "b")
    try:
        assert list(fresh.scan(b"")) == sorted(items)
    finally:
        fresh.close_sync()


def test_restore_into_non_empty_keeps_newer_values(tmp_path: Path) -> None:
    src = RocksTier(tmp_path / "a")
    src.put_many_sync([(b"k1", value(10, b"snap")), (b"k2", value(10, b"snap"))])
    src.close_sync()
    snapshot(tmp_path / "a", tmp_path / "snap")
    dst = RocksTier(tmp_path / "b")
    dst.put_many_sync([(b"k1", value(20, b"newer")), (b"k2", value(5, b"older"))])
    dst.close_sync()
    result = restore(tmp_path / "snap", tmp_path / "b")
    assert result == {"rows": 2, "written": 1, "mode": "merged"}
    dst = RocksTier(tmp_path / "b")
    try:
        assert dict(dst.scan(b"")) == {b"k1": value(20, b"newer"), b"k2": value(10, b"snap")}
    finally:
        dst.close_sync()


def test_restore_refuses_a_held_data_dir_and_bad_snapshots(tmp_path: Path) -> None:
    src = RocksTier(tmp_path / "a")
    src.put_many_sync([(b"k", value(1))])
    src.close_sync()
    snapshot(tmp_path / "a", tmp_path / "snap")
    held = RocksTier(tmp_path / "b")
    try:
        with pytest.raises(DataDirBusy):
            restore(tmp_path / "snap", tmp_path / "b")
    finally:
        held.close_sync()
    with pytest.raises(LivefeatError, match="not a livefeat snapshot"):
        restore(tmp_path / "nothing", tmp_path / "c")
    with pytest.raises(LivefeatError, match="not empty"):
        snapshot(tmp_path / "a", tmp_path / "snap")
