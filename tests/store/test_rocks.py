import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.codec import header
from service.errors import DataDirBusy, TierTimeout
from service.store.rocks import INLINE_READ_KEYS, RocksTier


def value(event_time_ms: int, payload: bytes = b"x") -> bytes:
    return header(1, event_time_ms) + payload


@contextlib.contextmanager
def gate_held(tier: RocksTier) -> Iterator[threading.Event]:
    """The tier's gate held exclusive by another thread, as a reopen holds it, until the
    event yielded is set or the block ends."""
    held, release = threading.Event(), threading.Event()

    def reopen() -> None:
        with tier._gate.exclusive():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=reopen)
    thread.start()
    held.wait(10)
    try:
        yield release
    finally:
        release.set()
        thread.join(10)


def test_newest_event_wins(tmp_path: Path) -> None:
    async def go() -> None:
        tier = RocksTier(tmp_path / "db")
        try:
            assert await tier.put_many([(b"k", value(10, b"ten"))]) == [True]
            assert await tier.put_many([(b"k", value(5, b"five"))]) == [False]
            assert await tier.put_many([(b"k", value(10, b"again"))]) == [False]
            assert await tier.get_many([b"k", b"absent"]) == [value(10, b"ten"), None]
            assert await tier.put_many([(b"k", value(11, b"eleven"))]) == [True]
            assert await tier.get_many([b"k"]) == [value(11, b"eleven")]
        finally:
            await tier.close()

    asyncio.run(go())


def test_duplicates_in_one_batch_keep_the_newest(tmp_path: Path) -> None:
    tier = RocksTier(tmp_path / "db")
    try:
        items = [(b"k", value(3, b"3")), (b"k", value(9, b"9")), (b"k", value(4, b"4"))]
        assert tier.put_many_sync(items) == [False, True, False]
        assert tier.get_many_sync([b"k"]) == [value(9, b"9")]
    finally:
        tier.close_sync()


def test_values_survive_reopen(tmp_path: Path) -> None:
    tier = RocksTier(tmp_path / "db")
    tier.put_many_sync([(b"a:1", value(1)), (b"a:2", value(2)), (b"b:1", value(3))])
    tier.close_sync()
    tier = RocksTier(tmp_path / "db")
    try:
        assert [k for k, _ in tier.scan(b"a:")] == [b"a:1", b"a:2"]
    finally:
        tier.close_sync()


def test_second_opener_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    tier = RocksTier(tmp_path / "db")
    try:
        with pytest.raises(DataDirBusy, match="in use by another livefeat process"):
            RocksTier(tmp_path / "db")
    finally:
        tier.close_sync()


@pytest.mark.parametrize("n", [1, 5, INLINE_READ_KEYS, INLINE_READ_KEYS + 1, 300])
def test_reads_of_any_size_answer_aligned_with_their_keys(tmp_path: Path, n: int) -> None:
    """Small reads run on the loop (one key: a plain get), bigger ones on the pool:
    each answers value for value, absent keys None."""

    async def go() -> None:
        tier = RocksTier(tmp_path / "db")
        try:
            await tier.put_many([(b"k%d" % i, value(i + 1, b"v%d" % i)) for i in range(0, n, 2)])
            keys = [b"k%d" % i for i in range(n)]
            want = [value(i + 1, b"v%d" % i) if i % 2 == 0 else None for i in range(n)]
            assert await tier.get_many(keys) == want
        finally:
            await tier.close()

    asyncio.run(go())


def test_a_small_read_during_a_reopen_waits_on_the_pool_not_the_loop(tmp_path: Path) -> None:
    """While a reopen has the database (the gate exclusive), a small read does not block
    the event loop on the gate: it goes to the pool and answers once the reopen ends."""

    async def go() -> None:
        tier = RocksTier(tmp_path / "db")
        try:
            await tier.put_many([(b"k", value(1))])
            with gate_held(tier) as release:
                read = asyncio.create_task(tier.get_many([b"k"]))
                ticks = 0
                for _ in range(20):  # the loop keeps turning while the read waits
                    await asyncio.sleep(0.005)
                    ticks += 1
                assert not read.done() and ticks == 20
                release.set()
                assert await read == [value(1)]
        finally:
            await tier.close()

    asyncio.run(go())


