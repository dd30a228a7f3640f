"""Core results <-> protobuf messages, for the server side. No checking: the core does it.

A view block is assembled from the parts every `Row` carries pre-rendered
(float32 numeric bytes, vector bytes, strings): the numeric matrix is one
`b"".join`, never a loop over features.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service.core.codec import NUMERIC, STRINGS, VECTORS
from service.core.registry import Registry, ViewPlan
from service.core.service import BundleResult, ViewRows


@dataclass(frozen=True, slots=True)
class _Columns:
    """A view's column names, computed once (ViewCodec's properties build lists per call)."""

    numeric: tuple[str, ...]
    vectors: tuple[tuple[str, int], ...]
    strings: tuple[str, ...]


class Encoder:
    """Builds response messages for the views of one registry."""

    def __init__(self, registry: Registry) -> None:
        self._columns = {name: _columns_of(plan) for name, plan in registry.views.items()}

    def fill(self, block: pb.ViewBlock, view: ViewRows) -> None:
        """Write one view's rows into `block`, in the order of `view.rows`.

        Sub-messages are filled in place (`add`): passing built messages to a
        constructor or `append` would copy them, vector bytes and all.
        """
        cols = self._columns[view.plan.name]
        rows = view.rows
        block.view = view.plan.name
        block.numeric_names.extend(cols.numeric)
        block.numeric = b"".join([r[NUMERIC] for r in rows])
        # One list comprehension per column: cheaper than transposing with zip(*rows).
        for i, name in enumerate(cols.strings):
            block.strings.add(name=name, values=[r[STRINGS][i] for r in rows])
        for i, (name, dim) in enumerate(cols.vectors):
            block.vectors.add(name=name, dim=dim, values=b"".join([r[VECTORS][i] for r in rows]))
        block.status.extend(view.statuses)  # type: ignore[arg-type]  # core Status = proto numbers
        block.age_ms.extend(view.ages_ms)

    def bundle(self, result: BundleResult) -> pb.GetBundleResponse:
        """The GetBundle answer."""
        reply = pb.GetBundleResponse(
            bundle=result.bundle, user_id=result.user_id, room_ids=result.room_ids
        )
        roles = (
            (reply.user, result.user),
            (reply.rooms, result.rooms),
            (reply.pairs, result.pairs),
        )
        for blocks, views in roles:
            for view in views:
                self.fill(blocks.add(), view)
        return reply


def _columns_of(plan: ViewPlan) -> _Columns:
    codec = plan.codec
    return _Columns(
        tuple(codec.numeric_names),
        tuple((f.name, f.dim) for f in codec.vector_features),
        tuple(codec.string_names),
    )


def value_of(value: pb.Value) -> Any:
    """The plain Python value of a Value (None when no kind is set: the core refuses it)."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "vector_value":
        return list(value.vector_value.values)
    return getattr(value, kind)


def push_rows(rows: Iterable[pb.PushRow]) -> list[dict[str, Any]]:
    """PushRows as the dicts `FeatureService.push` takes; absent fields stay absent."""
    out = []
    for row in rows:
        item: dict[str, Any] = {
            "values": {name: value_of(v) for name, v in row.values.items()},
        }
        if row.id:
            item["id"] = row.id[0] if len(row.id) == 1 else list(row.id)
        if row.HasField("event_time_ms"):
            item["event_time_ms"] = row.event_time_ms
        out.append(item)
    return out
