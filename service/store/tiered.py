"""The tiered store: the one place that owns fall-through, fill and failure policy.

Read: L1, then each durable tier in order (Redis, then RocksDB) for the keys
the tiers above did not have; what a tier finds is decoded once, put in L1,
and offered to the other durable tiers in the background (bounded queues):
Redis is filled from RocksDB, and the local RocksDB keeps what Redis served
as its last-good copy. A tier
that fails is skipped; a key no tier could answer comes back UNAVAILABLE.
Write: every durable tier, newest event wins in each; L1 forgets written keys.
Per-tier metrics are recorded here, around each tier call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar

from service import metrics
from service.core.codec import CorruptValue
from service.errors import TierError, TierTimeout
from service.store.base import Tier
from service.store.l1 import MISS, L1Cache
from service.store.notify import ChangeFeed
from service.store.presence import PresenceFilter
from service.store.writebehind import WriteBehind

V = TypeVar("V")
log = logging.getLogger(__name__)


class _Unavailable:
    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Final[Any] = _Unavailable()
PRESENCE_RETRY_S = 2.0  # after a failed scan of a tier


class _TierMetrics:
    """Pre-bound metric children of one tier (label lookups cost more than the inc)."""

    def __init__(self, name: str) -> None:
        self.hit = metrics.TIER_KEYS.labels(name, "hit")
        self.miss = metrics.TIER_KEYS.labels(name, "miss")
        self.error = metrics.TIER_KEYS.labels(name, "error")
        self.get_s = metrics.TIER_SECONDS.labels(name, "get")
        self.put_s = metrics.TIER_SECONDS.labels(name, "put")
        self.name = name


class TieredStore(Generic[V]):
    """L1 over an ordered list of durable tiers. `V` is the decoded row type."""

    def __init__(self, l1: L1Cache[V], tiers: Sequence[Tier]) -> None:
        self.l1 = l1
        self.tiers = tuple(tiers)
        self._l1m = _TierMetrics("l1")
        self._m = [_TierMetrics(t.name) for t in self.tiers]
        self.feed: ChangeFeed | None = None  # set when replicas share Redis
        self.presence: PresenceFilter | None = None  # set by watch_presence
        self._tasks: set[asyncio.Task[None]] = set()
        self._behind = [
            WriteBehind(t.name, functools.partial(self._put, t, m))
            for t, m in zip(self.tiers, self._m, strict=True)
        ]
        self._inflight: dict[bytes, asyncio.Future[Any]] = {}
        metrics.L1_ROWS.set_function(lambda: len(self.l1))

    def __repr__(self) -> str:
        names = " > ".join(["l1", *(t.name for t in self.tiers)])
        return f"<TieredStore {names}, {self._behind}>"

    async def get_many(
        self,
        keys: Sequence[bytes],
        decoders: Sequence[Callable[[bytes], V]],
        timeout_s: float | None = None,
    ) -> list[Any]:
        """Rows aligned with `keys`: a decoded row, None (not stored) or UNAVAILABLE.

        `decoders[i]` turns the stored bytes of `keys[i]` into a row. `timeout_s`
        bounds every tier read: what has not arrived by then is UNAVAILABLE.
        Identical misses of concurrent calls are fetched once.
        """
        out = self.l1.get_many(keys)
        missed = {k: d for k, d, v in zip(keys, decoders, out, strict=True) if v is MISS}
        self._l1m.hit.inc(len(keys) - len(missed))
        if not missed:
            return out
        self._l1m.miss.inc(len(missed))
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        found = await self._coalesced(missed, deadline)
        evicted = self.l1.put_many((k, v) for k, v in found.items() if v is not UNAVAILABLE)
        if evicted:
            metrics.L1_EVICTIONS.inc(evicted)
        return [found[k] if v is MISS else v for k, v in zip(keys, out, strict=True)]

    async def _coalesced(
        self, missed: dict[bytes, Callable[[bytes], V]], deadline: float | None
    ) -> dict[bytes, Any]:
        inflight = self._inflight
        waits = {k: inflight[k] for k in missed if k in inflight}
        mine = {k: d for k, d in missed.items() if k not in waits}
        loop = asyncio.get_running_loop()
        for key in mine:
            inflight[key] = loop.create_future()
        found: dict[bytes, Any] = {}
        try:
            if mine:
                found = await self._read_through(mine, deadline)
        finally:
            for key in mine:
                future = inflight.pop(key)
                future.set_result(found.get(key, UNAVAILABLE))
        if waits:
            timeout = None if deadline is None else max(deadline - loop.time(), 0.0)
            await asyncio.wait(waits.values(), timeout=timeout)
            for key, future in waits.items():
                found[key] = future.result() if future.done() else UNAVAILABLE
        return found

    async def _read_through(
        self, missed: dict[bytes, Callable[[bytes], V]], deadline: float | None
    ) -> dict[bytes, Any]:
        pending = list(missed)
        found: dict[bytes, Any] = {}
        failed = False
        for depth, (tier, m) in enumerate(zip(self.tiers, self._m, strict=True)):
            if not pending:
                break
            values = await self._get(tier, m, pending, deadline)
            if values is None:
                failed = True
                continue
            fill: list[tuple[bytes, bytes]] = []
            still: list[bytes] = []
            for key, raw in zip(pending, values, strict=True):
                if raw is None:
                    still.append(key)
                    continue
                try:
                    found[key] = missed[key](raw)
                except CorruptValue as exc:
                    log.warning("corrupt value in %s: %s", tier.name, exc)
                    m.error.inc()
                    still.append(key)
                    continue
                fill.append((key, raw))
            m.hit.inc(len(fill))
            m.miss.inc(len(still))
            if fill and len(self.tiers) > 1:
                self._fill(depth, fill)
            pending = still
        for key in pending:
            found[key] = UNAVAILABLE if failed else None
        return found

    async def _get(
        self, tier: Tier, m: _TierMetrics, keys: list[bytes], deadline: float | None
    ) -> list[bytes | None] | None:
        start = time.perf_counter()
        try:
            if deadline is None:
                return await tier.get_many(keys)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TierTimeout(tier.name, "no time left before the deadline")
            try:
                return await asyncio.wait_for(tier.get_many(keys), remaining)
            except TimeoutError:
                raise TierTimeout(
                    tier.name, f"no answer within {remaining * 1000:.1f} ms"
                ) from None
        except TierError as exc:
            metrics.TIER_ERRORS.labels(tier.name, "get", type(exc).__name__).inc()
            m.error.inc(len(keys))
            log.warning("tier %s failed a get of %d keys: %s", tier.name, len(keys), exc)
            return None
        finally:
            m.get_s.observe(time.perf_counter() - start)

    def _fill(self, depth: int, items: list[tuple[bytes, bytes]]) -> None:
        """Offer what tier `depth` returned to every other durable tier, in the background."""
        for i, behind in enumerate(self._behind):
            if i != depth:
                behind.offer(items)

    def absorb(self, items: Sequence[tuple[bytes, bytes]], keys: Sequence[bytes]) -> None:
        """Another replica wrote: forget `keys` in L1, keep `items` in the local (last) tier."""
        self.l1.invalidate(keys)
        if self.presence is not None:
            self.presence.add(keys)
        if items and len(self.tiers) > 1:
            self._behind[-1].offer(items)

    async def _put(
        self, tier: Tier, m: _TierMetrics, items: Sequence[tuple[bytes, bytes]]
    ) -> list[bool]:
        start = time.perf_counter()
        try:
            return await tier.put_many(items)
        except TierError as exc:
            metrics.TIER_ERRORS.labels(tier.name, "put", type(exc).__name__).inc()
            raise
        finally:
            m.put_s.observe(time.perf_counter() - start)

    async def put_many(
        self, items: Sequence[tuple[bytes, bytes]], *, notify_values: bool = True
    ) -> list[bool]:
        """Write to every durable tier (newest event wins in each); forget the keys in L1.

        Returns, aligned, whether each item was newer than what some tier held.
        Other replicas are notified of the written keys, with their values (for their
        RocksDB) unless `notify_values` is False (bulk loads). Raises TierError if a tier fails.
        """
        try:  # every tier at once: RocksDB on its threads, Redis on the socket
            results = await asyncio.gather(
                *(self._put(t, m, items) for t, m in zip(self.tiers, self._m, strict=True)),
                return_exceptions=True,
            )
        finally:
            self.l1.invalidate(k for k, _ in items)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        written = [any(flags) for flags in zip(*results, strict=True)]  # type: ignore[call-overload]
        if self.presence is not None:
            self.presence.add(k for (k, _), w in zip(items, written, strict=True) if w)
        if self.feed is not None:
            changed = [item for item, w in zip(items, written, strict=True) if w]
            await self._publish(changed, notify_values)
        return written

    def watch_presence(self, prefixes: Sequence[bytes], capacity: int = 2_000_000) -> None:
        """Keep a presence filter of the keys under `prefixes` (see presence.py)."""
        self.presence = PresenceFilter(prefixes, capacity)

    def start(self) -> None:
        """Start a serving process's background work: the change feed (whose
        subscription triggers `on_feed`), or else the presence filter's build."""
        if self.feed is not None:
            self.feed.start()
        else:
            self._rebuild_presence()

    def on_feed(self, subscribed: bool) -> None:
        """The change feed (re)subscribed, or lost its subscription. What was published
        meanwhile is lost: on (re)subscription forget L1 and rebuild the presence filter."""
        if subscribed:
            self.l1.clear()
            self._rebuild_presence()
        elif self.presence is not None:
            self.presence.trusted = False

    def _rebuild_presence(self) -> None:
        if self.presence is None:
            return
        self.presence.trusted = False
        self.presence.generation += 1
        task = asyncio.get_running_loop().create_task(self._build_presence(self.presence))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _build_presence(self, presence: PresenceFilter) -> None:
        generation = presence.generation
        started = time.perf_counter()
        try:
            for tier in self.tiers:
                for prefix in presence.prefixes:
                    async for keys in tier.scan_keys(prefix):
                        presence.add(keys)
        except TierError as exc:
            log.warning("presence filter not rebuilt (%s); every pair is looked up "
                        "until a retry in %s s succeeds", exc, PRESENCE_RETRY_S)  # fmt: skip
            await asyncio.sleep(PRESENCE_RETRY_S)
            if presence.generation == generation:
                self._rebuild_presence()
            return
        connected = self.feed is None or self.feed.connected.is_set()
        if presence.generation == generation and connected:
            presence.trusted = True
            log.info("presence filter built: %d keys in %.1f s", presence.count,
                     time.perf_counter() - started)  # fmt: skip

    async def _publish(self, items: list[tuple[bytes, bytes]], with_values: bool) -> None:
        assert self.feed is not None
        try:
            await self.feed.publish(items, with_values)
        except TierError as exc:
            # The write is durable; other replicas' L1 TTL bounds how long they miss it.
            metrics.TIER_ERRORS.labels("change_feed", "publish", type(exc).__name__).inc()
            log.warning("could not publish %d changed keys: %s", len(items), exc)

    async def get_stored(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Stored values from the durable tiers only (bypassing L1), aligned with `keys`.

        Raises TierError if a key could not be answered by any tier.
        """
        found: dict[bytes, bytes | None] = {}
        pending = list(dict.fromkeys(keys))
        error: TierError | None = None
        for tier in self.tiers:
            if not pending:
                break
            try:
                values = await tier.get_many(pending)
            except TierError as exc:
                metrics.TIER_ERRORS.labels(tier.name, "get", type(exc).__name__).inc()
                error = exc
                continue
            found.update((k, v) for k, v in zip(pending, values, strict=True) if v is not None)
            pending = [k for k, v in zip(pending, values, strict=True) if v is None]
        if pending and error is not None:
            raise error
        return [found.get(k) for k in keys]

    async def inspect(self, key: bytes) -> dict[str, Any]:
        """What each tier holds for `key`: L1's row (or None), each tier's bytes or error."""
        cached = self.l1.get_many([key])[0]
        out: dict[str, Any] = {"l1": None if cached is MISS else cached}
        for tier in self.tiers:
            try:
                out[tier.name] = (await tier.get_many([key]))[0]
            except TierError as exc:
                out[tier.name] = exc
        return out

    async def sync(self) -> None:
        """Make every tier's writes so far durable."""
        for tier in self.tiers:
            await tier.sync()

    async def ready(self) -> bool:
        """Whether at least one durable tier can answer."""
        for tier in self.tiers:
            if await tier.ready():
                return True
        return False

    async def close(self) -> None:
        """Wait for background fills, then close every tier."""
        for task in list(self._tasks):
            task.cancel()
        if self.feed is not None:
            await self.feed.close()
        for behind in self._behind:
            await behind.drain()
        for tier in self.tiers:
            await tier.close()
