"""The RocksDB tier (rocksdict): the local, durable, last-good copy.

Tuned for point lookups: whole-key bloom filters (10 bits/key), index and filter
blocks in a block cache, LZ4. rocksdict releases the GIL, so writes and big reads
run on a small dedicated thread pool and a slow disk never blocks the event loop
with them. Small reads (INLINE_READ_KEYS keys or fewer: a request's user row, the
rooms L1 missed) run on the calling thread: a key the block cache or the page
cache holds costs about 10 us there, against about 150 us through the pool
(measured on the standard demo data: the hand-off to a thread and back, and the
GIL taken back, cost more than the read). A read through the pool also waits for the
GIL, up to the interpreter's 5-ms switch interval while the loop is busy: with 500
candidates per request, where a batch of room entries expiring together often made a
read of more than 16 keys, the pool's reads put the p99 at 24-35 ms against 14-20 ms
with reads of up to 64 keys inline (same-sitting A/B, 2026-12-06; CPU per request 6%
lower). 64 keys hold the loop about 0.25 ms when cached (3.5-4 us a key, measured
apart), and could hold it several milliseconds if each had to come from an SSD.
Writes are serialised by one lock so that read-compare-write (newest event
wins) is atomic within the process; RocksDB's LOCK file keeps other processes out.

Other processes may read the same directory as *secondary* instances (`secondary=`,
used by the workers of one pod, service/workers/): a secondary sees what the
primary wrote once it has caught up (`catch_up`: it replays the primary's new
MANIFEST and WAL records). Measured over a copy of the standard demo data (1.1
million rows) on this project's shared 2-core machine, under load: median 0.8 ms
when nothing is new, 0.9 ms after one synced write, 1.0 ms after ten (p99 7-10 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    IngestExternalFileOptions,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from service.errors import DataDirBusy, TierTimeout, TierUnavailable
from service.stored import event_time_of

# After a failed write (service/store/rocks.py RocksTier._reopen).
REOPEN_AFTER_S = 1.0
REOPEN_FREE_BYTES = 1 << 20
# Reads of at most this many keys run on the calling thread (see above).
INLINE_READ_KEYS = 64
# A read on the pool that has not answered in this long raises TierTimeout (its thread
# goes on: RocksDB has no way to stop a read). Every tier bounds its own reads
# (service/store/base.py); Redis's are bounded by its socket timeouts.
POOL_READ_TIMEOUT_S = 2.0


class _Gate:
    """Reads share the database; a reopen has it alone (no read may use a closed handle)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            self.leave()

    def try_enter(self) -> bool:
        """Share the database if no reopen has it (True; call `leave` after), without
        waiting (False)."""
        with self._cond:
            if self._exclusive:
                return False
            self._readers += 1
            return True

    def leave(self) -> None:
        """The end of a share (`shared`, or `try_enter` that returned True)."""
        with self._cond:
            self._readers -= 1
            if not self._readers and self._exclusive:  # only a reopen waits for none
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._exclusive = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class RocksTier:
    """A Tier over one RocksDB directory. Raises DataDirBusy if another process holds it."""

    name = "rocksdb"

    def __init__(
        self,
        path: str | Path,
        *,
        block_cache_mb: int = 256,
        threads: int = 2,
        sync: bool = True,
        secondary: Path | None = None,
        read_timeout_s: float = POOL_READ_TIMEOUT_S,
    ) -> None:
        """`secondary`: open read-only as a secondary instance keeping its own files
        there (raises TierUnavailable while the primary has not created the database).
        `read_timeout_s`: the bound of a read on the thread pool (POOL_READ_TIMEOUT_S)."""
        self.path = Path(path)
        self.read_timeout_s = read_timeout_s
        self.secondary = secondary
        # The block cache outlives a reopen (after a failed write; a secondary's after
        # the primary flushed): blocks are cached under keys of their files.
        self._cache = Cache(block_cache_mb << 20)
        if secondary is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = _open(self.path, self._cache)
        else:
            self._db = _open_secondary(self.path, secondary, self._cache)
        # A secondary's view of the primary's files (catch_up reopens when they change).
        self._files = _file_names(self._db) if secondary is not None else frozenset()
        # Catch-ups asked for and done: one that starts after a request covers it.
        self._catch_up_asked = self._catch_up_done = 0
        self._catch_up_lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="rocksdb")
        self._write_lock = threading.Lock()
        self._gate = _Gate()
        self._failed_at: float | None = None  # a write failed (disk full?): reopen first
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync
        self._closed = False

    def __repr__(self) -> str:
        return f"<RocksTier {self.path} {'closed' if self._closed else 'open'}>"

    def get_many_now(self, keys: Sequence[bytes]) -> list[bytes | None] | None:
        """A few keys (INLINE_READ_KEYS or fewer: module docstring) read on the calling
        thread; None for more, and while a reopen has the database (never waits for it).
        Raises TierUnavailable."""
        if len(keys) > INLINE_READ_KEYS or self._closed or not self._gate.try_enter():
            return None
        try:
            if len(keys) == 1:  # a plain get: 2.3 us warm, a multi-get of one 6 us
                return [self._db.get(keys[0])]
            return list(self._db.get(list(keys)))  # type: ignore[arg-type]
        except Exception as exc:  # rocksdict raises a bare Exception
            raise TierUnavailable(self.name, f"get: {exc}") from exc
        finally:
            self._gate.leave()

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Multi-get: at once for a few keys (`get_many_now`), else on the thread pool."""
        now = self.get_many_now(keys)
        if now is not None:
            return now
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.read_timeout_s):
                return await loop.run_in_executor(self._pool, self.get_many_sync, list(keys))
        except TimeoutError:
            raise TierTimeout(self.name, f"get: no answer in {self.read_timeout_s} s") from None

    def get_many_sync(self, keys: list[bytes]) -> list[bytes | None]:
        """Multi-get on the calling thread (for tools that own the data dir)."""
        if self._closed:
            raise TierUnavailable(self.name, "closed")
        with self._gate.shared():
            try:
                return list(self._db.get(keys))  # type: ignore[arg-type]
            except Exception as exc:  # rocksdict raises a bare Exception
                raise TierUnavailable(self.name, f"get: {exc}") from exc

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        """Newest-event-wins batch write, atomic (one WriteBatch), on the thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.put_many_sync, list(items))

    def put_many_sync(self, items: list[tuple[bytes, bytes]]) -> list[bool]:
        """As put_many, on the calling thread."""
        if self._closed:
            raise TierUnavailable(self.name, "closed")
        keys = [k for k, _ in items]
        order = range(len(items))
        if len(set(keys)) != len(keys):  # rare: keep only the newest item per key
            newest: dict[bytes, int] = {}
            for i, (key, value) in enumerate(items):
                j = newest.get(key)
                if j is None or event_time_of(value) > event_time_of(items[j][1]):
                    newest[key] = i
            order = sorted(newest.values())  # type: ignore[assignment]
            keys = [items[i][0] for i in order]
        written = [False] * len(items)
        with self._write_lock:
            if self._failed_at is not None:
                self._reopen()
            try:
                self._write(items, keys, order, written)
            except Exception as exc:  # rocksdict raises a bare Exception (ENOSPC, EIO)
                self._failed_at = time.monotonic()
                raise TierUnavailable(self.name, f"write: {exc}") from exc
        return written

    def _write(
        self, items: list[tuple[bytes, bytes]], keys: list[bytes], order: Any, written: list[bool]
    ) -> None:
        with self._gate.shared():
            stored: list[bytes | None] = self._db.get(keys)  # type: ignore[arg-type,assignment]
            batch = WriteBatch(raw_mode=True)
            put = batch.put
            for i, old in zip(order, stored, strict=True):
                key, value = items[i]
                if old is None or event_time_of(value) > event_time_of(old):
                    put(key, value)
                    written[i] = True
            if not batch.is_empty():
                self._db.write(batch, self._write_opts)

    def _reopen(self) -> None:
        """After a failed write, RocksDB refuses every write until reopened (it keeps its
        background error; rocksdict has no Resume): close and open again, with no read
        in flight, at most once a second, and only once the disk has room again."""
        assert self._failed_at is not None
        if time.monotonic() - self._failed_at < REOPEN_AFTER_S:
            raise TierUnavailable(self.name, "writes failed; reopening after the disk has room")
        if shutil.disk_usage(self.path).free < REOPEN_FREE_BYTES:
            self._failed_at = time.monotonic()
            raise TierUnavailable(self.name, "writes failed: the disk is still full")
        with self._gate.exclusive():
            with contextlib.suppress(Exception):
                self._db.close()
            try:
                self._db = _open(self.path, self._cache)
            except Exception as exc:
                self._failed_at = time.monotonic()
                raise TierUnavailable(self.name, f"reopen: {exc}") from exc
        self._failed_at = None

    async def scan_keys(self, prefix: bytes, batch: int = 20_000) -> AsyncIterator[list[bytes]]:
        """Keys starting with `prefix`, `batch` at a time, read on the tier's threads."""
        loop = asyncio.get_running_loop()
        it = self._db.iter()
        it.seek(prefix)

        def take() -> list[bytes]:
            keys: list[bytes] = []
            while len(keys) < batch and it.valid() and it.key().startswith(prefix):
                keys.append(it.key())
                it.next()
            return keys

        while keys := await loop.run_in_executor(self._pool, take):
            yield keys

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix` (tests and tools)."""
        it = self._db.iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix):
            yield it.key(), it.value()
            it.next()

    def ingest_sst(self, paths: list[str]) -> None:
        """Add SST files (made by SstFileWriter) as they are; they win over what is stored."""
        opts = IngestExternalFileOptions()
        opts.set_move_files(False)
        with self._write_lock:
            self._db.ingest_external_file(paths, opts)

    async def catch_up(self) -> None:
        """Secondary: see everything the primary wrote before this call (calls made
        while one runs share the next). Raises TierUnavailable if RocksDB fails.

        Where the primary's files changed since the last catch-up (it flushed or
        compacted), the secondary instance is opened again (3 ms on the standard demo
        data): RocksDB's secondary keeps in its memtable what it replayed from a WAL
        the primary has since flushed, and that older value hides the newer one the
        flush wrote until the key is written again (facebook/rocksdb#15051; it
        happens with rocksdict 0.3.29's RocksDB). Opened again, it replays only the
        WALs that are still live."""
        self._catch_up_asked += 1
        ticket = self._catch_up_asked
        async with self._catch_up_lock:
            if self._catch_up_done >= ticket:
                return
            covers = self._catch_up_asked
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._pool, self._catch_up_sync)
            except Exception as exc:  # rocksdict raises a bare Exception
                raise TierUnavailable(self.name, f"catch-up with the primary: {exc}") from exc
            self._catch_up_done = covers

    def _catch_up_sync(self) -> None:
        assert self.secondary is not None, "catch_up is for secondary instances"
        with self._gate.shared():
            self._db.try_catch_up_with_primary()
            files = _file_names(self._db)
        if files == self._files:
            return
        # Opened beside the old instance, which serves meanwhile (and stays, should the
        # open fail: the next catch-up tries again); swapped with no read in flight.
        fresh = _open_secondary(self.path, self.secondary, self._cache)
        with self._gate.exclusive():
            old, self._db = self._db, fresh
            self._files = _file_names(fresh)
        old.close()  # an iterator still in use keeps it open until it is done

    def flush(self) -> None:
        """Make everything written so far durable (WAL synced, memtables flushed)."""
        self._db.flush_wal(True)
        self._db.flush(True)

    async def sync(self) -> None:
        """Sync the write-ahead log (writes made with sync=False become durable)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._db.flush_wal, True)

    async def ready(self) -> bool:
        """Open and answering."""
        return not self._closed

    async def close(self) -> None:
        """Flush and close; waits for calls in flight."""
        self.close_sync()

    def close_sync(self) -> None:
        """As close, for synchronous callers."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        if self.secondary is None:
            self._db.flush_wal(True)
        self._db.close()


def _open(path: Path, block_cache: Cache) -> Rdict:
    opts = _options(block_cache)
    opts.create_if_missing(True)
    try:
        return Rdict(str(path), opts, column_families=_default_family(opts))
    except Exception as exc:  # rocksdict raises a bare Exception
        if "lock" in str(exc).lower():
            raise DataDirBusy(
                f"{path} is in use by another livefeat process (a running service or a load); "
                "stop it, or load through it with --server"
            ) from exc
        raise


def _open_secondary(path: Path, own: Path, block_cache: Cache) -> Rdict:
    own.mkdir(parents=True, exist_ok=True)
    opts = _options(block_cache)
    opts.set_max_open_files(-1)  # a secondary must keep every SST file open
    try:
        return Rdict(
            str(path),
            opts,
            column_families=_default_family(opts),
            access_type=AccessType.secondary(str(own)),
        )
    except Exception as exc:  # rocksdict raises a bare Exception
        raise TierUnavailable("rocksdb", f"cannot open {path} as a secondary: {exc}") from exc


def _default_family(opts: Options) -> dict[str, Options]:
    """`opts` for the default column family, given again: opening an existing database,
    rocksdict takes a family's options from the OPTIONS file RocksDB keeps in it, where
    a block cache is not recorded, so the family read with RocksDB's default 8 MB block
    cache whatever `opts` said (until 2026-12-07: a read took 5-9 us a key on the
    standard demo data, and 90 us once compacted into one file)."""
    return {"default": opts}


def _file_names(db: Rdict) -> frozenset[str]:
    """The names of the SST files `db` reads (4 us on the standard demo data)."""
    return frozenset(f["name"] for f in db.live_files())


def _options(block_cache: Cache) -> Options:
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(block_cache)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    opts = Options(raw_mode=True)
    opts.set_block_based_table_factory(table)
    opts.set_compression_type(DBCompressionType.lz4())
    opts.increase_parallelism(2)
    opts.set_max_background_jobs(2)
    return opts
