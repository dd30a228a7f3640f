"""Fuzzing the gRPC front end with raw bytes: every method, never INTERNAL or UNKNOWN.

Requests are sent through a generic `unary_unary` / `stream_unary` with no
serializer, so the server sees exactly the bytes drawn: well-formed messages
with random fields (real and unknown views and features, every value kind,
ids in a small range so that rows collide), the same bytes mutated (cut,
extended, bytes changed), and plain random bytes. Afterwards what the server
stores for the fuzzed ids must be what the acknowledged pushes wrote (newest
event wins, features left out kept): nothing of a refused push, nothing half
written. Expected values come from the pushes' own content (parsed from the
bytes sent), never from another endpoint of the server.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service.core.registry import load_registry
from service.grpc.convert import push_rows
from service.settings import DEMO_REGISTRY
from tests.conftest import LiveServer

pytestmark = pytest.mark.process

METHOD = "/livefeat.v1.FeatureService/"
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
REGISTRY = load_registry(DEMO_REGISTRY)
VIEWS = ["room_stats", "user_profile", "user_room_affinity"]
IDS = st.integers(790_000, 790_005)
T0 = 1_790_000_000_000
EXAMPLES = 150


def values() -> st.SearchStrategy[pb.Value]:
    f32 = st.floats(width=32)
    return st.one_of(
        st.builds(lambda v: pb.Value(int64_value=v), st.integers(-(2**63), 2**63 - 1)),
        st.builds(lambda v: pb.Value(double_value=v), st.floats()),
        st.builds(lambda v: pb.Value(float_value=v), f32),
        st.builds(lambda v: pb.Value(string_value=v), st.text(max_size=12)),
        st.builds(lambda v: pb.Value(bool_value=v), st.booleans()),
        st.builds(
            lambda v: pb.Value(vector_value=pb.FloatVector(values=v)), st.lists(f32, max_size=34)
        ),
        st.just(pb.Value()),  # no kind set
    )


def valid_value(feature: Any) -> st.SearchStrategy[pb.Value]:
    """A value the feature takes (at its limits now and then)."""
    f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
    if feature.type == "int64":
        return st.integers(-(2**63), 2**63 - 1).map(lambda v: pb.Value(int64_value=v))
    if feature.type in ("double", "float"):
        return f32.map(lambda v: pb.Value(double_value=v))
    if feature.type == "bool":
        return st.booleans().map(lambda v: pb.Value(bool_value=v))
    if feature.type == "string":
        return st.text(max_size=12).map(lambda v: pb.Value(string_value=v))
    vectors = st.lists(f32, min_size=feature.dim, max_size=feature.dim)
    return vectors.map(lambda v: pb.Value(vector_value=pb.FloatVector(values=v)))


@st.composite
def push_requests(draw: st.DrawFn) -> pb.PushFeaturesRequest:
    view = draw(st.sampled_from([*VIEWS, "nope", ""]))
    plan = REGISTRY.views.get(view)
    names = [f.name for f in plan.codec.features] if plan else ["viewer_count"]
    n_ids = 2 if plan and len(plan.key_columns) == 2 else 1
    keys = draw(st.lists(st.tuples(*[IDS] * n_ids), min_size=0, max_size=3, unique=True))
    rows = []
    for key in keys:
        # Now and then a wrong number of ids (refused; never a duplicate key in a batch).
        wrong = st.lists(IDS, max_size=3).filter(lambda ids, n=n_ids: len(ids) != n)
        ids = list(key) if draw(st.integers(0, 9)) else draw(wrong)
        pool = [*names, "nope"] if not draw(st.integers(0, 9)) else names
        chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))
        kinds = {f.name: f for f in plan.codec.features} if plan else {}
        row = pb.PushRow(id=ids)
        for n in chosen:
            good = n in kinds and draw(st.integers(0, 9)) > 0
            row.values[n].CopyFrom(draw(valid_value(kinds[n]) if good else values()))
        if draw(st.integers(0, 9)):
            row.event_time_ms = T0 + draw(st.integers(-1, 5))
        rows.append(row)
    return pb.PushFeaturesRequest(view=view, rows=rows)


def read_requests() -> st.SearchStrategy[Any]:
    ids = st.lists(st.integers(-(2**63), 2**63 - 1) | IDS, max_size=5)
    return st.one_of(
        st.builds(
            pb.GetBundleRequest,
            bundle=st.sampled_from(["live_ranker", "nope"]),
            user_id=IDS,
            room_ids=ids,
        ),
        st.builds(
            pb.GetFeaturesRequest, view=st.sampled_from([*VIEWS, "nope"]), ids=ids, user_ids=ids
        ),
    )


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    """`raw` as it is, cut, extended, with bytes changed, or replaced by random bytes."""
    how = draw(st.sampled_from(["same", "same", "cut", "extend", "change", "random"]))
    if how == "cut":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if how == "extend":
        return raw + draw(st.binary(min_size=1, max_size=16))
    if how == "change" and raw:
        out = bytearray(raw)
        for _ in range(draw(st.integers(1, 3))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if how == "random":
        return draw(st.binary(max_size=64))
    return raw


class Model:
    """What the server must store for the fuzzed ids, from the acknowledged pushes, in order."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, tuple[int, ...]], tuple[int, dict[str, Any]]] = {}

    def apply(self, request: pb.PushFeaturesRequest) -> None:
        plan = REGISTRY.views[request.view]
        before = dict(self.rows)  # a batch's partial rows merge with what was stored before it
        for row in push_rows(request.rows):
            ids = tuple(row["id"]) if isinstance(row["id"], list) else (row["id"],)
            key = (plan.name, ids)
            base = before.get(key)
            full = {**plan.codec.default_values, **(base[1] if base else {}), **row["values"]}
            if key not in self.rows or row["event_time_ms"] > self.rows[key][0]:
                self.rows[key] = (row["event_time_ms"], full)


