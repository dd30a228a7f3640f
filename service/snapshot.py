"""Snapshot and restore of a replica's RocksDB, as RocksDB's own SST files.

`livefeat snapshot OUT` opens the data dir read-only (so it works beside a
running service), streams every row in key order into SST files of at most
`rows_per_file` rows (RocksDB's SstFileWriter) and writes a manifest.
`livefeat restore SNAPSHOT` loads them into a data dir no process holds: an
empty one ingests the files as they are (no rewrite: fast), a non-empty one
merges them row by row with the usual rule, newest event wins.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rocksdict import AccessType, IngestExternalFileOptions, Options, Rdict, SstFileWriter

from service.errors import LivefeatError
from service.store.rocks import RocksTier

MANIFEST = "manifest.json"


def snapshot(
    db_path: Path, out: Path, rows_per_file: int = 1_000_000,
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:  # fmt: skip
    """Write every row of the RocksDB at `db_path` into SST files under `out`."""
    if not (db_path / "CURRENT").exists():
        raise LivefeatError(f"{db_path}: no RocksDB here")
    if out.exists() and any(out.iterdir()):
        raise LivefeatError(f"{out}: exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    db = Rdict(str(db_path), Options(raw_mode=True), access_type=AccessType.read_only())
    files: list[str] = []
    rows = 0
    writer: SstFileWriter | None = None
    try:
        it = db.iter()
        it.seek_to_first()
        while it.valid():
            if writer is None:
                name = f"part-{len(files):05d}.sst"
                writer = SstFileWriter(Options(raw_mode=True))
                writer.open(str(out / name))
                files.append(name)
            writer[it.key()] = it.value()
            rows += 1
            if rows % rows_per_file == 0:
                writer.finish()
                writer = None
            if progress and rows % 10_000 == 0:
                progress(10_000)
            it.next()
        if writer is not None:
            writer.finish()
    finally:
        db.close()
    manifest = {"rows": rows, "files": files, "created_at_ms": time.time_ns() // 1_000_000}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def restore(
    snap: Path, db_path: Path, progress: Callable[[int], None] | None = None
) -> dict[str, object]:
    """Load a snapshot into the RocksDB at `db_path` (which no process may hold)."""
    try:
        manifest = json.loads((snap / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise LivefeatError(f"{snap}: not a livefeat snapshot ({exc})") from exc
    paths = [str(snap / f) for f in manifest["files"]]
    tier = RocksTier(db_path)  # raises DataDirBusy if a service holds it
    try:
        empty = next(tier.scan(b""), None) is None
        if empty:
            tier.ingest_sst(paths)
            mode, written = "ingested", int(manifest["rows"])
            if progress:
                progress(written)
        else:
            mode, written = "merged", _merge(tier, paths, progress)
        tier.flush()
    finally:
        tier.close_sync()
    return {"rows": manifest["rows"], "written": written, "mode": mode}


def _merge(tier: RocksTier, paths: list[str], progress: Callable[[int], None] | None) -> int:
    written = 0
    for path in paths:
        with tempfile.TemporaryDirectory(prefix="livefeat-restore-") as scratch:
            source = Rdict(scratch, Options(raw_mode=True))  # a DB to read one SST file
            source.ingest_external_file([path], IngestExternalFileOptions())
            written += _merge_from(source, tier, progress)
            source.close()
    return written


def _merge_from(source: Rdict, tier: RocksTier, progress: Callable[[int], None] | None) -> int:
    written = 0
    batch: list[tuple[bytes, bytes]] = []
    it = source.iter()
    it.seek_to_first()
    while True:
        if len(batch) == 50_000 or (batch and not it.valid()):
            written += sum(tier.put_many_sync(batch))
            if progress:
                progress(len(batch))
            batch = []
        if not it.valid():
            break
        batch.append((it.key(), it.value()))
        it.next()
    del it  # the iterator pins the DB open
    return written
