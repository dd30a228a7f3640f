"""PushFeatures and PushFeaturesStream against the real server, read back over gRPC.

Room ids 700000-709999 belong to this module, each test its own range.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import numpy as np
import pytest

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service._gen.livefeat.v1 import livefeat_pb2_grpc as pb_grpc
from service.client import LivefeatClient, push_request

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

ROOM = "room_stats"
PAIR = "user_room_affinity"
DIM = 32


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def room_row(room: int, event_time_ms: int, **values: Any) -> dict[str, Any]:
    return {"id": room, "event_time_ms": event_time_ms, "values": values}


def test_push_then_read_back(ranker: LivefeatClient) -> None:
    t = now_ms()
    vector = [0.5] * DIM
    got = ranker.push(ROOM, [room_row(700_001, t, viewer_count=12, gift_value_1m=2.5,
                                      category="music", room_embedding=vector)])  # fmt: skip
    assert (got.view, got.written, got.ignored, got.batches) == (ROOM, 1, 0, 1)
    rows = ranker.get_features(ROOM, [700_001, 700_002], timeout=5)
    assert rows.status.tolist() == [pb.FOUND, pb.DEFAULTED]
    assert rows.column("viewer_count").tolist() == [12.0, 0.0]
    assert rows.column("gift_value_1m")[0] == np.float32(2.5)
    assert rows.strings["category"] == ["music", ""]
    assert rows.vectors["room_embedding"][0].tolist() == vector
    assert 0 <= rows.age_ms[0] < 60_000 and rows.age_ms[1] == -1


def test_older_event_is_ignored_and_partial_push_keeps_the_rest(ranker: LivefeatClient) -> None:
    t = now_ms()
    ranker.push(ROOM, [room_row(700_011, t, viewer_count=5, category="games")])
    older = ranker.push(ROOM, [room_row(700_011, t - 1_000, viewer_count=99)])
    assert (older.written, older.ignored) == (0, 1)
    newer = ranker.push(ROOM, [room_row(700_011, t + 1, likes_5m=3)])
    assert (newer.written, newer.ignored) == (1, 0)
    rows = ranker.get_features(ROOM, [700_011], timeout=5)
    assert rows.column("viewer_count").tolist() == [5.0]
    assert rows.column("likes_5m").tolist() == [3.0]
    assert rows.strings["category"] == ["games"]


def test_pair_push_and_bundle(ranker: LivefeatClient) -> None:
    t = now_ms()
    row = {"id": [424_242, 700_021], "event_time_ms": t, "values": {"watch_sec_30d": 40}}
    assert ranker.push(PAIR, [row]).written == 1
    rows = ranker.get_features(PAIR, [700_021], user_ids=[424_242], timeout=5)
    assert rows.column("watch_sec_30d").tolist() == [40.0]
    pairs = ranker.get_bundle(424_242, [700_021, 700_022], timeout=5).pairs[PAIR]
    assert pairs.status.tolist() == [pb.FOUND, pb.DEFAULTED]
    assert pairs.column("last_visit_age_s").tolist() == [-1.0, -1.0]  # left out: default


def test_typed_values_cover_every_kind(stub: pb_grpc.FeatureServiceStub) -> None:
    values = {
        "viewer_count": pb.Value(int64_value=7),
        "gift_value_1m": pb.Value(double_value=1.25),
        "like_rate": pb.Value(float_value=0.5),  # a float into a double feature: a number
        "category": pb.Value(string_value="talk"),
        "room_embedding": pb.Value(vector_value=pb.FloatVector(values=[1.0] * DIM)),
    }
    row = pb.PushRow(id=[700_031], event_time_ms=now_ms(), values=values)
    reply = stub.PushFeatures(pb.PushFeaturesRequest(view=ROOM, rows=[row]), timeout=5)
    assert reply.written == 1


def test_stream_push_totals_and_rows(ranker: LivefeatClient) -> None:
    t = now_ms()
    batches = [[room_row(700_100 + 10 * b + i, t, viewer_count=b * 10 + i) for i in range(10)]
               for b in range(3)]  # fmt: skip
    got = ranker.push_stream(ROOM, iter(batches), timeout=30)
    assert (got.view, got.written, got.ignored, got.batches) == (ROOM, 30, 0, 3)
    rows = ranker.get_features(ROOM, list(range(700_100, 700_130)), timeout=5)
    assert rows.column("viewer_count").tolist() == [float(i) for i in range(30)]
    again = ranker.push_stream(ROOM, iter(batches), timeout=30)
    assert (again.written, again.ignored) == (0, 30)


def test_stream_refused_batch_names_it_and_keeps_earlier_ones(ranker: LivefeatClient) -> None:
    t = now_ms()
    good = [room_row(700_201, t, viewer_count=1)]
    bad = [room_row(700_202, t, viewer_count=1), room_row(700_203, t, viewer_count="x")]
    with pytest.raises(grpc.RpcError) as err:
        ranker.push_stream(ROOM, iter([good, bad, good]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("batches[1].rows[1].values.viewer_count:")
    rows = ranker.get_features(ROOM, [700_201, 700_202, 700_203], timeout=5)
    assert rows.status.tolist() == [pb.FOUND, pb.DEFAULTED, pb.DEFAULTED]


def test_stream_of_one_view(stub: pb_grpc.FeatureServiceStub) -> None:
    t = now_ms()
    requests = [push_request(ROOM, [room_row(700_301, t, viewer_count=1)]),
                push_request(PAIR, [{"id": [1, 700_301], "event_time_ms": t,
                                     "values": {"gifts_30d": 1}}])]  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        stub.PushFeaturesStream(iter(requests), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("batches[1].view:")
