"""Policy of the tiered store. The durable tiers here are small in-memory fakes:
this tests fall-through, fill and failure policy, not storage (tests/store/test_rocks.py)."""

import asyncio
from collections.abc import Sequence

from service import native
from service.core.codec import JSON, Feature, ViewCodec, event_time_of, header
from service.errors import TierUnavailable
from service.store.base import UNAVAILABLE
from service.store.factory import assemble
from service.store.l1 import MISS, L1Cache
from service.store.tiered import TieredStore


def value(event_time_ms: int) -> bytes:
    return header(1, event_time_ms)


class DictTier:
    def __init__(self, name: str, data: dict[bytes, bytes] | None = None) -> None:
        self.name = name
        self.data = dict(data or {})
        self.down = False
        self.gets: list[list[bytes]] = []

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if self.down:
            raise TierUnavailable(self.name, "down")
        self.gets.append(list(keys))
        return [self.data.get(k) for k in keys]

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        if self.down:
            raise TierUnavailable(self.name, "down")
        out = []
        for k, v in items:
            old = self.data.get(k)
            ok = old is None or event_time_of(v) > event_time_of(old)
            if ok:
                self.data[k] = v
            out.append(ok)
        return out

    async def sync(self) -> None:
        pass

    async def ready(self) -> bool:
        return not self.down

    async def close(self) -> None:
        pass


def decode(raw: bytes) -> int:
    return event_time_of(raw)


def make(upper: DictTier, lower: DictTier) -> TieredStore[int]:
    return assemble(L1Cache(100, 60.0), [upper, lower])


def test_fall_through_fills_l1_and_the_tier_above() -> None:
    async def go() -> None:
        upper, lower = DictTier("upper", {b"a": value(1)}), DictTier("lower", {b"b": value(2)})
        store = make(upper, lower)
        got = await store.get_many([b"a", b"b", b"c", b"b"], [decode] * 4)
        assert got == [1, 2, None, 2]
        assert lower.gets == [[b"b", b"c"]]  # asked once per key, only for what upper missed
        await store.close()  # waits for the background fill
        assert upper.data[b"b"] == value(2)
        got = await store.get_many([b"a", b"b", b"c"], [decode] * 3)
        assert got == [1, 2, None]
        assert len(upper.gets) == 1  # everything, including "c is absent", came from L1

    asyncio.run(go())


def test_failed_tier_is_skipped_and_unanswered_keys_are_unavailable() -> None:
    async def go() -> None:
        upper, lower = DictTier("upper"), DictTier("lower", {b"b": value(2)})
        upper.down = True
        store = make(upper, lower)
        assert await store.get_many([b"b", b"c"], [decode] * 2) == [2, UNAVAILABLE]
        lower.down = True
        assert await store.get_many([b"d"], [decode]) == [UNAVAILABLE]
        assert not await store.ready()
        upper.down = lower.down = False
        # UNAVAILABLE was not cached: once the tiers answer, so does the store.
        assert await store.get_many([b"c"], [decode]) == [None]

    asyncio.run(go())


def test_put_writes_every_tier_and_invalidates_l1() -> None:
    async def go() -> None:
        upper, lower = DictTier("upper"), DictTier("lower")
        store = make(upper, lower)
        assert await store.get_many([b"k"], [decode]) == [None]
        assert await store.put_many([(b"k", value(5))]) == [True]
        assert upper.data[b"k"] == lower.data[b"k"] == value(5)
        assert await store.get_many([b"k"], [decode]) == [5]
        assert await store.put_many([(b"k", value(4))]) == [False]
        assert await store.get_stored([b"k", b"x"]) == [value(5), None]

    asyncio.run(go())


class SlowTier(DictTier):
    def __init__(self, name: str, data: dict[bytes, bytes], delay_s: float) -> None:
        super().__init__(name, data)
        self.delay_s = delay_s

        self.finished = 0  # calls that ran to the end (not cancelled at a deadline)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        await asyncio.sleep(self.delay_s)
        self.finished += 1
        return await super().get_many(keys)


def test_deadline_bounds_tier_reads() -> None:
    async def go() -> None:
        slow = SlowTier("slow", {b"a": value(1)}, delay_s=0.5)
        store: TieredStore[int] = assemble(L1Cache(100, 60.0), [slow])
        assert await store.get_many([b"a"], [decode], timeout_s=0.05) == [UNAVAILABLE]
        assert slow.finished == 0  # answered at the deadline: the tier's read was cut, not awaited
        assert await store.get_many([b"a"], [decode], timeout_s=2.0) == [1]
        assert slow.finished == 1

    asyncio.run(go())


