"""The core over a real RocksDB tier (in a temp dir) and L1, with an injected clock."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from service.core.codec import JSON
from service.core.registry import load_registry
from service.core.service import FeatureService, Limits
from service.core.status import Status
from service.errors import InvalidArgument, NotFound, TooLarge
from service.settings import DEMO_REGISTRY
from service.store.factory import assemble
from service.store.l1 import L1Cache
from service.store.rocks import RocksTier
from service.store.tiered import TieredStore

NOW = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = NOW

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def core(tmp_path: Path) -> Iterator[FeatureService]:
    tier = RocksTier(tmp_path / "db")
    core = FeatureService(
        load_registry(DEMO_REGISTRY), assemble(L1Cache(1000, 60.0), [tier]),
        Limits(max_ids=10, max_push_rows=5), Clock(),
    )  # fmt: skip
    yield core
    asyncio.run(core.store.close())


def features(row_json: bytes) -> dict:
    return orjson.loads(b"{" + row_json + b"}")


def run(coro):  # one event loop per call keeps the tests independent
    return asyncio.run(coro)


def test_bundle_statuses_order_duplicates_and_defaults(core: FeatureService) -> None:
    run(core.push("room_stats", [
        {"id": 1, "event_time_ms": NOW - 1000, "values": {"viewer_count": 11}},
        {"id": 2, "event_time_ms": NOW - 3_600_001, "values": {"viewer_count": 22}},
    ]))  # fmt: skip
    run(
        core.push(
            "user_room_affinity", [{"id": [7, 2], "event_time_ms": NOW, "values": {"gifts_30d": 3}}]
        )
    )
    result = run(core.get_bundle("live_ranker", 7, [2, 1, 3, 2]))
    (rooms,) = result.rooms
    assert result.room_ids == [2, 1, 3, 2]
    assert rooms.statuses == [Status.STALE, Status.FOUND, Status.DEFAULTED, Status.STALE]
    assert [features(r[JSON])["room_stats.viewer_count"] for r in rooms.rows] == [22, 11, 0, 22]
    assert rooms.ages_ms == [3_600_001, 1000, -1, 3_600_001]
    (pairs,) = result.pairs
    assert pairs.statuses[0] == Status.FOUND and pairs.statuses[1] == Status.DEFAULTED
    assert features(pairs.rows[1][JSON])["user_room_affinity.last_visit_age_s"] == -1  # the default
    (user,) = result.user
    assert user.statuses == [Status.DEFAULTED]


def test_staleness_is_decided_at_read_time(core: FeatureService) -> None:
    run(core.push("room_stats", [{"id": 5, "event_time_ms": NOW, "values": {"viewer_count": 1}}]))
    assert run(core.get_bundle("live_ranker", 1, [5])).rooms[0].statuses == [Status.FOUND]
    core._clock_ms.ms += 3_600_001  # type: ignore[attr-defined]
    # Still in L1 (TTL 60 s of its own clock), but now older than max_age_s: STALE.
    assert run(core.get_bundle("live_ranker", 1, [5])).rooms[0].statuses == [Status.STALE]


def test_push_newest_wins_and_partial_rows_keep_stored_values(core: FeatureService) -> None:
    row = {"id": 9, "event_time_ms": NOW, "values": {"viewer_count": 5, "category": "music"}}
    assert run(core.push("room_stats", [row])).written == 1
    older = {"id": 9, "event_time_ms": NOW - 1, "values": {"viewer_count": 1}}
    result = run(core.push("room_stats", [older, row]))
    assert (result.written, result.ignored) == (0, 2)
    newer = {"id": 9, "event_time_ms": NOW + 1, "values": {"viewer_count": 6}}
    assert run(core.push("room_stats", [newer])).written == 1
    _, rows = run(core.get_features("room_stats", [9]))
    got = features(rows.rows[0][JSON])
    assert got["room_stats.viewer_count"] == 6
    assert got["room_stats.category"] == "music"


def test_rejected_push_writes_nothing(core: FeatureService) -> None:
    good = {"id": 1, "event_time_ms": NOW, "values": {"viewer_count": 5}}
    bad = {"id": 2, "event_time_ms": NOW, "values": {"viewer_count": "many"}}
    with pytest.raises(InvalidArgument) as info:
        run(core.push("room_stats", [good, bad]))
    assert info.value.field == "rows[1].values.viewer_count"
    _, rows = run(core.get_features("room_stats", [1]))
    assert rows.statuses == [Status.DEFAULTED]


@pytest.mark.parametrize(
    ("call", "error", "field"),
    [
        (lambda c: c.get_bundle("nope", 1, [1]), NotFound, "bundle"),
        (lambda c: c.get_bundle("live_ranker", "1", [1]), InvalidArgument, "user_id"),
        (lambda c: c.get_bundle("live_ranker", 1, []), InvalidArgument, "room_ids"),
        (lambda c: c.get_bundle("live_ranker", 1, [1, -2]), InvalidArgument, "room_ids[1]"),
        (lambda c: c.get_bundle("live_ranker", 1, list(range(11))), TooLarge, "room_ids"),
        (lambda c: c.get_features("nope", [1]), NotFound, "view"),
        (lambda c: c.get_features("user_room_affinity", [[1]]), InvalidArgument, "ids[0]"),
        (lambda c: c.push("room_stats", [{"id": 1, "values": {"x": 1}}]), InvalidArgument,
         "rows[0].event_time_ms"),
        (lambda c: c.push("room_stats", [{"id": 1, "event_time_ms": 1, "values": {"x": 1}}]),
         NotFound, "rows[0].values.x"),
        (lambda c: c.push("room_stats", [{}] * 6), TooLarge, "rows"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(core: FeatureService, call, error, field) -> None:
    with pytest.raises(error) as info:
        run(call(core))
    assert info.value.field == field


def test_pairs_the_presence_filter_never_saw_are_not_looked_up(tmp_path: Path) -> None:
    async def go() -> None:
        tier = RocksTier(tmp_path / "p")
        registry = load_registry(DEMO_REGISTRY)
        pairs = registry.views["user_room_affinity"]
        # no L1: every read counts
        store: TieredStore = assemble(L1Cache(0, 1.0), [tier], presence_prefixes=[pairs.key_prefix])
        core = FeatureService(registry, store, clock_ms=Clock())
        await core.push(
            "user_room_affinity", [{"id": [7, 2], "event_time_ms": NOW, "values": {"gifts_30d": 3}}]
        )
        store.start()
        while not store.presence.trusted:  # type: ignore[union-attr]
            await asyncio.sleep(0.01)
        asked: list[bytes] = []
        real_get, real_now = tier.get_many, tier.get_many_now

        async def spy(keys):  # type: ignore[no-untyped-def]
            asked.extend(keys)
            return await real_get(keys)

        def spy_now(keys):  # type: ignore[no-untyped-def]
            asked.extend(keys)
            return real_now(keys)

        tier.get_many = spy  # type: ignore[method-assign]
        tier.get_many_now = spy_now  # type: ignore[method-assign]
        result = await core.get_bundle("live_ranker", 7, [1, 2, 3])
        assert result.pairs[0].statuses == [Status.DEFAULTED, Status.FOUND, Status.DEFAULTED]
        assert [k for k in asked if k.startswith(pairs.key_prefix)] == [pairs.key(7, 2)]
        await store.close()

    asyncio.run(go())
