import asyncio
from collections.abc import AsyncIterator

from service.store.factory import assemble
from service.store.l1 import L1Cache
from service.store.presence import PresenceFilter
from service.store.replica import FeedSink
from service.store.tiered import TieredStore
from tests.store.test_tiered import DictTier, value


def test_no_false_negatives_and_few_false_positives() -> None:
    f = PresenceFilter([b"pair:"], capacity=10_000)
    stored = [b"pair:%d:%d" % (i, i * 3) for i in range(10_000)]
    f.add(stored)
    f.add([b"room:1"])  # not watched: ignored
    assert f.maybe_stored(stored) == list(range(len(stored)))
    absent = [b"pair:%d:%d" % (i, i * 3 + 1) for i in range(20_000)]
    assert len(f.maybe_stored(absent)) / len(absent) < 0.02
    assert f.count == 10_000


class ScanTier(DictTier):
    async def scan_keys(self, prefix: bytes) -> AsyncIterator[list[bytes]]:
        yield [k for k in self.data if k.startswith(prefix)]


def test_store_builds_the_filter_and_keeps_it_current() -> None:
    async def go() -> None:
        tier = ScanTier("t", {b"pair:1:2": value(1), b"room:5": value(1)})
        store: TieredStore[int] = assemble(
            L1Cache(100, 60.0), [tier], presence_prefixes=[b"pair:"], presence_capacity=1000
        )
        presence = store.presence
        sink = FeedSink(store.reads, presence)
        assert presence is not None and not presence.trusted
        store.start()
        for _ in range(100):
            if presence.trusted:
                break
            await asyncio.sleep(0.01)
        assert presence.trusted
        assert presence.maybe_stored([b"pair:1:2", b"pair:9:9"]) == [0]
        await store.put_many([(b"pair:9:9", value(2))])  # a write is recorded at once
        sink.absorb([], [b"pair:8:8"])  # and so is another replica's
        assert presence.maybe_stored([b"pair:9:9", b"pair:8:8"]) == [0, 1]
        sink.lost()  # notifications may be lost from now on
        assert not presence.trusted
        await store.close()

    asyncio.run(go())