def test_identical_concurrent_misses_are_fetched_once() -> None:
    async def go() -> None:
        slow = SlowTier("slow", {b"a": value(1), b"b": value(2)}, delay_s=0.05)
        store: TieredStore[int] = assemble(L1Cache(100, 60.0), [slow])
        results = await asyncio.gather(
            store.get_many([b"a", b"b"], [decode] * 2),
            store.get_many([b"b", b"a"], [decode] * 2),
            store.get_many([b"a"], [decode]),
        )
        assert results == [[1, 2], [2, 1], [1]]
        assert sorted(k for call in slow.gets for k in call) == [b"a", b"b"]

    asyncio.run(go())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rows_read_near_their_expiry_are_refreshed_in_the_background() -> None:
    async def go() -> None:
        from service.store.readthrough import REFRESH_CHECK_EVERY

        clock = Clock()
        tier = DictTier("t", {b"a": value(1)})
        l1: L1Cache[int] = L1Cache(10, 4.0, clock, refresh_fraction=0.25, rng=lambda: 0.0)
        store = assemble(l1, [tier])
        assert await store.get_many([b"a"], [decode]) == [1]  # a miss: cached until 104
        tier.data[b"a"] = value(2)  # written behind the cache's back (a lost notification)
        clock.now = 103.5  # in the last quarter of its life
        for _ in range(REFRESH_CHECK_EVERY):
            assert await store.get_many([b"a"], [decode]) == [1]  # served from L1...
        for _ in range(10):
            await asyncio.sleep(0)  # ...while one of them started a refresh
        assert len(tier.gets) == 2
        clock.now = 105.0  # past the first entry's expiry: the refreshed one answers
        assert await store.get_many([b"a"], [decode]) == [2]
        assert len(tier.gets) == 2  # no miss on the request path
        await store.close()

    asyncio.run(go())


def test_local_fill_skips_rows_it_already_wrote() -> None:
    """Rows the upper tier serves again (L1 off here) are written into the local tier
    once; a newer value is written again; after a failed write everything is again."""

    async def go() -> None:
        upper, lower = (
            CountingTier("upper", {b"a": value(1), b"b": value(2)}),
            CountingTier("lower"),
        )
        store = assemble(L1Cache(0, 60.0), [upper, lower])
        for _ in range(3):
            assert await store.get_many([b"a", b"b"], [decode] * 2) == [1, 2]
            await asyncio.sleep(0.01)
        assert lower.put_items == 2 and lower.data == upper.data
        upper.data[b"a"] = value(3)  # newer in the upper tier (its notification was lost)
        assert await store.get_many([b"a", b"b"], [decode] * 2) == [3, 2]
        await asyncio.sleep(0.01)
        assert lower.put_items == 3 and lower.data[b"a"] == value(3)
        lower.down = True
        upper.data[b"a"] = value(4)
        await store.get_many([b"a"], [decode])
        await asyncio.sleep(0.01)
        lower.down = False  # the failed write may have lost what it was given: forgotten
        await store.get_many([b"a", b"b"], [decode] * 2)
        await store.close()
        assert lower.put_items == 5 and lower.data[b"a"] == value(4)

    asyncio.run(go())


class CountingTier(DictTier):
    def __init__(self, name: str, data: dict[bytes, bytes] | None = None) -> None:
        super().__init__(name, data)
        self.put_items = 0

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        result = await super().put_many(items)
        self.put_items += len(items)
        return result


