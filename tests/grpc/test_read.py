"""GetBundle and GetFeatures against the real server: shape, values, parity with HTTP.

Also the standard services (health, reflection) and the request metrics.
"""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service._gen.livefeat.v1 import livefeat_pb2_grpc as pb_grpc
from service.client import LivefeatClient, ViewData
from service.settings import DEMO_REGISTRY

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

REGISTRY: dict[str, Any] = yaml.safe_load(DEMO_REGISTRY.read_text())
VIEWS: dict[str, Any] = REGISTRY["views"]
BUNDLE: dict[str, list[str]] = REGISTRY["bundles"]["live_ranker"]
NUMERIC = ("int64", "double", "float", "bool")
MISSING_ROOM = 9_999_999  # not in the demo data
ROLES = {"user": "user", "rooms": "room", "pairs": "user_room"}


def features_of(view: str, *types: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, spec) of the features of `view` with one of `types`, in registry order."""
    return [(n, f) for n, f in VIEWS[view]["features"].items() if f["type"] in types]


def http_bundle(client: httpx.Client, user_id: int, room_ids: list[int]) -> dict[str, Any]:
    r = client.post("/v1/bundle", json={"bundle": "live_ranker", "user_id": user_id,
                                        "room_ids": room_ids})  # fmt: skip
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_bundle_shape(stub: pb_grpc.FeatureServiceStub) -> None:
    rooms = [1, 2, 3, 2, MISSING_ROOM]
    reply = stub.GetBundle(
        pb.GetBundleRequest(bundle="live_ranker", user_id=7, room_ids=rooms), timeout=5
    )
    assert (reply.bundle, reply.user_id, list(reply.room_ids)) == ("live_ranker", 7, rooms)
    for role, entity in ROLES.items():
        blocks = getattr(reply, role)
        assert [b.view for b in blocks] == BUNDLE[entity]
        for block in blocks:
            rows = 1 if role == "user" else len(rooms)
            check_block(block, rows)
    room = reply.rooms[0]
    assert room.status[4] == pb.DEFAULTED and room.age_ms[4] == -1
    assert all(s in (pb.FOUND, pb.STALE) for s in room.status[:4])
    matrix = np.frombuffer(room.numeric, "<f4").reshape(len(rooms), -1)
    assert (matrix[1] == matrix[3]).all()  # duplicates kept, same row
    defaults = [float(f["default"]) for _, f in features_of("room_stats", *NUMERIC)]
    assert matrix[4].tolist() == defaults


def check_block(block: pb.ViewBlock, rows: int) -> None:
    """A block's columns match the registry and carry `rows` rows each."""
    numeric = [n for n, _ in features_of(block.view, *NUMERIC)]
    assert list(block.numeric_names) == numeric
    assert len(block.numeric) == rows * len(numeric) * 4
    vectors = features_of(block.view, "float_vector")
    assert [(v.name, v.dim) for v in block.vectors] == [(n, f["dim"]) for n, f in vectors]
    assert all(len(v.values) == rows * v.dim * 4 for v in block.vectors)
    assert [s.name for s in block.strings] == [n for n, _ in features_of(block.view, "string")]
    assert all(len(s.values) == rows for s in block.strings)
    assert len(block.status) == len(block.age_ms) == rows
    for status, age in zip(block.status, block.age_ms, strict=True):
        assert status != pb.STATUS_UNSPECIFIED
        assert (age == -1) == (status in (pb.DEFAULTED, pb.UNAVAILABLE))


def assert_same(view: ViewData, http_entities: list[dict[str, Any]]) -> None:
    """The gRPC rows of one view carry the values, statuses of the HTTP entities."""
    name = view.view
    assert len(view) == len(http_entities)
    for n, entity in enumerate(http_entities):
        features = entity["features"]
        assert pb.Status.Name(int(view.status[n])) == entity["status"][name]
        want = [np.float32(features[f"{name}.{k}"]) for k in view.numeric_names]
        assert view.numeric[n].tolist() == want, (name, n)
        for k, column in view.strings.items():
            assert column[n] == features[f"{name}.{k}"]
        for k, matrix in view.vectors.items():
            assert matrix[n].tolist() == np.float32(features[f"{name}.{k}"]).tolist()


