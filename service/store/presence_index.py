"""The store's presence policy: when the presence filter (presence.py) may answer.

The filter is trusted only once built from every durable tier, and only while
change notifications flow, since keys other replicas write reach it through them.
`distrust` (the subscription was lost) bumps the generation, so that a build under
way when it happened is not trusted when it ends; `rebuild` (subscribed again) starts
a new one. Without a change feed, one build at start suffices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

from service.errors import TierError
from service.store.metered import MeteredTier
from service.store.presence import PresenceFilter

log = logging.getLogger(__name__)


class PresenceIndex:
    """A PresenceFilter over `tiers`' keys under the filter's prefixes, and when to trust it."""

    def __init__(
        self, bloom: PresenceFilter, tiers: Sequence[MeteredTier], retry_s: float = 2.0
    ) -> None:
        self.bloom = bloom
        self._tiers = tuple(tiers)
        self._retry_s = retry_s
        self.trusted = False
        self._generation = 0
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<PresenceIndex {self.bloom!r}, generation {self._generation}>"

    def maybe_stored(self, keys: Sequence[bytes]) -> list[int] | None:
        """The indexes of the keys that may be stored (the others certainly are not);
        None if the filter cannot tell (not trusted, or `keys` are not under its
        prefixes: judged by the first key)."""
        if not self.trusted or not keys or not self.bloom.watches(keys[0]):
            return None
        return self.bloom.maybe_stored(keys)

    def add(self, keys: Iterable[bytes]) -> None:
        """Keys that are now stored (written here, or by another replica)."""
        self.bloom.add(keys)

    def distrust(self) -> None:
        """Notifications may be lost from now on: stop answering until rebuilt."""
        self.trusted = False
        self._generation += 1

    def rebuild(self) -> None:
        """Scan every tier again in the background; trust the filter when done."""
        self.distrust()
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._build(self._generation))

    async def _build(self, generation: int) -> None:
        started = time.perf_counter()
        try:
            for tier in self._tiers:
                for prefix in self.bloom.prefixes:
                    async for keys in tier.scan_keys(prefix):
                        self.bloom.add(keys)
        except TierError as exc:
            log.warning("presence filter not rebuilt (%s); every pair is looked up "
                        "until a retry in %s s succeeds", exc, self._retry_s)  # fmt: skip
            await asyncio.sleep(self._retry_s)
            if self._generation == generation:
                self.rebuild()
            return
        if self._generation == generation:
            self.trusted = True
            log.info("presence filter built: %d keys in %.1f s", self.bloom.count,
                     time.perf_counter() - started)  # fmt: skip

    async def close(self) -> None:
        """Stop a build under way."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
