"""The livefeat.v1.FeatureService servicer: wire <-> core translation, nothing else.

Each handler turns the request into a core call (with the caller's deadline,
minus a margin, as the core's timeout) and the result into a message;
`edge` maps errors and records metrics.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc

from service import metrics
from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service._gen.livefeat.v1 import livefeat_pb2_grpc as pb_grpc
from service.core.admission import Admission
from service.core.service import FeatureService
from service.errors import InvalidArgument, RequestError
from service.grpc.convert import push_rows
from service.grpc.edge import Context, Malformed, core_timeout, edge, parser
from service.grpc.wire import WireEncoder
from service.http.request_id import new_request_id
from service.served_log import DISABLED, ServedLog

_PAIR_FIELD = re.compile(r"^ids\[(\d+)\]\[([01])\]")


class FeatureServicer(pb_grpc.FeatureServiceServicer):
    """gRPC handlers over one FeatureService core."""

    def __init__(
        self,
        core: FeatureService,
        admission: Admission | None = None,
        served_log: ServedLog = DISABLED,
    ) -> None:
        self.core = core
        self.admission = admission  # read by `edge`
        self.served_log = served_log
        self.wire = WireEncoder(core.registry)
        self._bundle_sizes = metrics.tally(metrics.BATCH_SIZE.labels("GetBundle"))

    @edge("GetBundle")
    async def GetBundle(self, request: pb.GetBundleRequest, context: Context) -> bytes:
        """Features of one user, its candidate rooms and the user x room pairs."""
        if not request.HasField("user_id"):
            raise InvalidArgument("user_id", "required")
        json = self.served_log.active  # only the served log reads the rows' JSON
        result = await self.core.get_bundle(
            request.bundle,
            request.user_id,
            list(request.room_ids),
            core_timeout(context),
            json=json,
        )
        self._bundle_sizes.observe(len(result.room_ids))
        self.served_log.offer(result, lambda: _request_id(context))
        return self.wire.bundle(result)

    @edge("GetFeatures")
    async def GetFeatures(self, request: pb.GetFeaturesRequest, context: Context) -> bytes:
        """Rows of one view; user_room views take room ids in `ids`, user ids in `user_ids`."""
        plan = self.core.view_plan(request.view)
        ids: list[Any] = list(request.ids)
        if plan.is_pair:
            if len(request.user_ids) != len(ids):
                raise InvalidArgument(
                    "user_ids", f"{len(request.user_ids)} user ids for {len(ids)} ids: one per id"
                )
            ids = [[u, r] for u, r in zip(request.user_ids, ids, strict=True)]
        elif request.user_ids:
            raise InvalidArgument("user_ids", f"only for user_room views, not {plan.name!r}")
        try:
            _, rows = await self.core.get_features(
                plan.name, ids, core_timeout(context), json=False
            )
        except RequestError as exc:
            raise _pair_field(exc) from None
        return self.wire.features(list(request.ids), list(request.user_ids), rows)

    @edge("PushFeatures")
    async def PushFeatures(
        self, request: pb.PushFeaturesRequest, context: Context
    ) -> pb.PushFeaturesResponse:
        """Write one batch of rows: all checked first; a refused batch writes nothing."""
        result = await self.core.push(request.view, push_rows(request.rows))
        return pb.PushFeaturesResponse(
            view=request.view, written=result.written, ignored=result.ignored, batches=1
        )

    @edge("PushFeaturesStream")
    async def PushFeaturesStream(
        self, requests: AsyncIterator[pb.PushFeaturesRequest], context: Context
    ) -> pb.PushFeaturesResponse:
        """Write a stream of batches of one view, each as PushFeatures; answer with totals."""
        view = ""
        written = ignored = batches = 0
        async for request in requests:
            try:
                if isinstance(request, Malformed):
                    raise request.error("request")
                if view and request.view != view:
                    raise InvalidArgument("view", f"a stream carries one view ({view!r})")
                result = await self.core.push(request.view, push_rows(request.rows), "load")
            except RequestError as exc:
                raise type(exc)(f"batches[{batches}].{exc.field}", exc.reason) from None
            view = request.view
            written += result.written
            ignored += result.ignored
            batches += 1
        return pb.PushFeaturesResponse(view=view, written=written, ignored=ignored, batches=batches)


SERVICE = "livefeat.v1.FeatureService"


def add_to_server(servicer: FeatureServicer, server: Any) -> None:
    """Register `servicer` on a grpc.aio server, as the generated
    `add_FeatureServiceServicer_to_server` does, but with deserializers that hand
    unparseable messages to the edge (INVALID_ARGUMENT) instead of failing (UNKNOWN),
    and no serializer for GetBundle and GetFeatures: they answer with wire bytes (wire.py)."""
    push_out = pb.PushFeaturesResponse.SerializeToString
    handlers = {
        "GetBundle": grpc.unary_unary_rpc_method_handler(
            servicer.GetBundle, parser(pb.GetBundleRequest)
        ),
        "GetFeatures": grpc.unary_unary_rpc_method_handler(
            servicer.GetFeatures, parser(pb.GetFeaturesRequest)
        ),
        "PushFeatures": grpc.unary_unary_rpc_method_handler(
            servicer.PushFeatures, parser(pb.PushFeaturesRequest), push_out
        ),
        "PushFeaturesStream": grpc.stream_unary_rpc_method_handler(
            servicer.PushFeaturesStream, parser(pb.PushFeaturesRequest), push_out
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _pair_field(exc: RequestError) -> RequestError:
    """Name a refused pair as the request does: `ids[i][0]` is `user_ids[i]`, `[1]` is `ids[i]`."""
    match = _PAIR_FIELD.match(exc.field)
    if match is None:
        return exc
    i, part = match.groups()
    field = f"user_ids[{i}]" if part == "0" else f"ids[{i}]"
    return type(exc)(field + exc.field[match.end() :], exc.reason)


def _request_id(context: Context) -> str:
    """The caller's `x-request-id` metadata, or a new id (as HTTP does)."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return new_request_id()
