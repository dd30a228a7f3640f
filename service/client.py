"""A small gRPC client for rankers and writers, sync and asyncio; replies as numpy arrays.

    with LivefeatClient("localhost:50051") as client:
        got = client.get_bundle(7, [101, 102, 103])
        rooms = got.rooms["room_stats"]
        rooms.numeric                 # float32 (3, len(rooms.numeric_names)), one frombuffer
        rooms.vectors["room_embedding"], rooms.strings["category"], rooms.status, rooms.age_ms

`AsyncLivefeatClient` has the same methods as coroutines. Both differ only in
the transport call: requests are built and replies decoded by the functions
below. RPC errors are raised as `grpc.RpcError` (code() and details(); the
trailing metadata `livefeat-field` names the refused field).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service._gen.livefeat.v1 import livefeat_pb2_grpc as pb_grpc
from service.core.status import Status

__all__ = ["AsyncLivefeatClient", "Bundle", "LivefeatClient", "PushSummary", "Status", "ViewData"]

DEFAULT_TIMEOUT_S = 1.0
Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class ViewData:
    """One view's rows (entities in request order), column-wise.

    `numeric` is float32 (rows, len(numeric_names)) and `vectors[name]` float32
    (rows, dim): read-only views of the reply's bytes (copy to modify).
    `status` holds `Status` numbers (int8), `age_ms` ages in ms (-1: no value).
    """

    view: str
    numeric_names: tuple[str, ...]
    numeric: np.ndarray
    vectors: dict[str, np.ndarray]
    strings: dict[str, list[str]]
    status: np.ndarray
    age_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.status)

    def column(self, name: str) -> np.ndarray:
        """One numeric feature of every row. Raises ValueError for an unknown name."""
        return self.numeric[:, self.numeric_names.index(name)]


@dataclass(frozen=True, slots=True)
class Bundle:
    """A GetBundle reply: per role, {view name: ViewData}; rooms and pairs in request order."""

    bundle: str
    user_id: int
    room_ids: list[int]
    user: dict[str, ViewData]
    rooms: dict[str, ViewData]
    pairs: dict[str, ViewData]


@dataclass(frozen=True, slots=True)
class PushSummary:
    """Rows written, rows ignored as not newer than what was stored, batches sent."""

    view: str
    written: int
    ignored: int
    batches: int


def decode_view(block: pb.ViewBlock) -> ViewData:
    """A ViewBlock as numpy arrays (no copy of the numeric matrix or the vectors)."""
    rows = len(block.status)
    return ViewData(
        view=block.view,
        numeric_names=tuple(block.numeric_names),
        numeric=np.frombuffer(block.numeric, "<f4").reshape(rows, len(block.numeric_names)),
        vectors={
            v.name: np.frombuffer(v.values, "<f4").reshape(rows, v.dim) for v in block.vectors
        },
        strings={s.name: list(s.values) for s in block.strings},
        status=np.fromiter(block.status, np.int8, rows),
        age_ms=np.fromiter(block.age_ms, np.int64, rows),
    )


def decode_bundle(reply: pb.GetBundleResponse) -> Bundle:
    """A GetBundle reply as a Bundle."""
    return Bundle(
        bundle=reply.bundle,
        user_id=reply.user_id,
        room_ids=list(reply.room_ids),
        user={b.view: decode_view(b) for b in reply.user},
        rooms={b.view: decode_view(b) for b in reply.rooms},
        pairs={b.view: decode_view(b) for b in reply.pairs},
    )


def decode_push(reply: pb.PushFeaturesResponse) -> PushSummary:
    """A push reply as a PushSummary."""
    return PushSummary(reply.view, reply.written, reply.ignored, reply.batches)


def features_request(
    view: str, ids: Iterable[int], user_ids: Iterable[int] | None
) -> pb.GetFeaturesRequest:
    """GetFeatures of `ids` (room ids, with aligned `user_ids`, for user_room views)."""
    return pb.GetFeaturesRequest(view=view, ids=ids, user_ids=user_ids or ())


def to_value(x: Any) -> pb.Value:
    """A Python value as a Value: bool, int, float, str, or a sequence of numbers (vector)."""
    if isinstance(x, bool | np.bool_):
        return pb.Value(bool_value=bool(x))
    if isinstance(x, int | np.integer):
        return pb.Value(int64_value=int(x))
    if isinstance(x, float | np.floating):
        return pb.Value(double_value=float(x))
    if isinstance(x, str):
        return pb.Value(string_value=x)
    return pb.Value(vector_value=pb.FloatVector(values=x))


def push_row(row: Mapping[str, Any]) -> pb.PushRow:
    """A row given as the HTTP API's object: {"id", "event_time_ms", "values"}.

    `id` is an int, or [user_id, room_id] for user_room views. What is missing
    is left unset (the server refuses it, naming the field).
    """
    ids = row.get("id", ())
    return pb.PushRow(
        id=ids if isinstance(ids, list | tuple) else [ids],
        event_time_ms=row.get("event_time_ms"),
        values={name: to_value(v) for name, v in row.get("values", {}).items()},
    )


def push_request(view: str, rows: Rows) -> pb.PushFeaturesRequest:
    """A push of rows of one view (see `push_row`)."""
    return pb.PushFeaturesRequest(view=view, rows=[push_row(r) for r in rows])


class LivefeatClient:
    """A blocking client on one channel to `target` ("host:port"). Close it, or use `with`."""

    def __init__(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(target, options=list(options))
        self.stub = pb_grpc.FeatureServiceStub(self.channel)

    def __repr__(self) -> str:
        return f"<LivefeatClient {self.target}>"

    def __enter__(self) -> LivefeatClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def get_bundle(
        self,
        user_id: int,
        room_ids: Sequence[int],
        bundle: str = "live_ranker",
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> Bundle:
        """Features of one user, its candidate rooms and the pairs. `timeout` in seconds."""
        request = pb.GetBundleRequest(bundle=bundle, user_id=user_id, room_ids=room_ids)
        return decode_bundle(self.stub.GetBundle(request, timeout=timeout))

    def get_features(
        self,
        view: str,
        ids: Sequence[int],
        user_ids: Sequence[int] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> ViewData:
        """Rows of one view; user_room views: room ids in `ids`, user ids in `user_ids`."""
        reply = self.stub.GetFeatures(features_request(view, ids, user_ids), timeout=timeout)
        return decode_view(reply.block)

    def push(self, view: str, rows: Rows, timeout: float | None = 10.0) -> PushSummary:
        """Write rows (checked whole, then written; newest event wins)."""
        return decode_push(self.stub.PushFeatures(push_request(view, rows), timeout=timeout))

    def push_stream(
        self, view: str, batches: Iterable[Rows], timeout: float | None = None
    ) -> PushSummary:
        """Write batches of rows through one PushFeaturesStream call (bulk loads)."""
        requests = (push_request(view, rows) for rows in batches)
        return decode_push(self.stub.PushFeaturesStream(requests, timeout=timeout))


class AsyncLivefeatClient:
    """The asyncio client (grpc.aio), built inside a running loop. Close it, or `async with`."""

    def __init__(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self.channel = grpc.aio.insecure_channel(target, options=list(options))
        self.stub = pb_grpc.FeatureServiceStub(self.channel)

    def __repr__(self) -> str:
        return f"<AsyncLivefeatClient {self.target}>"

    async def __aenter__(self) -> AsyncLivefeatClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def get_bundle(
        self,
        user_id: int,
        room_ids: Sequence[int],
        bundle: str = "live_ranker",
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> Bundle:
        """Features of one user, its candidate rooms and the pairs. `timeout` in seconds."""
        request = pb.GetBundleRequest(bundle=bundle, user_id=user_id, room_ids=room_ids)
        return decode_bundle(await self.stub.GetBundle(request, timeout=timeout))

    async def get_features(
        self,
        view: str,
        ids: Sequence[int],
        user_ids: Sequence[int] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> ViewData:
        """Rows of one view; user_room views: room ids in `ids`, user ids in `user_ids`."""
        request = features_request(view, ids, user_ids)
        return decode_view((await self.stub.GetFeatures(request, timeout=timeout)).block)

    async def push(self, view: str, rows: Rows, timeout: float | None = 10.0) -> PushSummary:
        """Write rows (checked whole, then written; newest event wins)."""
        return decode_push(await self.stub.PushFeatures(push_request(view, rows), timeout=timeout))

    async def push_stream(
        self, view: str, batches: AsyncIterable[Rows], timeout: float | None = None
    ) -> PushSummary:
        """Write batches of rows through one PushFeaturesStream call (bulk loads)."""
        requests = (push_request(view, rows) async for rows in batches)
        return decode_push(await self.stub.PushFeaturesStream(requests, timeout=timeout))