class GatedTier(DictTier):
    """Writes half of each batch, then waits for `gate` before the other half."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = asyncio.Event()
        self.halfway = asyncio.Event()

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        half = len(items) // 2
        first = await super().put_many(items[:half])
        self.halfway.set()
        await self.gate.wait()
        return first + await super().put_many(items[half:])


def test_a_cancelled_writer_leaves_its_write_whole_not_in_part() -> None:
    """A caller cancelled mid-write (client gone, deadline passed) does not stop the write:
    every item reaches every tier and L1 forgets them, before the caller sees its
    cancellation."""

    async def go() -> None:
        upper, lower = GatedTier("upper"), DictTier("lower")
        store = make(upper, lower)
        keys = [b"k%d" % i for i in range(10)]
        assert await store.get_many(keys, [decode] * 10) == [None] * 10  # cached as absent
        caller = asyncio.create_task(store.put_many([(k, value(7)) for k in keys]))
        await upper.halfway.wait()
        caller.cancel()
        await asyncio.sleep(0.01)
        assert not caller.done()  # it waits for the write it started
        upper.gate.set()
        try:
            await caller
            raise AssertionError("the caller was cancelled: it must see CancelledError")
        except asyncio.CancelledError:
            pass
        assert all(upper.data[k] == lower.data[k] == value(7) for k in keys)
        assert await store.get_many(keys, [decode] * 10) == [7] * 10
        await store.close()

    asyncio.run(go())


def test_a_write_that_fails_after_its_caller_was_cancelled_raises_the_cancellation() -> None:
    async def go() -> None:
        upper, lower = GatedTier("upper"), DictTier("lower")
        store = make(upper, lower)
        caller = asyncio.create_task(store.put_many([(b"a", value(1)), (b"b", value(1))]))
        await upper.halfway.wait()
        caller.cancel()
        upper.down = True  # the second half fails
        upper.gate.set()
        try:
            await caller
            raise AssertionError("expected CancelledError")
        except asyncio.CancelledError:
            pass
        assert lower.data == {}  # a write the shared tier refused stops there
        await store.close()

    asyncio.run(go())


class NowTier(DictTier):
    """A DictTier that also answers at once (as RocksDB does for a few keys), or
    declines (`now` False: None, nothing read)."""

    def __init__(self, name: str, data: dict[bytes, bytes] | None = None) -> None:
        super().__init__(name, data)
        self.now = True
        self.now_reads: list[list[bytes]] = []

    def get_many_now(self, keys: Sequence[bytes]) -> list[bytes | None] | None:
        if not self.now:
            return None
        if self.down:
            raise TierUnavailable(self.name, "down")
        self.now_reads.append(list(keys))
        return [self.data.get(k) for k in keys]


def test_tiers_that_answer_at_once_are_read_without_a_fetch() -> None:
    """Misses go to tiers that answer at once in the request itself: no fetch task,
    the rows in L1, and a failed tier's keys UNAVAILABLE (not cached)."""

    async def go() -> None:
        upper, lower = NowTier("upper", {b"a": value(1)}), NowTier("lower", {b"b": value(2)})
        store = make(upper, lower)
        coalescer = store.reads._coalescer
        launched = []
        original = coalescer._launch
        coalescer._launch = lambda missed: launched.append(missed) or original(missed)  # type: ignore[method-assign]
        assert await store.get_many([b"a", b"b", b"c"], [decode] * 3) == [1, 2, None]
        assert launched == [] and upper.gets == lower.gets == []
        assert upper.now_reads == [[b"a", b"b", b"c"]] and lower.now_reads == [[b"b", b"c"]]
        assert await store.get_many([b"a", b"b", b"c"], [decode] * 3) == [1, 2, None]  # L1
        assert len(upper.now_reads) == 1
        upper.down = lower.down = True
        assert await store.get_many([b"d"], [decode]) == [UNAVAILABLE]
        upper.down = lower.down = False
        assert await store.get_many([b"d"], [decode]) == [None]  # UNAVAILABLE was not cached
        assert launched == []
        await store.close()

    asyncio.run(go())


def test_a_tier_that_declines_to_answer_at_once_leaves_the_rest_to_a_fetch() -> None:
    async def go() -> None:
        upper, lower = NowTier("upper", {b"a": value(1)}), NowTier("lower", {b"b": value(2)})
        lower.now = False
        store = make(upper, lower)
        assert await store.get_many([b"a", b"b", b"c"], [decode] * 3) == [1, 2, None]
        assert upper.now_reads == [[b"a", b"b", b"c"]]
        # The fetch asks the tiers again for what the first did not have.
        assert upper.gets == [[b"b", b"c"]] and lower.gets == [[b"b", b"c"]]
        upper.now = False
        assert await store.get_many([b"x"], [decode]) == [None]
        assert upper.gets[-1] == [b"x"]  # nothing at once: all of it a fetch
        await store.close()

    asyncio.run(go())


