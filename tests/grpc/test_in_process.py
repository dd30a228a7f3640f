"""The real grpc.aio server over a core on fake tiers: deadlines, tier failures, all types.

A tier that answers late shows the deadline contract: rows not read in time
come back UNAVAILABLE (defaults), and the call still answers within its deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import metrics
from service.client import AsyncLivefeatClient
from service.core.codec import Row, event_time_of
from service.core.registry import Registry, load_registry, parse_registry
from service.core.service import FeatureService
from service.errors import TierUnavailable
from service.grpc import GrpcServer
from service.grpc.edge import core_timeout
from service.settings import DEMO_REGISTRY
from service.store.factory import assemble
from service.store.l1 import L1Cache
from service.store.tiered import TieredStore

FOUND, UNAVAILABLE = 1, 4


class FakeTier:
    """A dict as a durable tier (newest event wins) that answers reads after `delay_s`."""

    name = "fake"

    def __init__(self, delay_s: float = 0.0, fail_writes: bool = False) -> None:
        self.data: dict[bytes, bytes] = {}
        self.delay_s = delay_s
        self.fail_writes = fail_writes
        self.up = True

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        await asyncio.sleep(self.delay_s)
        return [self.data.get(k) for k in keys]

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        if self.fail_writes:
            raise TierUnavailable(self.name, "down for the test")
        out = []
        for key, value in items:
            old = self.data.get(key)
            out.append(old is None or event_time_of(value) > event_time_of(old))
            if out[-1]:
                self.data[key] = value
        return out

    async def ready(self) -> bool:
        return self.up

    async def close(self) -> None:
        pass


@asynccontextmanager
async def serving(tier: FakeTier, registry: Registry) -> AsyncIterator[AsyncLivefeatClient]:
    """A real grpc.aio server on a free port over a core on `tier`, and a client to it."""
    store: TieredStore[Row] = assemble(L1Cache(1000, 5.0), [tier])
    server = GrpcServer(FeatureService(registry, store), "127.0.0.1", 0, 1 << 20, 0.05)
    await server.start()
    client = AsyncLivefeatClient(f"127.0.0.1:{server.port}")
    try:
        yield client
    finally:
        await client.close()
        await server.stop(0)
        await store.close()


def test_late_tier_gives_unavailable_rows_within_the_deadline() -> None:
    async def main() -> None:
        async with serving(FakeTier(delay_s=5.0), load_registry(DEMO_REGISTRY)) as client:
            await client.get_bundle(1, [1], timeout=0.2)  # connect first
            # An answer at all is the check: past its deadline the call fails with
            # DEADLINE_EXCEEDED (the tier takes 5 s), so no clock is read here.
            got = await client.get_bundle(7, [1, 2, 3], timeout=0.3)
        for views in (got.user, got.rooms, got.pairs):
            for view in views.values():
                assert (view.status == UNAVAILABLE).all() and (view.age_ms == -1).all()
        defaults = got.rooms["room_stats"].column("viewer_count")
        assert defaults.tolist() == [0.0, 0.0, 0.0]

    asyncio.run(main())


def test_tier_failure_on_push_is_unavailable_and_counted() -> None:
    def count() -> float:
        labels = {"transport": "grpc", "route": "PushFeatures", "code": "UNAVAILABLE"}
        metrics.flush()
        return metrics.REGISTRY.get_sample_value("livefeat_requests_total", labels) or 0.0

    async def main() -> None:
        before = count()
        async with serving(FakeTier(fail_writes=True), load_registry(DEMO_REGISTRY)) as client:
            row = {"id": 5, "event_time_ms": 1, "values": {"viewer_count": 1}}
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.push("room_stats", [row])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "fake" in (err.value.details() or "")
        assert count() == before + 1

    asyncio.run(main())


TYPES_REGISTRY = """
entities:
  user: {key: user_id}
  room: {key: room_id}
views:
  every_type:
    entity: room
    max_age_s: 60
    storage_ttl_s: 600
    features:
      n: {type: int64, default: 3}
      live: {type: bool, default: false}
      name: {type: string, default: "none"}
      d: {type: double, default: 0.5}
      emb: {type: float_vector, dim: 2}
      f: {type: float, default: 0.25}
      tags: {type: string, default: ""}
bundles:
  b:
    room: [every_type]
"""


def test_every_type_in_the_block_columns() -> None:
    async def main() -> None:
        async with serving(FakeTier(), parse_registry(TYPES_REGISTRY)) as client:
            values = {"n": 9, "live": True, "name": "x", "d": 1.5, "emb": [1.0, 2.0], "f": 0.75,
                      "tags": "a"}  # fmt: skip
            now = time.time_ns() // 1_000_000
            assert (await client.push("every_type", [{"id": 1, "event_time_ms": now,
                                                      "values": values}])).written == 1  # fmt: skip
            return await client.get_features("every_type", [1, 2], timeout=5)

    view = asyncio.run(main())
    assert view.numeric_names == ("n", "live", "d", "f")
    assert view.numeric.tolist() == [[9.0, 1.0, 1.5, 0.75], [3.0, 0.0, 0.5, 0.25]]
    assert view.vectors["emb"].tolist() == [[1.0, 2.0], [0.0, 0.0]]
    assert view.strings == {"name": ["x", "none"], "tags": ["a", ""]}
    assert view.status.tolist() == [FOUND, 3]
    assert view.numeric.dtype == np.float32 and view.vectors["emb"].dtype == np.float32


def test_health_follows_the_store() -> None:
    async def status(client: AsyncLivefeatClient) -> int:
        stub = health_pb2_grpc.HealthStub(client.channel)
        check = health_pb2.HealthCheckRequest(service="livefeat.v1.FeatureService")
        return int((await stub.Check(check, timeout=5)).status)

    async def main() -> list[int]:
        tier = FakeTier()
        seen = []
        async with serving(tier, load_registry(DEMO_REGISTRY)) as client:
            seen.append(await status(client))
            tier.up = False
            await asyncio.sleep(0.3)
            seen.append(await status(client))
            tier.up = True
            await asyncio.sleep(0.3)
            seen.append(await status(client))
        return seen

    serving_, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert asyncio.run(main()) == [serving_, not_serving, serving_]


class FakeContext:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [(None, None), (1.0, 0.9), (0.005, 0.004), (0.0005, 0.0), (-1.0, 0.0)],
)
def test_core_timeout_keeps_a_margin(remaining: float | None, expected: float | None) -> None:
    got = core_timeout(FakeContext(remaining))
    assert got == pytest.approx(expected)
