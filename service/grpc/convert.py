"""PushRows -> the core's row dicts, for the server side. No checking: the core does it.
(Answers are assembled as wire bytes: wire.py.)"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service._gen.livefeat.v1 import livefeat_pb2 as pb


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
