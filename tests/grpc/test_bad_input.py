"""Bad requests get INVALID_ARGUMENT or NOT_FOUND naming the field, and write nothing.

The field is the message's prefix ("field: reason") and the trailing metadata
`livefeat-field`. Room ids 705000-706999 belong to this module.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service._gen.livefeat.v1 import livefeat_pb2_grpc as pb_grpc

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
ROOM, PAIR, DIM = "room_stats", "user_room_affinity", 32
NOW_MS = time.time_ns() // 1_000_000


def v(**kind: Any) -> pb.Value:
    return pb.Value(**kind)


def row(room: int, values: dict[str, pb.Value] | None = None, **fields: Any) -> pb.PushRow:
    fields.setdefault("id", [room])
    fields.setdefault("event_time_ms", NOW_MS)
    return pb.PushRow(
        values={"viewer_count": v(int64_value=1)} if values is None else values, **fields
    )


def push(rows: list[pb.PushRow], view: str = ROOM) -> pb.PushFeaturesRequest:
    return pb.PushFeaturesRequest(view=view, rows=rows)


def bundle(
    user_id: int | None = 1, rooms: list[int] | None = None, name: str = "live_ranker"
) -> pb.GetBundleRequest:
    return pb.GetBundleRequest(
        bundle=name, user_id=user_id, room_ids=[1] if rooms is None else rooms
    )


@dataclass(frozen=True)
class Case:
    rpc: str
    request: Any
    code: grpc.StatusCode
    field: str
    unwritten: list[int] = field(default_factory=list)  # room ids that must stay unwritten


CASES: dict[str, Case] = {
    "bundle-unknown": Case("GetBundle", bundle(name="nope"), NOT_FOUND, "bundle"),
    "bundle-empty-name": Case("GetBundle", bundle(name=""), NOT_FOUND, "bundle"),
    "bundle-no-user": Case("GetBundle", bundle(user_id=None), INVALID, "user_id"),
    "bundle-negative-user": Case("GetBundle", bundle(user_id=-1), INVALID, "user_id"),
    "bundle-no-rooms": Case("GetBundle", bundle(rooms=[]), INVALID, "room_ids"),
    "bundle-negative-room": Case("GetBundle", bundle(rooms=[1, 2, -3]), INVALID, "room_ids[2]"),
    "bundle-too-many-rooms": Case("GetBundle", bundle(rooms=[1] * 2001), INVALID, "room_ids"),
    "features-unknown-view": Case(
        "GetFeatures", pb.GetFeaturesRequest(view="nope", ids=[1]), NOT_FOUND, "view"
    ),
    "features-no-ids": Case("GetFeatures", pb.GetFeaturesRequest(view=ROOM), INVALID, "ids"),
    "features-negative-id": Case(
        "GetFeatures", pb.GetFeaturesRequest(view=ROOM, ids=[4, -1]), INVALID, "ids[1]"
    ),
    "features-user-ids-on-room-view": Case(
        "GetFeatures", pb.GetFeaturesRequest(view=ROOM, ids=[1], user_ids=[1]), INVALID, "user_ids"
    ),
    "features-pair-ids-misaligned": Case(
        "GetFeatures",
        pb.GetFeaturesRequest(view=PAIR, ids=[1, 2], user_ids=[1]),
        INVALID,
        "user_ids",
    ),
    "features-pair-negative-user": Case(
        "GetFeatures",
        pb.GetFeaturesRequest(view=PAIR, ids=[1, 2], user_ids=[3, -3]),
        INVALID,
        "user_ids[1]",
    ),
    "features-pair-negative-room": Case(
        "GetFeatures", pb.GetFeaturesRequest(view=PAIR, ids=[-2], user_ids=[3]), INVALID, "ids[0]"
    ),
    "push-unknown-view": Case(
        "PushFeatures", push([row(705_001)], "nope"), NOT_FOUND, "view", [705_001]
    ),
    "push-no-rows": Case("PushFeatures", push([]), INVALID, "rows"),
    "push-unknown-feature": Case(
        "PushFeatures",
        push([row(705_002, {"nope": v(int64_value=1)})]),
        NOT_FOUND,
        "rows[0].values.nope",
        [705_002],
    ),
    "push-string-for-int": Case(
        "PushFeatures",
        push([row(705_003, {"viewer_count": v(string_value="12")})]),
        INVALID,
        "rows[0].values.viewer_count",
        [705_003],
    ),
    "push-double-for-int": Case(
        "PushFeatures",
        push([row(705_004, {"viewer_count": v(double_value=1.5)})]),
        INVALID,
        "rows[0].values.viewer_count",
        [705_004],
    ),
    "push-no-kind": Case(
        "PushFeatures",
        push([row(705_005, {"viewer_count": v()})]),
        INVALID,
        "rows[0].values.viewer_count",
        [705_005],
    ),
    "push-nan": Case(
        "PushFeatures",
        push([row(705_006, {"gift_value_1m": v(double_value=math.nan)})]),
        INVALID,
        "rows[0].values.gift_value_1m",
        [705_006],
    ),
    "push-vector-short": Case(
        "PushFeatures",
        push([row(705_007, {"room_embedding": v(vector_value=pb.FloatVector(values=[1.0]))})]),
        INVALID,
        "rows[0].values.room_embedding",
        [705_007],
    ),
    "push-vector-for-int": Case(
        "PushFeatures",
        push([row(705_008, {"viewer_count": v(vector_value=pb.FloatVector(values=[1.0]))})]),
        INVALID,
        "rows[0].values.viewer_count",
        [705_008],
    ),
    "push-no-values": Case(
        "PushFeatures", push([row(705_009, {})]), INVALID, "rows[0].values", [705_009]
    ),
    "push-no-event-time": Case(
        "PushFeatures",
        push([row(705_010, event_time_ms=None)]),
        INVALID,
        "rows[0].event_time_ms",
        [705_010],
    ),
    "push-negative-event-time": Case(
        "PushFeatures",
        push([row(705_011, event_time_ms=-5)]),
        INVALID,
        "rows[0].event_time_ms",
        [705_011],
    ),
    "push-no-id": Case("PushFeatures", push([row(0, id=[])]), INVALID, "rows[0].id"),
    "push-negative-id": Case(
        "PushFeatures", push([row(705_012), row(-4)]), INVALID, "rows[1].id", [705_012]
    ),
    "push-two-ids-on-room-view": Case(
        "PushFeatures", push([row(705_013, id=[1, 705_013])]), INVALID, "rows[0].id", [705_013]
    ),
    "push-one-id-on-pair-view": Case(
        "PushFeatures",
        push([row(705_014, {"gifts_30d": v(int64_value=1)})], PAIR),
        INVALID,
        "rows[0].id",
    ),
    "push-second-row-bad": Case(
        "PushFeatures",
        push([row(705_015), row(705_016, {"category": v(int64_value=3)})]),
        INVALID,
        "rows[1].values.category",
        [705_015, 705_016],
    ),
    "push-10001-rows": Case(
        "PushFeatures",
        push([row(706_000 + i) for i in range(10_001)]),
        INVALID,
        "rows",
        [706_000, 706_500, 707_000],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_refused_naming_the_field(stub: pb_grpc.FeatureServiceStub, name: str) -> None:
    case = CASES[name]
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, case.rpc)(case.request, timeout=10)
    assert err.value.code() == case.code, err.value.details()
    assert err.value.details().startswith(f"{case.field}: "), err.value.details()
    trailers = dict(err.value.trailing_metadata())
    assert trailers["livefeat-field"] == case.field
    assert trailers["livefeat-reason"]
    if case.unwritten:
        got = stub.GetFeatures(pb.GetFeaturesRequest(view=ROOM, ids=case.unwritten), timeout=5)
        assert list(got.block.status) == [pb.DEFAULTED] * len(case.unwritten)


def test_oversized_message_refused_before_any_work(stub: pb_grpc.FeatureServiceStub) -> None:
    huge = "x" * (9 << 20)  # over the default 8 MiB max_body_bytes
    request = push([row(705_100, {"category": v(string_value=huge)})])
    with pytest.raises(grpc.RpcError) as err:
        stub.PushFeatures(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    got = stub.GetFeatures(pb.GetFeaturesRequest(view=ROOM, ids=[705_100]), timeout=5)
    assert list(got.block.status) == [pb.DEFAULTED]


def test_non_ascii_names_survive_in_metadata(stub: pb_grpc.FeatureServiceStub) -> None:
    request = push([row(705_101, {"zähler\n": v(int64_value=1)})])
    with pytest.raises(grpc.RpcError) as err:
        stub.PushFeatures(request, timeout=5)
    assert err.value.code() == NOT_FOUND
    assert err.value.details().startswith("rows[0].values.zähler\n: ")
    assert dict(err.value.trailing_metadata())["livefeat-field"] == "rows[0].values.z\\xe4hler\\n"