def test_a_read_on_the_pool_is_bounded(tmp_path: Path) -> None:
    """A read on the pool that does not answer in `read_timeout_s` raises TierTimeout,
    so the fetch that waits for it ends (nothing above the tier bounds it: base.py)."""

    async def go() -> None:
        tier = RocksTier(tmp_path / "db", read_timeout_s=0.1)
        try:
            await tier.put_many([(b"k", value(1))])
            with gate_held(tier):  # every read held off, as by a reopen that hangs
                started = time.monotonic()
                with pytest.raises(TierTimeout, match=r"rocksdb.*no answer in 0\.1 s"):
                    await tier.get_many([b"k"] * (INLINE_READ_KEYS + 1))
                assert time.monotonic() - started < 5  # the bound, not the 10-s hold
            assert await tier.get_many([b"k"] * (INLINE_READ_KEYS + 1)) == [value(1)] * (
                INLINE_READ_KEYS + 1
            )
        finally:
            await tier.close()

    asyncio.run(go())


def test_reads_see_the_newest_value_through_flushes_and_compaction(tmp_path: Path) -> None:
    """A read after a newer write sees the newer value, through flushes to files and a
    compaction: on the primary, and on a secondary after its catch-up, where RocksDB
    itself served the value it had replayed before the flush (v2 for v3, until
    catch_up reopened the secondary when the primary's files changed)."""

    async def go() -> None:
        primary = RocksTier(tmp_path / "db")
        secondary = RocksTier(tmp_path / "db", secondary=tmp_path / "own")
        keys = [b"k", b"other"]
        try:
            for t in range(1, 5):
                await primary.put_many([(b"k", value(t, b"v%d" % t))])
                if t % 2:
                    primary.flush()  # the value now in a file: read through the row cache
                if t == 4:
                    primary._db.compact_range(None, None)
                await secondary.catch_up()
                for _ in range(2):  # the second read is answered by the cache, if any
                    want = [value(t, b"v%d" % t), None]
                    assert primary.get_many_now(keys) == want
                    assert primary.get_many_now(keys[:1]) == want[:1]
                    assert await secondary.get_many(keys) == want
        finally:
            await secondary.close()
            await primary.close()

    asyncio.run(go())


ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 1)),
        st.tuples(st.sampled_from(["flush", "compact", "catch_up"]), st.just(0)),
    ),
    max_size=25,
)


@given(ops=ops_st)
@settings(max_examples=100, deadline=None)
def test_a_secondary_caught_up_reads_the_newest_values(ops: list[tuple[str, int]]) -> None:
    """Random writes, flushes, compactions and catch-ups: after each catch-up the
    secondary reads, for every key, the newest value written before it."""

    async def go(root: Path) -> None:
        primary = RocksTier(root / "db")
        secondary = RocksTier(root / "db", secondary=root / "own")
        keys = [b"k%d" % i for i in range(2)]
        newest: dict[bytes, bytes] = {}
        try:
            for t, (op, i) in enumerate([*ops, ("catch_up", 0)], start=1):
                if op == "put":
                    newest[keys[i]] = value(t, b"v%d" % t)
                    assert await primary.put_many([(keys[i], newest[keys[i]])]) == [True]
                elif op == "flush":
                    primary.flush()
                elif op == "compact":
                    primary._db.compact_range(None, None)
                else:
                    await secondary.catch_up()
                    assert await secondary.get_many(keys) == [newest.get(k) for k in keys]
        finally:
            await secondary.close()
            await primary.close()

    with tempfile.TemporaryDirectory() as root:
        asyncio.run(go(Path(root)))


def test_an_existing_database_opens_with_the_block_cache_asked_for(tmp_path: Path) -> None:
    """The block cache size holds for a database that already exists (primary and
    secondary), not only for a new one: rocksdict takes a column family's options from
    the database's OPTIONS file unless given them again, and the file records no block
    cache (RocksDB's default, 8 MB, served every open but the first until 2026-12-07)."""

    def capacity(tier: RocksTier) -> int:
        return tier._db.property_int_value("rocksdb.block-cache-capacity")  # type: ignore[no-any-return]

    first = RocksTier(tmp_path / "db", block_cache_mb=32)
    first.put_many_sync([(b"k", value(1))])
    assert capacity(first) == 32 << 20
    first.close_sync()
    again = RocksTier(tmp_path / "db", block_cache_mb=48)
    secondary = RocksTier(tmp_path / "db", block_cache_mb=24, secondary=tmp_path / "own")
    try:
        assert capacity(again) == 48 << 20
        assert capacity(secondary) == 24 << 20
        assert again.get_many_sync([b"k"]) == secondary.get_many_sync([b"k"]) == [value(1)]
    finally:
        secondary.close_sync()
        again.close_sync()
