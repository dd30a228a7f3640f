"""Reads: L1, then each durable tier in order for what the tiers above did not have.

What a tier finds is decoded once, put in L1 (unless written meanwhile: coalesce.py),
and offered in the background to the other durable tiers (`fills`: Redis is filled
from RocksDB; the local RocksDB keeps what Redis served as its last good copy).
A tier that fails or runs out of time is skipped; a key no tier could answer is
UNAVAILABLE. A value a view's codec cannot decode (CorruptValue) counts as an error
of that tier and the key falls through to the next one.

A decoder may leave a row's JSON out (ViewCodec.bare, for gRPC): a reader whose
decoders render (`render`: the view's codec, for HTTP) gets such rows rendered, and
L1 keeps the rendered row in their place (`_render`).

Pair views ask the presence index first (presence_index.py): pairs it has never
seen are answered "not stored" without a lookup, and without filling L1 with them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Generic, TypeVar

from service import metrics, native
from service.errors import TierError
from service.store.base import UNAVAILABLE
from service.store.coalesce import Coalescer, Flight
from service.store.l1 import MISS, L1Cache
from service.store.metered import MeteredTier
from service.store.presence_index import PresenceIndex
from service.store.writebehind import WriteBehind
from service.stored import CorruptValue

V = TypeVar("V")
Decoder = Callable[[bytes], V]
log = logging.getLogger(__name__)
# One read in this many also asks L1 which of its rows are near expiry, and fetches
# those in the background (l1.py): hot rows, read by most requests, are always caught.
REFRESH_CHECK_EVERY = 8
# A tier's answer of this many keys or more is decoded per view in batches (`_take`;
# the codec decides from how many a batch pays: service/core/codec.py).
BATCH_DECODE_KEYS = 32


def _decode_one(decode: Decoder[V], raw: bytes) -> Any:
    """`decode(raw)`, or the CorruptValue it raised."""
    try:
        return decode(raw)
    except CorruptValue as exc:
        return exc


def _decode_all(decode: Decoder[V], raws: list[bytes], batch: bool) -> list[Any]:
    """Each value decoded (or its CorruptValue), in one batch if asked and `decode` can."""
    many = getattr(decode, "decode_rows", None) if batch else None
    if many is None:
        return [_decode_one(decode, raw) for raw in raws]
    rows = many(raws)
    return rows if type(rows) is list else list(rows)


class ReadThrough(Generic[V]):
    """L1 over `tiers` (read order). `fills[i]` writes into `tiers[i]` in the background."""

    def __init__(
        self,
        l1: L1Cache[V],
        tiers: Sequence[MeteredTier],
        fills: Sequence[WriteBehind] = (),
        presence: PresenceIndex | None = None,
    ) -> None:
        self.l1 = l1
        self.tiers = tuple(tiers)
        self._fills = tuple(fills)
        self.presence = presence
        self._immediate = bool(self.tiers) and all(t.immediate for t in self.tiers)
        self._coalescer: Coalescer[Decoder[V]] = Coalescer(self._fetch)
        self._l1_hit = metrics.tally(metrics.TIER_KEYS.labels("l1", "hit"))
        self._l1_miss = metrics.tally(metrics.TIER_KEYS.labels("l1", "miss"))
        self._calls = 0
        self._bare = False  # whether a decoder that leaves the JSON out has decoded rows

    def __repr__(self) -> str:
        return f"<ReadThrough {self.l1!r} > {' > '.join(t.name for t in self.tiers)}>"

    async def read(
        self, groups: Sequence[tuple[Decoder[V], Sequence[bytes]]], timeout_s: float | None = None
    ) -> list[list[Any]]:
        """Per group of (decoder, keys), rows aligned with its keys: a decoded row, None
        (not stored) or UNAVAILABLE. `timeout_s` bounds the wait for tiers below L1."""
        picks: list[list[int] | None] = []  # per group: the keys asked (None: all)
        keys: list[bytes] = []
        decoders: list[Decoder[V]] = []
        presence = self.presence
        renders = False
        for decode, group_keys in groups:
            renders = renders or hasattr(decode, "render")
            pick = presence.maybe_stored(group_keys) if presence is not None else None
            if pick is not None:
                group_keys = [group_keys[i] for i in pick]
            picks.append(pick)
            keys += group_keys
            decoders += [decode] * len(group_keys)
        got = await self.get_many(keys, decoders, timeout_s) if keys else []
        if self._bare and renders:
            self._render(keys, decoders, got)
        out = []
        start = 0
        for (_, group_keys), pick in zip(groups, picks, strict=True):
            if pick is None:
                end = start + len(group_keys)
                out.append(got[start:end])
            else:
                end = start + len(pick)
                rows: list[Any] = [None] * len(group_keys)  # the rest: certainly not stored
                for i, row in zip(pick, got[start:end], strict=True):
                    rows[i] = row
                out.append(rows)
            start = end
        return out

    async def get_many(
        self, keys: Sequence[bytes], decoders: Sequence[Decoder[V]], timeout_s: float | None = None
    ) -> list[Any]:
        """Rows aligned with `keys` (see `read`); `decoders[i]` decodes `keys[i]`."""
        keys = keys if type(keys) is list else list(keys)
        out = self.l1.get_many(keys)
        self._calls += 1
        if not self._calls % REFRESH_CHECK_EVERY:
            self._refresh_ahead(keys, decoders)
        at = native.misses(out, MISS)
        self._l1_hit.inc(len(keys) - len(at))
        if not at:
            return out
        self._l1_miss.inc(len(at))
        decoders = decoders if type(decoders) is list else list(decoders)
        missed = native.pick(keys, decoders, at)  # {keys[i]: decoders[i] for i in at}
        found: dict[bytes, Any] = {}
        if self._immediate:
            found, rest = self._fetch_now(missed)
            if len(rest) < len(missed):
                missed = {k: missed[k] for k in rest}
        if missed:
            deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
            got = await self._coalescer.get(missed, deadline)  # read only: may be shared
            if found:
                found.update(got)
            else:
                found = got
        native.put_back(out, at, keys, found)  # `out` is L1's fresh list: where it missed
        return out

    def _render(self, keys: Sequence[bytes], decoders: Sequence[Any], got: list[Any]) -> None:
        """Render in `got` the rows decoded without their JSON, where the key's decoder
        renders; L1 keeps the rendered row in place of the one it holds, if unchanged."""
        for i in native.unrendered(got):
            render = getattr(decoders[i], "render", None)
            if render is not None:
                row = render(got[i])
                self.l1.replace(keys[i], got[i], row)
                got[i] = row

    def _refresh_ahead(self, keys: Sequence[bytes], decoders: Sequence[Decoder[V]]) -> None:
        """Read again the rows of `keys` near expiry in L1: at once where every tier can
        answer at once (as `_fetch_now`), else by a background fetch nobody waits for."""
        due = self.l1.due(keys)
        if due:
            decoder_of = dict(zip(keys, decoders, strict=True))
            wanted = {k: decoder_of[k] for k in due}
            if self._immediate:
                _, rest = self._fetch_now(wanted)
                wanted = {k: wanted[k] for k in rest}
            if wanted:
                self._coalescer.refresh(wanted)

    def _fetch_now(self, missed: dict[bytes, Decoder[V]]) -> tuple[dict[bytes, Any], list[bytes]]:
        """`_fetch` done at once, for stores whose every tier can answer at once (RocksDB
        alone, a few keys: service/store/rocks.py): the rows found, and the keys left
        for a fetch (all of them where a tier cannot answer at once).

        Nothing is awaited, so no other request and no write runs meanwhile: there is no
        fetch under way to join and no write to detach from (coalesce.py), and a row
        read here is current when it enters L1. What it saves: the fetch task, its
        timeout and the wake-ups, about as much CPU as the reads themselves."""
        found: dict[bytes, Any] = {}
        pending = list(missed)
        failed = False
        for depth, tier in enumerate(self.tiers):
            if not pending:
                break
            try:
                values = tier.get_many_now(pending)
            except TierError as exc:
                log.warning("tier %s failed a get of %d keys: %s", tier.name, len(pending), exc)
                failed = True
                continue
            if values is None:  # this tier would wait: the rest goes the usual way
                self._cache(found, ())
                return found, pending
            pending = self._take(depth, tier, pending, values, missed, found)
        for key in pending:
            found[key] = UNAVAILABLE if failed else None
        self._cache(found, ())
        return found, []

    async def _fetch(self, missed: dict[bytes, Decoder[V]], flight: Flight) -> dict[bytes, Any]:
        pending = list(missed)
        found: dict[bytes, Any] = {}
        failed = False
        for depth, tier in enumerate(self.tiers):
            if not pending:
                break
            values = await self._get(tier, pending)
            if values is None:
                failed = True
                continue
            pending = self._take(depth, tier, pending, values, missed, found)
        for key in pending:
            found[key] = UNAVAILABLE if failed else None
        self._cache(found, flight.stale)
        return found

    def _take(
        self,
        depth: int,
        tier: MeteredTier,
        keys: list[bytes],
        values: list[bytes | None],
        missed: dict[bytes, Decoder[V]],
        found: dict[bytes, Any],
    ) -> list[bytes]:
        """Decode what tier `depth` returned for `keys` into `found`, offer it to the
        other tiers; returns the keys it did not have (or could not decode).

        A value L1 still holds, expired or not, is not decoded again where the decoder
        can tell it is unchanged (`unchanged`: a view's codec, service/core/codec.py):
        rows read again at expiry or by refresh-ahead cost a tier read, no decoding.
        Many values are decoded per decoder in one batch where the decoder can
        (`decode_rows`); they are grouped by decoder in one compiled call
        (native.group: 11.5 us in Python for 101 keys)."""
        fill: list[tuple[bytes, bytes]] = []
        if self.l1.max_rows:  # with L1 off (a cold read) every key is new
            keys, values = self._keep_unchanged(keys, values, missed, found, fill)
        still, groups = native.group(keys, values, missed)
        for decode, (group_keys, raws) in groups.items():
            if not self._bare and not hasattr(decode, "render"):
                self._bare = True  # from now on, readers that render check their rows
            rows = _decode_all(decode, raws, len(raws) >= BATCH_DECODE_KEYS)
            if native.take(found, fill, group_keys, rows, raws):  # no CorruptValue
                continue
            for key, raw, row in zip(group_keys, raws, rows, strict=True):
                if isinstance(row, CorruptValue):
                    log.warning("corrupt value in %s: %s", tier.name, row)
                    tier.error.inc()
                    still.append(key)
                else:
                    found[key] = row
                    fill.append((key, raw))
        tier.hit.inc(len(fill))
        tier.miss.inc(len(still))
        if fill:
            self._fill(depth, fill)
        return still

    def _keep_unchanged(
        self,
        keys: list[bytes],
        values: list[bytes | None],
        missed: dict[bytes, Decoder[V]],
        found: dict[bytes, Any],
        fill: list[tuple[bytes, bytes]],
    ) -> tuple[list[bytes], list[bytes | None]]:
        """Put in `found` (and `fill`) the rows L1 holds whose value is the one read
        (`unchanged`); the other keys and values, in order, for decoding."""
        peek = self.l1.peek
        rest_keys: list[bytes] = []
        rest_values: list[bytes | None] = []
        for key, raw in zip(keys, values, strict=True):
            if raw is not None:
                old = peek(key)
                if old is not None and old is not MISS:
                    same = getattr(missed[key], "unchanged", None)
                    if same is not None and same(raw, old):
                        found[key] = old
                        fill.append((key, raw))
                        continue
            rest_keys.append(key)
            rest_values.append(raw)
        return rest_keys, rest_values

    def _cache(self, found: dict[bytes, Any], stale: Collection[bytes]) -> None:
        """Put what was found in L1, except UNAVAILABLE and keys written meanwhile."""
        cache = found.items() if not stale else ((k, v) for k, v in found.items() if k not in stale)
        evicted = self.l1.put_many((k, v) for k, v in cache if v is not UNAVAILABLE)
        if evicted:
            metrics.L1_EVICTIONS.inc(evicted)

    async def _get(self, tier: MeteredTier, keys: list[bytes]) -> list[bytes | None] | None:
        """What `tier` returns for `keys`; None if it failed. Each tier bounds its own
        reads (service/store/base.py): no timeout scope here (one cost 4.5 us a fetch)."""
        try:
            return await tier.get_many(keys)
        except TierError as exc:
            log.warning("tier %s failed a get of %d keys: %s", tier.name, len(keys), exc)
            return None

    def _fill(self, depth: int, items: list[tuple[bytes, bytes]]) -> None:
        """Offer what tier `depth` returned to every other durable tier, in the background."""
        for i, fill in enumerate(self._fills):
            if i != depth:
                fill.offer(items)

    def invalidate(self, keys: Iterable[bytes]) -> None:
        """`keys` were written: forget them in L1 and in fetches under way."""
        keys = keys if isinstance(keys, list | tuple) else list(keys)
        self.l1.invalidate(keys)
        self._coalescer.forget(keys)

    def clear(self) -> None:
        """Anything may have been written (notifications were lost): forget everything,
        and cache again (after `suspend`)."""
        self.l1.clear()
        self.l1.resume()
        self._coalescer.forget_all()

    def suspend(self) -> None:
        """Notifications may be missed from now on: forget everything and cache nothing
        (reads go to the tiers below) until `clear` after a resubscription."""
        self.l1.suspend()
        self._coalescer.forget_all()

    async def close(self) -> None:
        """Cancel fetches under way."""
        await self._coalescer.close()
