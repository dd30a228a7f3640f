"""The core both front ends call: bundle assembly, feature reads, pushes.

Per request it builds keys from the compiled plans, asks the tiered store for
every row in one call, and decides each row's status (FOUND, STALE past
max_age_s, DEFAULTED, UNAVAILABLE). Wire encoding is the front ends' job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import metrics, native
from service.core.codec import EVENT_TIME, CorruptValue, Row, ViewCodec, check_value, show
from service.core.registry import BundlePlan, Registry, ViewPlan
from service.core.status import Status
from service.core.validate import check_event_time, check_id, check_ids, check_pair
from service.errors import InvalidArgument, NotFound, TooLarge
from service.store.base import UNAVAILABLE
from service.store.tiered import TieredStore

# In the order native.resolve counts them, which is also the counters' (Status - 1).
_STATUSES = (Status.FOUND, Status.STALE, Status.DEFAULTED, Status.UNAVAILABLE)


def wall_clock_ms() -> int:
    """Milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class ViewRows:
    """One view's rows for a list of entities, aligned with the entities' ids.

    `ages_ms[i]` is -1 where no stored value was served.
    """

    plan: ViewPlan
    rows: list[Row]
    statuses: list[Status]
    ages_ms: list[int]


@dataclass(slots=True)
class BundleResult:
    """What a bundle request gets: user, rooms (request order), user x room pairs."""

    bundle: str
    user_id: int
    room_ids: list[int]
    user: list[ViewRows]
    rooms: list[ViewRows]
    pairs: list[ViewRows]


@dataclass(frozen=True, slots=True)
class PushResult:
    """Counts of a push: rows written, rows ignored as not newer than what is stored."""

    written: int
    ignored: int


@dataclass(frozen=True, slots=True)
class ColumnRows:
    """Complete, checked rows of one view given column-wise (see `write_batch`): storage
    keys, event times (int64 array), and per feature a column as `ViewCodec.encode_columns`
    takes it (numpy arrays for numbers, rows x dim for vectors; lists of str for strings);
    `positions` places each row among all rows of its batch."""

    keys: list[bytes]
    event_times_ms: np.ndarray
    columns: dict[str, Any]
    positions: list[int]

    def row(self, j: int) -> dict[str, Any]:
        """The values of row `j` as plain Python values (as `check_value` returns them)."""
        return {
            name: col[j] if isinstance(col, list) else col[j].tolist()
            for name, col in self.columns.items()
        }

    def encode(self, codec: ViewCodec, pick: list[int]) -> list[bytes]:
        """The stored values of rows `pick` (indexes, in the order wanted)."""
        if pick == list(range(len(self.keys))):
            return codec.encode_columns(self.event_times_ms, self.columns)
        index = np.asarray(pick, dtype=np.intp)
        columns = {
            name: [col[j] for j in pick] if isinstance(col, list) else col[index]
            for name, col in self.columns.items()
        }
        return codec.encode_columns(self.event_times_ms[index], columns)


def _position(item: tuple[int, Any]) -> int:
    return item[0]


@dataclass(frozen=True, slots=True)
class Limits:
    """Request size limits."""

    max_ids: int = 2000
    max_push_rows: int = 10_000


