"""A tier wrapped with its metrics: every call of the store to a tier goes through here.

Metric children are bound once per tier (a label lookup costs more than the inc), as
tallies (service/metrics.py).
Hits and misses are counted by the reader, which alone knows them (readthrough.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import cast

from service import metrics
from service.errors import TierError
from service.store.base import ImmediateReads, Items, Tier


class MeteredTier:
    """`tier` with per-call latency and error metrics; otherwise the same Tier."""

    def __init__(self, tier: Tier) -> None:
        self.tier = tier
        self.name = tier.name
        tally = metrics.tally
        self.hit = tally(metrics.TIER_KEYS.labels(tier.name, "hit"))
        self.miss = tally(metrics.TIER_KEYS.labels(tier.name, "miss"))
        self.error = tally(metrics.TIER_KEYS.labels(tier.name, "error"))
        self._get_s = tally(metrics.TIER_SECONDS.labels(tier.name, "get"))
        self._put_s = tally(metrics.TIER_SECONDS.labels(tier.name, "put"))
        self._now = cast(ImmediateReads, tier) if hasattr(tier, "get_many_now") else None
        self.immediate = self._now is not None
        """Whether the tier may answer reads at once (`get_many_now`)."""

    def __repr__(self) -> str:
        return f"<MeteredTier {self.tier!r}>"

    def failed(self, op: str, exc: TierError) -> None:
        """Count a failed call of `op` (get, put, scan, ...)."""
        metrics.TIER_ERRORS.labels(self.name, op, type(exc).__name__).inc()

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """As Tier.get_many, timed; failures counted and raised."""
        start = time.perf_counter()
        try:
            return await self.tier.get_many(keys)
        except TierError as exc:
            self.failed("get", exc)
            self.error.inc(len(keys))
            raise
        finally:
            self._get_s.observe(time.perf_counter() - start)

    def get_many_now(self, keys: Sequence[bytes]) -> list[bytes | None] | None:
        """As ImmediateReads.get_many_now, timed when it reads; None if the tier has no
        such reads or cannot answer at once. Failures counted and raised."""
        if self._now is None:
            return None
        start = time.perf_counter()
        try:
            values = self._now.get_many_now(keys)
        except TierError as exc:
            self.failed("get", exc)
            self.error.inc(len(keys))
            raise
        if values is not None:
            self._get_s.observe(time.perf_counter() - start)
        return values

    async def put_many(self, items: Items) -> list[bool]:
        """As Tier.put_many, timed; failures counted and raised."""
        start = time.perf_counter()
        try:
            return await self.tier.put_many(items)
        except TierError as exc:
            self.failed("put", exc)
            raise
        finally:
            self._put_s.observe(time.perf_counter() - start)

    def scan_keys(self, prefix: bytes) -> AsyncIterator[list[bytes]]:
        """As Tier.scan_keys."""
        return self.tier.scan_keys(prefix)

    async def sync(self) -> None:
        """As Tier.sync."""
        await self.tier.sync()

    async def ready(self) -> bool:
        """As Tier.ready."""
        return await self.tier.ready()

    async def close(self) -> None:
        """As Tier.close."""
        await self.tier.close()
