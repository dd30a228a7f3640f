"""FeatureService.write_checked: rows applied in order, as successive pushes would be,
over a real RocksDB tier; the oracle is the same rows pushed one at a time."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from service.core.registry import load_registry
from service.core.service import FeatureService
from service.settings import DEMO_REGISTRY
from service.store.factory import assemble
from service.store.l1 import L1Cache
from service.store.rocks import RocksTier

REGISTRY = load_registry(DEMO_REGISTRY)
PLAN = REGISTRY.views["room_stats"]
NAMES = ["viewer_count", "likes_5m", "gift_count_1m", "category"]


def open_core(path: Path) -> FeatureService:
    return FeatureService(REGISTRY, assemble(L1Cache(0, 1.0), [RocksTier(path)]))


def random_rows(seed: int, n: int) -> list[tuple[int, int, dict[str, Any]]]:
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        names = rnd.sample(NAMES, rnd.randint(1, len(NAMES)))
        values = {k: (f"c{rnd.randint(0, 9)}" if k == "category" else rnd.randint(0, 99)) for k in names}  # fmt: skip
        rows.append((rnd.randint(1, 5), rnd.randint(1, 30), values))
    return rows


async def stored(core: FeatureService, ids: list[int]) -> list[Any]:
    raw = await core.store.get_stored([PLAN.key(i) for i in ids])
    return [None if r is None else PLAN.codec.decode_values(r) for r in raw]


def test_batches_equal_one_push_per_row(tmp_path: Path) -> None:
    async def main() -> None:
        one_by_one, batched = open_core(tmp_path / "a"), open_core(tmp_path / "b")
        try:
            for seed in range(5):  # several batches over the same entities
                rows = random_rows(seed, 60)
                pushed = 0
                for room, t, values in rows:
                    got = await one_by_one.push("room_stats", [{"id": room, "event_time_ms": t, "values": values}])  # fmt: skip
                    pushed += got.written
                checked = [(PLAN.key(room), t, values) for room, t, values in rows]
                result = await batched.write_checked(PLAN, checked, "kafka")
                assert result.written + result.ignored == len(rows)
                assert result.written == pushed
            ids = [1, 2, 3, 4, 5]
            assert await stored(batched, ids) == await stored(one_by_one, ids)
        finally:
            await one_by_one.store.close()
            await batched.store.close()

    asyncio.run(main())


def test_an_older_partial_row_first_in_a_batch_is_ignored(tmp_path: Path) -> None:
    """Stored t=5; the batch brings t=3 {likes} then t=7 {viewers}: likes of t=3 must not land."""

    async def main() -> None:
        core = open_core(tmp_path / "db")
        try:
            await core.push("room_stats", [{"id": 1, "event_time_ms": 5, "values": {"likes_5m": 50, "viewer_count": 5}}])  # fmt: skip
            got = await core.write_checked(PLAN, [
                (PLAN.key(1), 3, {"likes_5m": 30}), (PLAN.key(1), 7, {"viewer_count": 7}),
            ])  # fmt: skip
            assert (got.written, got.ignored) == (1, 1)
            ((t, values),) = await stored(core, [1])
            assert (t, values["likes_5m"], values["viewer_count"]) == (7, 50, 7)
        finally:
            await core.store.close()

    asyncio.run(main())