class FeatureService:
    """The serving core. `clock_ms` returns wall-clock milliseconds (injected for tests)."""

    def __init__(
        self,
        registry: Registry,
        store: TieredStore[Row],
        limits: Limits = Limits(),
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.registry = registry
        self.store = store
        self.limits = limits
        self._clock_ms = clock_ms
        self._write_lock = asyncio.Lock()
        self._requests_seen = 0
        tally = metrics.tally
        self._age = {name: tally(metrics.VALUE_AGE_SECONDS.labels(name)) for name in registry.views}
        self._served = {
            name: [tally(metrics.SERVED_ROWS.labels(name, s.name)) for s in Status]
            for name in registry.views
        }

    def __repr__(self) -> str:
        return f"<FeatureService {len(self.registry.views)} views {self.store!r}>"

    def bundle_plan(self, name: Any) -> BundlePlan:
        """The compiled bundle `name`. Raises NotFound."""
        plan = self.registry.bundles.get(name) if isinstance(name, str) else None
        if plan is None:
            raise NotFound("bundle", f"no bundle named {show(name)}")
        return plan

    def view_plan(self, name: Any, field: str = "view") -> ViewPlan:
        """The compiled view `name`. Raises NotFound."""
        plan = self.registry.views.get(name) if isinstance(name, str) else None
        if plan is None:
            raise NotFound(field, f"no view named {show(name)}")
        return plan

    async def get_bundle(
        self,
        bundle: Any,
        user_id: Any,
        room_ids: Any,
        timeout_s: float | None = None,
        *,
        json: bool = True,
    ) -> BundleResult:
        """Assemble `bundle` for one user and its candidate rooms (order and duplicates kept).

        `timeout_s` bounds the tier reads; rows not read in time are UNAVAILABLE. With
        `json` false (a caller that never reads the rows' JSON: gRPC), rows read from a
        tier below L1 may be decoded without it (ViewCodec.bare).
        """
        plan = self.bundle_plan(bundle)
        uid = check_id("user_id", user_id)
        rids = check_ids("room_ids", room_ids, self.limits.max_ids)
        groups: list[tuple[ViewPlan, list[bytes]]] = [(v, [v.key(uid)]) for v in plan.user]
        groups += [(v, v.keys(rids)) for v in plan.room]
        groups += [(v, v.pair_keys(uid, rids)) for v in plan.user_room]
        views = await self._read(groups, timeout_s, json)
        n_user = len(plan.user)
        n_room = len(plan.room)
        return BundleResult(
            plan.name, uid, rids, views[:n_user], views[n_user : n_user + n_room],
            views[n_user + n_room :],
        )  # fmt: skip

    async def get_features(
        self, view: Any, ids: Any, timeout_s: float | None = None, *, json: bool = True
    ) -> tuple[list[Any], ViewRows]:
        """Rows of one view for `ids` (ids, or [user_id, room_id] pairs for pair views);
        `timeout_s` and `json` as for `get_bundle`."""
        plan = self.view_plan(view)
        if not isinstance(ids, list) or not ids:
            raise InvalidArgument("ids", "expected a non-empty list")
        if len(ids) > self.limits.max_ids:
            raise TooLarge("ids", f"{len(ids)} ids, at most {self.limits.max_ids} per request")
        if plan.is_pair:
            checked: list[Any] = [check_pair(f"ids[{i}]", p) for i, p in enumerate(ids)]
            keys = [plan.key(*p) for p in checked]
        else:
            checked = check_ids("ids", ids, self.limits.max_ids)
            keys = plan.keys(checked)
        return checked, (await self._read([(plan, keys)], timeout_s, json))[0]

    async def _read(
        self, groups: Sequence[tuple[ViewPlan, list[bytes]]], timeout_s: float | None, json: bool
    ) -> list[ViewRows]:
        asked = [(p.codec if json else p.codec.bare, keys) for p, keys in groups]
        got = await self.store.read(asked, timeout_s)
        now = self._clock_ms()
        return [self._resolve(plan, rows, now) for (plan, _), rows in zip(groups, got, strict=True)]

    def _resolve(self, plan: ViewPlan, got: list[Any], now: int) -> ViewRows:
        rows, statuses, ages, counts = native.resolve(
            got, now, plan.max_age_ms, plan.codec.default_row, UNAVAILABLE, _STATUSES
        )
        counters = self._served[plan.name]
        for counter, count in zip(counters, counts, strict=True):
            if count:
                counter.inc(count)
        self._sample_ages(plan.name, ages)
        return ViewRows(plan, rows, statuses, ages)

    def _sample_ages(self, view: str, ages_ms: list[int]) -> None:
        self._requests_seen += 1
        if self._requests_seen % metrics.VALUE_AGE_SAMPLE_EVERY:
            return
        histogram = self._age[view]
        for age in ages_ms:
            if age >= 0:
                histogram.observe(age / 1000)

    async def push(self, view: Any, rows: Any, source: str = "push") -> PushResult:
        """Write rows of one view (newest event wins). All checked before anything is written.

        Features a row leaves out keep their stored values (or defaults).
        """
        plan = self.view_plan(view)
        if not isinstance(rows, list) or not rows:
            raise InvalidArgument("rows", "expected a non-empty list of rows")
        if len(rows) > self.limits.max_push_rows:
            raise TooLarge("rows", f"{len(rows)} rows, at most {self.limits.max_push_rows}")
        checked = [self._check_row(plan, f"rows[{i}]", r) for i, r in enumerate(rows)]
        return await self.write_checked(plan, checked, source)

    async def write_checked(
        self,
        plan: ViewPlan,
        checked: Sequence[tuple[bytes, int, dict[str, Any]]],
        source: str = "push",
        *,
        notify_values: bool = True,
    ) -> PushResult:
        """Write rows already checked as `push` checks them: (key, event_time_ms, values
        of known features, each passed through `check_value`). For writers that check rows
        one by one and must not refuse good rows for a bad one.

        Rows are applied in order, as successive pushes would be: a row not newer than
        its entity's stored or earlier row is ignored; features a row leaves out keep the
        values before it. Rows of one entity become one write. Raises TierError.
        """
        return await self.write_batch(plan, None, list(enumerate(checked)), source,
                                      notify_values=notify_values)  # fmt: skip

    async def write_batch(
        self,
        plan: ViewPlan,
        full: ColumnRows | None,
        checked: Sequence[tuple[int, tuple[bytes, int, dict[str, Any]]]],
        source: str = "push",
        *,
        notify_values: bool = True,
    ) -> PushResult:
        """`write_checked` for a batch given partly column-wise (Kafka ingestion): `full`
        holds complete rows (every feature) as columns, `checked` the other rows as
        (position, row); positions order all rows of the batch, and the rows are applied
        in that order, exactly as `write_checked` applies a list.

        The complete rows of entities with no other row in the batch need no stored
        value: the newest (the first of equal event times) of each entity is encoded
        column-wise, as a load encodes. Every other entity's rows are merged in order
        over its stored row. One `put_many` for the whole batch. Raises TierError.
        """
        codec = plan.codec
        n_full = 0 if full is None else len(full.keys)
        total = n_full + len(checked)
        if not total:
            return PushResult(0, 0)
        newest = max(t for _, (_, t, _) in checked) if checked else -1
        async with self._write_lock:
            items: list[tuple[bytes, bytes]] = []
            applied: list[int] = []
            ordered = list(checked)
            if full is not None and n_full:
                times = full.event_times_ms.tolist()
                newest = max(newest, max(times))
                mixed = {row[0] for _, row in checked}
                # key -> [event time, index of its newest row, rows applied]
                best: dict[bytes, list[int]] = {}
                for j, (key, t) in enumerate(zip(full.keys, times, strict=True)):
                    if key in mixed:  # merged with the key's other rows, in order
                        ordered.append((full.positions[j], (key, t, full.row(j))))
                        continue
                    now = best.get(key)
                    if now is None:
                        best[key] = [t, j, 1]
                    elif t > now[0]:
                        now[0], now[1] = t, j
                        now[2] += 1
                if best:
                    encoded = full.encode(codec, [j for _, j, _ in best.values()])
                    items += zip(best, encoded, strict=True)
                    applied += [n for _, _, n in best.values()]
                if len(ordered) > len(checked):
                    ordered.sort(key=_position)
            if ordered:
                more, counts = await self._merge_in_order(codec, [row for _, row in ordered])
                items += more
                applied += counts
            flags = await self.store.put_many(items, notify_values=notify_values) if items else []
            written = sum(n for n, ok in zip(applied, flags, strict=True) if ok)
        record_writes(plan.name, source, total, written, newest)
        return PushResult(written, total - written)

    async def _merge_in_order(
        self, codec: ViewCodec, checked: Sequence[tuple[bytes, int, dict[str, Any]]]
    ) -> tuple[list[tuple[bytes, bytes]], list[int]]:
        """The (key, value) to write of each entity of `checked`, applied in order over its
        stored row, and how many rows each applies (entities with none are left out)."""
        n_features = len(codec.features)
        partial = list({key: 0 for key, _, v in checked if len(v) < n_features})
        stored = dict(zip(partial, await self.store.get_stored(partial), strict=True))
        # key -> (event time, values, rows applied); -1: nothing stored (as far as known)
        state: dict[bytes, tuple[int, dict[str, Any], int]] = {}
        for key, event_time_ms, values in checked:
            now = state.get(key)
            if now is None:
                now = _stored_state(codec, stored.get(key))
                state[key] = now
            if event_time_ms > now[0]:
                full = values if len(values) == n_features else {**now[1], **values}
                state[key] = (event_time_ms, full, now[2] + 1)
        applied = [(key, n) for key, (_, _, n) in state.items() if n]
        items = [(key, codec.encode(state[key][0], state[key][1])) for key, _ in applied]
        return items, [n for _, n in applied]

    def _check_row(self, plan: ViewPlan, field: str, row: Any) -> tuple[bytes, int, dict[str, Any]]:
        if not isinstance(row, dict):
            raise InvalidArgument(field, "expected an object with id, event_time_ms and values")
        unknown = set(row) - {"id", "event_time_ms", "values"}
        if unknown:
            raise InvalidArgument(f"{field}.{sorted(unknown)[0]}", "unknown field")
        if "id" not in row:
            raise InvalidArgument(f"{field}.id", "required")
        key = plan.key_of(self._check_entity(plan, f"{field}.id", row["id"]))
        event_time_ms = check_event_time(f"{field}.event_time_ms", row.get("event_time_ms"))
        values = row.get("values")
        if not isinstance(values, dict) or not values:
            raise InvalidArgument(f"{field}.values", "expected a non-empty object of features")
        features = {f.name: f for f in plan.codec.features}
        out = {}
        for name, value in values.items():
            if name not in features:
                raise NotFound(f"{field}.values.{name}", f"view {plan.name!r} has no such feature")
            try:
                out[name] = check_value(features[name], value)
            except ValueError as exc:
                raise InvalidArgument(f"{field}.values.{name}", str(exc)) from None
        return key, event_time_ms, out

    @staticmethod
    def _check_entity(plan: ViewPlan, field: str, value: Any) -> int | tuple[int, int]:
        """A checked entity of `plan`: an id, or a (user_id, room_id) pair."""
        return check_pair(field, value) if plan.is_pair else check_id(field, value)

    async def inspect(self, view: Any, entity_id: Any) -> dict[str, Any]:
        """The value of one row in each tier, with its event time and age (for /debug)."""
        plan = self.view_plan(view)
        key = plan.key_of(self._check_entity(plan, "id", entity_id))
        now = self._clock_ms()
        tiers: dict[str, Any] = {}
        for name, raw in (await self.store.inspect(key)).items():
            if isinstance(raw, tuple) or raw is None:
                tiers[name] = _describe_l1(raw, now)
            elif isinstance(raw, Exception):
                tiers[name] = {"present": False, "error": str(raw)}
            else:
                event_time_ms, values = plan.codec.decode_values(raw)
                tiers[name] = {
                    "present": True, "event_time_ms": event_time_ms,
                    "age_ms": now - event_time_ms, "values": values,
                }  # fmt: skip
        return {"view": plan.name, "key": key.decode(), "tiers": tiers}


def _stored_state(codec: ViewCodec, base: bytes | None) -> tuple[int, dict[str, Any], int]:
    """(event time, values, 0) of a stored row a partial write builds on; an absent row,
    or one that cannot be decoded (it is then overwritten), counts as nothing stored."""
    if base is not None:
        try:
            before, old = codec.decode_values(base)
        except CorruptValue:
            return (-1, codec.default_values, 0)
        return (before, {**codec.default_values, **old}, 0)
    return (-1, codec.default_values, 0)


def record_writes(view: str, source: str, rows: int, written: int, newest_ms: int) -> None:
    """Count rows written and ignored; move the view's newest-event gauge forward
    (`newest_ms`: the newest event time among the rows)."""
    metrics.WRITTEN_ROWS.labels(view, source, "written").inc(written)
    metrics.WRITTEN_ROWS.labels(view, source, "ignored").inc(rows - written)
    if written:
        newest = newest_ms / 1000
        if newest > _newest_event_s.get(view, 0.0):
            _newest_event_s[view] = newest
            metrics.NEWEST_EVENT_SECONDS.labels(view).set(newest)


_newest_event_s: dict[str, float] = {}  # the gauge's value per view (a gauge has no max())


def _describe_l1(row: Row | None, now: int) -> dict[str, Any]:
    if row is None:
        return {"present": False}
    return {"present": True, "event_time_ms": row[EVENT_TIME], "age_ms": now - row[EVENT_TIME]}