def test_bundle_same_values_as_http(ranker: LivefeatClient, client: httpx.Client) -> None:
    rooms = [5, 1, 17, 5, 200, MISSING_ROOM]
    for user_id in (7, 1000, 424_242):  # 424242: no such user (DEFAULTED)
        got = ranker.get_bundle(user_id, rooms, timeout=5)
        want = http_bundle(client, user_id, rooms)
        assert list(got.user) == BUNDLE["user"]
        for view in got.user.values():
            assert_same(view, [want["user"]])
        for view in got.rooms.values():
            assert_same(view, want["rooms"])
        for view in got.pairs.values():
            assert_same(view, want["pairs"])


def test_pairs_found_where_stored(ranker: LivefeatClient, client: httpx.Client) -> None:
    # Some user has stored pairs among the most popular rooms: both APIs agree on which.
    rooms = list(range(1, 41))
    for user_id in range(1, 30):
        pairs = ranker.get_bundle(user_id, rooms, timeout=5).pairs["user_room_affinity"]
        if (pairs.status == pb.FOUND).any():
            assert_same(pairs, http_bundle(client, user_id, rooms)["pairs"])
            return
    pytest.fail("no stored pair for users 1..29 and rooms 1..40 in the demo data")


def test_get_features_rooms_and_pairs(ranker: LivefeatClient) -> None:
    rooms = [3, 9, 3, MISSING_ROOM]
    bundle = ranker.get_bundle(11, rooms, timeout=5)
    got = ranker.get_features("room_stats", rooms, timeout=5)
    want = bundle.rooms["room_stats"]
    assert got.numeric.tobytes() == want.numeric.tobytes()
    assert got.status.tolist() == want.status.tolist()
    assert got.strings == want.strings
    pairs = ranker.get_features("user_room_affinity", rooms, user_ids=[11] * 4, timeout=5)
    assert pairs.numeric.tobytes() == bundle.pairs["user_room_affinity"].numeric.tobytes()
    assert pairs.numeric.shape == (4, 3) and pairs.numeric.dtype == np.float32


def test_get_features_echoes_ids(stub: pb_grpc.FeatureServiceStub) -> None:
    reply = stub.GetFeatures(
        pb.GetFeaturesRequest(view="user_room_affinity", ids=[4, 5], user_ids=[2, 3]), timeout=5
    )
    assert (list(reply.ids), list(reply.user_ids)) == ([4, 5], [2, 3])
    assert reply.block.view == "user_room_affinity"
    check_block(reply.block, 2)


def test_tiny_deadline_answers_in_time_or_exceeds(ranker: LivefeatClient) -> None:
    # 1 ms is about what grpc itself takes: either the server answers in time (rows
    # not read in time UNAVAILABLE) or the call fails DEADLINE_EXCEEDED; nothing else.
    codes = set()
    for n in range(20):
        try:
            got = ranker.get_bundle(3, [150 + n, 151 + n], timeout=0.001)
            codes.add(grpc.StatusCode.OK)
            assert got.rooms["room_stats"].status.tolist() != [0, 0]
        except grpc.RpcError as exc:
            codes.add(exc.code())
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}


def test_health_says_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "livefeat.v1.FeatureService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="livefeat.v1.FeatureService"),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(asks), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"livefeat.v1.FeatureService", "grpc.health.v1.Health"} <= names
    files = described.file_descriptor_response.file_descriptor_proto
    assert any(b"livefeat/v1/livefeat.proto" in f for f in files)


def test_requests_are_counted_per_rpc_and_code(
    stub: pb_grpc.FeatureServiceStub, client: httpx.Client
) -> None:
    def count(route: str, code: str) -> float:
        text = client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "livefeat_requests_total" and s.labels == {
                    "transport": "grpc", "route": route, "code": code,
                }:  # fmt: skip
                    return float(s.value)
        return 0.0

    ok, bad = count("GetBundle", "OK"), count("GetBundle", "NOT_FOUND")
    stub.GetBundle(pb.GetBundleRequest(bundle="live_ranker", user_id=1, room_ids=[1]), timeout=5)
    with pytest.raises(grpc.RpcError):
        stub.GetBundle(pb.GetBundleRequest(bundle="nope", user_id=1, room_ids=[1]), timeout=5)
    assert count("GetBundle", "OK") == ok + 1
    assert count("GetBundle", "NOT_FOUND") == bad + 1
