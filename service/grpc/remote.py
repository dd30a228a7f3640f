"""`livefeat get` and `livefeat load --server`: the command line as a gRPC client.

`get` prints a GetBundle reply as JSON shaped like the HTTP API's (features
named `view.feature`; numeric ones as the float32 the ranker gets), plus each
view's age. `load --server` checks the whole Parquet file first (as a local
load does), then streams it through PushFeaturesStream in batches of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa

from service.client import Bundle, LivefeatClient, PushSummary, ViewData
from service.core.registry import ViewPlan
from service.core.status import Status
from service.errors import LivefeatError
from service.load import check_file, event_times_ms, iter_batches


class RemoteError(LivefeatError):
    """A call to a running service failed; the message has the status code and details."""


def rpc_error(target: str, exc: grpc.RpcError) -> RemoteError:
    """A RemoteError for a failed call."""
    return RemoteError(f"{target}: {exc.code().name}: {exc.details()}")


def get_bundle(
    target: str, user_id: int, room_ids: list[int], bundle: str, timeout_s: float
) -> dict[str, Any]:
    """Call GetBundle and return the reply as JSON-able dicts. Raises RemoteError."""
    with LivefeatClient(target) as client:
        try:
            got = client.get_bundle(user_id, room_ids, bundle, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise rpc_error(target, exc) from None
    return bundle_json(got)


def bundle_json(got: Bundle) -> dict[str, Any]:
    """A Bundle as the HTTP API lays it out, with `age_ms` per view added."""
    return {
        "bundle": got.bundle,
        "user": _entities([got.user_id], got.user)[0],
        "rooms": _entities(got.room_ids, got.rooms),
        "pairs": _entities([[got.user_id, r] for r in got.room_ids], got.pairs)
        if got.pairs
        else [],
    }


def _entities(ids: list[Any], views: dict[str, ViewData]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"id": i, "features": {}, "status": {}, "age_ms": {}} for i in ids]
    for name, view in views.items():
        numeric = view.numeric.tolist()
        vectors = {k: v.tolist() for k, v in view.vectors.items()}
        for n, entity in enumerate(out):
            features = entity["features"]
            features.update(
                {f"{name}.{k}": x for k, x in zip(view.numeric_names, numeric[n], strict=True)}
            )
            features.update({f"{name}.{k}": col[n] for k, col in view.strings.items()})
            features.update({f"{name}.{k}": col[n] for k, col in vectors.items()})
            entity["status"][name] = Status(int(view.status[n])).name
            entity["age_ms"][name] = int(view.age_ms[n])
    return out


def load(
    target: str,
    plan: ViewPlan,
    path: Path,
    batch_rows: int,
    progress: Callable[[int], None] | None = None,
) -> PushSummary:
    """Check `path` whole, then stream it to `target`. Raises LoadError (before any send)."""
    pf = check_file(plan, path)

    def batches() -> Iterator[list[dict[str, Any]]]:
        for batch in iter_batches(pf, plan, batch_rows):
            rows = batch_rows_of(plan, batch)
            yield rows
            if progress:
                progress(len(rows))

    with LivefeatClient(target) as client:
        try:
            return client.push_stream(plan.name, batches())
        except grpc.RpcError as exc:
            raise rpc_error(target, exc) from None


def batch_rows_of(plan: ViewPlan, batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """The rows of a checked record batch as push rows; nulls become defaults (as a load)."""
    keys = [batch.column(k).to_pylist() for k in plan.key_columns]
    ids: list[Any] = keys[0] if len(keys) == 1 else [list(p) for p in zip(*keys, strict=True)]
    # Converted as check_file and a local load do (timestamps of any unit floored
    # to ms): a file the check passed never fails mid-stream.
    et = event_times_ms(batch.column("event_time"))
    names = [f.name for f in plan.codec.features]
    columns = [_column(batch.column(f.name), f.default) for f in plan.codec.features]
    return [
        {"id": i, "event_time_ms": t, "values": dict(zip(names, values, strict=True))}
        for i, t, values in zip(ids, et.to_pylist(), zip(*columns, strict=True), strict=True)
    ]


def _column(col: pa.Array, default: Any) -> list[Any]:
    if (
        pa.types.is_list(col.type)
        or pa.types.is_large_list(col.type)
        or (pa.types.is_fixed_size_list(col.type))
    ):
        return [default if v is None else v for v in col.to_pylist()]
    return list(col.fill_null(default).to_pylist())