def same(kind: str, got: Any, want: Any) -> bool:
    if kind in ("float", "float_vector"):
        return np.array_equal(np.float32(got), np.float32(want))
    if kind == "double":
        return float(got) == float(want)
    return bool(got == want)


def call(channel: grpc.Channel, method: str, raw: bytes) -> grpc.StatusCode:
    try:
        channel.unary_unary(METHOD + method, None, None)(raw, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_fuzzed_calls_never_fail_inside_and_pushes_write_whole_or_nothing(
    fuzz_server: LiveServer,
) -> None:
    model = Model()
    seen: set[tuple[str, tuple[int, ...]]] = set()
    codes: dict[str, set[str]] = {}
    with grpc.insecure_channel(fuzz_server.grpc_target) as channel:

        @settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
        @given(st.data())
        def fuzz(data: st.DataObject) -> None:
            kind = data.draw(st.sampled_from(["PushFeatures", "PushFeaturesStream", "read"]))
            if kind == "read":
                message = data.draw(read_requests())
                method = type(message).__name__.removesuffix("Request")
                code = call(channel, method, data.draw(mutated(message.SerializeToString())))
            elif kind == "PushFeatures":
                message = data.draw(push_requests())
                raw = data.draw(mutated(message.SerializeToString()))
                code = call(channel, "PushFeatures", raw)
                parsed = (
                    pb.PushFeaturesRequest.FromString(raw) if code is grpc.StatusCode.OK else None
                )
                for row in message.rows:
                    seen.add((message.view, tuple(row.id)))
                if parsed is not None:
                    model.apply(parsed)
            else:
                batches = [data.draw(push_requests()) for _ in range(data.draw(st.integers(1, 3)))]
                raws = [data.draw(mutated(m.SerializeToString())) for m in batches]
                stream = channel.stream_unary(METHOD + "PushFeaturesStream", None, None)
                done = len(raws)  # batches the server wrote before it answered
                try:
                    stream(iter(raws), timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                    field = dict(exc.trailing_metadata() or ()).get("livefeat-field", "")
                    match = re.match(r"batches\[(\d+)\]", field)
                    done = int(match.group(1)) if match else 0
                for raw in raws[:done]:
                    model.apply(pb.PushFeaturesRequest.FromString(raw))
                for message in batches:
                    seen.update((message.view, tuple(r.id)) for r in message.rows)
            codes.setdefault(kind, set()).add(code.name)
            assert code in ALLOWED, (kind, code)

        fuzz()
        # A few plain pushes among the fuzzed ones, so that the check below always has
        # acknowledged rows to look for, whatever the generated examples were.
        for i in range(3):
            value = pb.Value(int64_value=1000 + i)
            row = pb.PushRow(id=[790_100 + i], event_time_ms=1_790_000_000_000 + i,
                             values={"viewer_count": value})  # fmt: skip
            plain = pb.PushFeaturesRequest(view="room_stats", rows=[row])
            assert call(channel, "PushFeatures", plain.SerializeToString()) is grpc.StatusCode.OK
            model.apply(plain)
            seen.add(("room_stats", (790_100 + i,)))
    assert "OK" in codes.get("PushFeatures", set()), codes  # the fuzzing reached the write path
    assert len(model.rows) >= 3, model.rows
    check_stored(fuzz_server, model, seen)


def check_stored(server: LiveServer, model: Model, seen: set[tuple[str, tuple[int, ...]]]) -> None:
    """Every modelled row is stored exactly so; fuzzed ids nobody wrote are not stored."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for view, ids in seen - set(model.rows):
            plan = REGISTRY.views.get(view)
            if plan is None or len(ids) != len(plan.key_columns):
                continue
            got = http.get(f"/debug/entity/{view}/{':'.join(map(str, ids))}").json()
            assert got["tiers"]["rocksdb"] == {"present": False}, (view, ids, got)
        for (view, ids), (event_time, values) in model.rows.items():
            got = http.get(f"/debug/entity/{view}/{':'.join(map(str, ids))}").json()
            stored = got["tiers"]["rocksdb"]
            assert stored["present"], (view, ids)
            assert stored["event_time_ms"] == event_time, (view, ids, stored)
            kinds = {f.name: f.type for f in REGISTRY.views[view].codec.features}
            for name, want in values.items():
                assert same(kinds[name], stored["values"][name], want), (view, ids, name)
