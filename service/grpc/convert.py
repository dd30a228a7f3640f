"""Core results <-> protobuf messages, for the server side. No checking: the core does it.

A view block is assembled from the parts every `Row` carries pre-rendered
(float32 numeric bytes, vector bytes, strings): the numeric matrix is one
`b"".join`, never a loop over features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from service._gen.livefeat.v1 import livefeat_pb2 as pb
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

    def block(self, view: ViewRows) -> pb.ViewBlock:
        """One view's rows as a ViewBlock (rows in the order of `view.rows`)."""
        cols = self._columns[view.plan.name]
        rows = view.rows
        strings = [
            pb.StringColumn(name=name, values=values)
            for name, values in zip(cols.strings, _transpose(r.strings for r in rows), strict=True)
        ]
        vectors = [
            pb.VectorColumn(name=name, dim=dim, values=b"".join(parts))
            for (name, dim), parts in zip(
                cols.vectors, _transpose(r.vectors for r in rows), strict=True
            )
        ]
        return pb.ViewBlock(
            view=view.plan.name,
            numeric_names=cols.numeric,
            numeric=b"".join([r.numeric for r in rows]),
            strings=strings,
            vectors=vectors,
            status=view.statuses,  # type: ignore[arg-type]  # core Status = proto numbers
            age_ms=view.ages_ms,
        )

    def bundle(self, result: BundleResult) -> pb.GetBundleResponse:
        """The GetBundle answer."""
        return pb.GetBundleResponse(
            bundle=result.bundle,
            user_id=result.user_id,
            room_ids=result.room_ids,
            user=[self.block(v) for v in result.user],
            rooms=[self.block(v) for v in result.rooms],
            pairs=[self.block(v) for v in result.pairs],
        )


def _columns_of(plan: ViewPlan) -> _Columns:
    codec = plan.codec
    return _Columns(
        tuple(codec.numeric_names),
        tuple((f.name, f.dim) for f in codec.vector_features),
        tuple(codec.string_names),
    )


def _transpose(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Row-wise tuples to column-wise tuples (zip in C; no column when there is none)."""
    return list(zip(*rows, strict=True))


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
