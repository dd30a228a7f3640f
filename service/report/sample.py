"""Which entities a report looks at, and what serving answers for them.

Ids come from the offline file when one is given (so DEFAULTED shows entities
the training data has and serving lacks), else from the keys stored in the
durable tiers. Either way the choice is deterministic given the seed: ids are
sorted before a seeded draw, so neither the tiers' scan order nor the file's
row order changes the sample.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson

from service.core.codec import JSON
from service.core.registry import ViewPlan
from service.core.service import FeatureService
from service.store.tiered import TieredStore

Id = int | tuple[int, int]
T = TypeVar("T")
READ_BATCH = 1000  # ids per core call: under the default limit of 2,000 per request


@dataclass(slots=True)
class SampledRows:
    """What the core served for the sampled ids of one view, aligned with `ids`.

    `values[i]` maps feature name to the value as the HTTP answer serves it;
    `ages_ms[i]` is -1 where nothing stored was served.
    """

    ids: list[Id]
    statuses: list[str]
    ages_ms: list[int]
    values: list[dict[str, Any]]


def scan_view_keys(store: TieredStore[Any], prefix: bytes) -> AsyncIterator[list[bytes]]:
    """Every stored key of a view, in batches, from each durable tier in turn.

    The one place that knows how to list a view's keys: the store's internals
    may change, this function follows them.
    """

    async def scan() -> AsyncIterator[list[bytes]]:
        for tier in store.tiers:
            async for keys in tier.scan_keys(prefix):
                yield keys

    return scan()


def parse_key(plan: ViewPlan, key: bytes) -> Id:
    """The id (or (user_id, room_id)) a storage key of `plan` holds. Raises ValueError."""
    parts = key[len(plan.key_prefix) :].split(b":")
    if len(parts) != len(plan.key_columns):
        raise ValueError(f"key {key!r} does not fit view {plan.name!r}")
    ids = tuple(int(p) for p in parts)
    return ids if len(ids) == 2 else ids[0]  # type: ignore[return-value]


async def stored_keys(store: TieredStore[Any], plan: ViewPlan) -> list[bytes]:
    """The distinct keys stored for `plan` in any durable tier, sorted (as bytes).

    Keys, not ids: parsing and sorting a million (user, room) tuples took 15 s
    here; the keys' bytes sort in C, and only the sampled ones are parsed.
    """
    seen: set[bytes] = set()
    async for keys in scan_view_keys(store, plan.key_prefix):
        seen.update(keys)
    return sorted(seen)


def choose(ids: Sequence[T], n: int, seed: int) -> list[T]:
    """`n` of `ids` (all if fewer), drawn without replacement; the same for the same seed.

    `ids` must be sorted and distinct for the draw not to depend on their order.
    """
    if len(ids) <= n:
        return list(ids)
    picked = np.random.default_rng(seed).choice(len(ids), size=n, replace=False)
    return [ids[i] for i in np.sort(picked)]


async def read_rows(
    core: FeatureService, plan: ViewPlan, ids: Sequence[Id], progress: Callable[[int], Any]
) -> SampledRows:
    """Ask the core for `ids` of `plan` exactly as a ranker would, in batches.

    Statuses and ages are the core's (FeatureService.get_features); values are
    decoded from the JSON fragment the HTTP front end serves. Raises TierError
    if no tier answers at all.
    """
    out = SampledRows([], [], [], [])
    cut = len(plan.name) + 1
    for start in range(0, len(ids), READ_BATCH):
        batch = list(ids[start : start + READ_BATCH])
        asked = [list(i) if isinstance(i, tuple) else i for i in batch]
        _, rows = await core.get_features(plan.name, asked)
        out.ids += batch
        out.statuses += [s.name for s in rows.statuses]
        out.ages_ms += rows.ages_ms
        for row in rows.rows:
            named = orjson.loads(b"{" + row[JSON] + b"}")
            out.values.append({k[cut:]: v for k, v in named.items()})
        progress(len(batch))
    return out