class CountingDecoder:
    """Decodes a value to (event time, a fresh object), counting calls; says a value is
    unchanged as a view's codec does: same header word (service/core/codec.py)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: bytes) -> tuple[int, object]:
        self.calls += 1
        return (event_time_of(raw), object())

    def unchanged(self, raw: bytes, row: tuple[int, object]) -> bool:
        return event_time_of(raw) == row[0]


def test_a_row_read_again_unchanged_is_not_decoded_again() -> None:
    """Expired rows read again keep their decoded row when the stored value is the one
    it came from; a newer value is decoded; a row read back from a cached absence too."""

    async def go() -> None:
        clock = Clock()
        tier = NowTier("t", {b"a": value(1), b"b": value(1)})
        decoder = CountingDecoder()
        store = assemble(L1Cache(10, 4.0, clock, rng=lambda: 0.0), [tier])
        first = await store.get_many([b"a", b"b", b"c"], [decoder] * 3)
        assert decoder.calls == 2 and first[2] is None
        tier.data[b"b"] = value(2)  # written behind the cache's back
        tier.data[b"c"] = value(3)
        clock.now += 5  # every entry expired
        again = await store.get_many([b"a", b"b", b"c"], [decoder] * 3)
        assert len(tier.now_reads) == 2  # every key was read again from the tier...
        assert again[0] is first[0]  # ...a, unchanged, kept its row without a decode
        assert again[1][0] == 2 and again[2][0] == 3 and decoder.calls == 4
        await store.close()

    asyncio.run(go())


class HeldReads(DictTier):
    """A DictTier whose reads wait for `gate` while `hold` is set."""

    def __init__(self, name: str, data: dict[bytes, bytes]) -> None:
        super().__init__(name, data)
        self.gate = asyncio.Event()
        self.hold = False

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        got = await super().get_many(keys)
        if self.hold:
            await self.gate.wait()
        return got


def test_rows_decoded_without_json_are_rendered_for_a_reader_that_serves_it() -> None:
    """gRPC reads decode rows without their JSON (ViewCodec.bare); an HTTP read of the
    same keys gets them rendered from L1, without a tier read, and L1 keeps the
    rendered rows, except where it holds another row by then: a write (or a newer
    read) during the HTTP read's own fetch is not undone by the rendered old row."""

    async def go() -> None:
        codec = ViewCodec("v", [Feature("x", "float", 0, 0.0), Feature("s", "string", 0, "")])
        raws = {b"k%d" % i: codec.encode(i, {"x": i / 3, "s": "é" * i}) for i in range(40)}
        tier = HeldReads("t", raws)
        store = assemble(L1Cache(100, 60.0), [tier])
        l1 = store.reads.l1
        keys = [*raws, b"absent"]
        bare = (await store.read([(codec.bare, keys)]))[0]
        assert bare[-1] is None and len(tier.gets) == 1
        if native.IMPLEMENTATION == "compiled":  # in Python, bare rows are rendered rows
            assert all(row[JSON] == (raws[k],) for k, row in zip(keys[:-1], bare[:-1], strict=True))
        store.reads.invalidate([b"k0"])  # written: the HTTP read below fetches k0, gated
        tier.hold = True
        reading = asyncio.create_task(store.read([(codec, keys)]))
        while len(tier.gets) < 2:
            await asyncio.sleep(0.001)  # it has its L1 rows (bare) and waits for k0
        newer = codec.decode_row(codec.encode(1000, {"x": 1.0, "s": "new"}))
        l1.put_many([(b"k1", newer)])  # k1 written and read again meanwhile
        store.reads.invalidate([b"k2"])  # k2 written meanwhile, not read again yet
        tier.gate.set()
        full = (await reading)[0]
        assert full[:-1] == [codec.decode_row(raws[k]) for k in keys[:-1]]  # read before
        assert full[-1] is None and tier.gets[1] == [b"k0"]
        assert l1.peek(b"k1") is newer and l1.peek(b"k2") is MISS  # not undone
        again = (await store.read([(codec, keys)]))[0]
        assert again[1] is newer
        assert all(a is b for a, b in zip(again[3:], full[3:], strict=True))  # L1 kept them
        assert tier.gets[2:] == [[b"k2"]]
        for_grpc = (await store.read([(codec.bare, keys)]))[0]
        assert all(a is b for a, b in zip(for_grpc, again, strict=True))  # served as they are
        await store.close()

    asyncio.run(go())
