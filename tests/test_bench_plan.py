"""Tests of the benchmark's plan (loadtest/plan.py), command line and pure helpers."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from loadtest import bench, prepare
from loadtest.plan import FULL_CASES, QUICK_CASES, livefeat_case, plan_from


def test_livefeat_case_names_its_server_requests_and_baseline() -> None:
    case = livefeat_case("grpc-cold-100")
    assert (case.name, case.kind, case.transport, case.store, case.candidates) == (
        "livefeat-grpc-cold-100", "livefeat", "grpc", "cold", 100,
    )  # fmt: skip
    assert (case.server, case.requests, case.client, case.baseline) == (
        "livefeat-cold", "bundle-100", "grpc", "echo-grpc-100",
    )  # fmt: skip
    assert livefeat_case("http-embedded-500").client == "http1"
    for bad in ("grpc-cold", "ftp-cold-100", "grpc-hot-100", "grpc-cold-200"):
        with pytest.raises(ValueError):
            livefeat_case(bad)


def test_quick_plan() -> None:
    plan = plan_from(bench.parser().parse_args(["--quick"]))
    assert (plan.duration_s, plan.warmup_s, plan.repetitions, plan.concurrency) == (3, 3, 1, [1, 8])  # fmt: skip
    assert plan.redis_rows == "requested" and plan.n_requests == 2000
    assert not plan.redis_memory
    assert plan_from(bench.parser().parse_args(["--quick", "--redis-memory"])).redis_memory
    assert [c.name for c in plan.cases.values() if c.kind == "livefeat"] == [
        f"livefeat-{c}" for c in QUICK_CASES
    ]
    assert sorted(c.name for c in plan.cases.values() if c.kind == "echo") == [
        "echo-grpc-100", "echo-http-100",
    ]  # fmt: skip
    assert plan.stores == ["embedded", "cold"]
    assert len(list(plan.schedule())) == 10  # 5 cases x 2 concurrencies


def test_full_plan_and_schedule() -> None:
    plan = plan_from(bench.parser().parse_args([]))
    assert (plan.duration_s, plan.warmup_s, plan.repetitions, plan.concurrency) == (20, 3, 3, [1, 8, 32])  # fmt: skip
    assert plan.redis_rows == "all" and plan.grpc_channels == "per-slot" and plan.redis_memory
    assert not plan_from(bench.parser().parse_args(["--no-redis-memory"])).redis_memory
    assert plan.grpc_deadline_s == 1.0
    assert {c.name for c in plan.cases.values() if c.kind == "livefeat"} == {
        f"livefeat-{c}" for c in FULL_CASES
    }
    assert plan.candidates() == [100, 500]
    assert plan.candidates(["redis", "cold"]) == [100]
    schedule = list(plan.schedule())
    assert len(schedule) == 3 * 3 * 8  # repetitions x concurrencies x cases
    assert Counter(case.name for _, _, case in schedule) == {name: 9 for name in plan.cases}
    # A group (a baseline and its cases) runs together, and who goes first rotates.
    groups = plan.groups()
    assert [c.name for c in groups[0]] == [
        "echo-grpc-100", "livefeat-grpc-embedded-100", "livefeat-grpc-redis-100",
        "livefeat-grpc-cold-100",
    ]  # fmt: skip
    firsts = [schedule[i][2].name for i in (0, 24, 48)]  # first run of each repetition
    assert firsts == ["echo-grpc-100", "livefeat-grpc-embedded-100", "livefeat-grpc-redis-100"]


def test_cases_and_candidates_flags() -> None:
    args = bench.parser().parse_args(["--cases", "http-cold-500", "grpc-redis-100", "--candidates", "500"])  # fmt: skip
    plan = plan_from(args)
    assert list(plan.cases) == ["echo-http-500", "livefeat-http-cold-500"]
    assert plan_from(bench.parser().parse_args(["--grpc-deadline", "0"])).grpc_deadline_s is None
    with pytest.raises(SystemExit):
        plan_from(bench.parser().parse_args(["--cases", "grpc-cold-100", "--candidates", "500"]))
    with pytest.raises(SystemExit):
        bench.parser().parse_args(["--cases", "grpc-lukewarm-100"])


def test_encoders() -> None:
    from service._gen.livefeat.v1 import livefeat_pb2 as pb

    raw = prepare.ENCODERS["grpc"](7, [3, 1, 2])
    assert pb.GetBundleRequest.FromString(raw) == pb.GetBundleRequest(
        bundle="live_ranker", user_id=7, room_ids=[3, 1, 2]
    )
    http = prepare.ENCODERS["http1"](7, [3, 1, 2])
    head, body = http.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v1/bundle HTTP/1.1\r\n")
    assert b"Content-Length: %d" % len(body) in head
    assert body == b'{"bundle":"live_ranker","user_id":7,"room_ids":[3,1,2]}'


def test_clone_rocksdb_links_sst_files_and_copies_the_rest(tmp_path: Path) -> None:
    src = tmp_path / "src" / "rocksdb"
    src.mkdir(parents=True)
    for name in ("000009.sst", "MANIFEST-000005", "CURRENT", "OPTIONS-000007", "LOCK", "LOG"):
        (src / name).write_text(name)
    prepare.clone_rocksdb(tmp_path / "src", tmp_path / "dst")
    dst = tmp_path / "dst" / "rocksdb"
    assert sorted(p.name for p in dst.iterdir()) == [
        "000009.sst", "CURRENT", "MANIFEST-000005", "OPTIONS-000007",
    ]  # fmt: skip
    assert os.path.samefile(src / "000009.sst", dst / "000009.sst")  # linked
    assert not os.path.samefile(src / "CURRENT", dst / "CURRENT")  # copied
    assert (dst / "CURRENT").read_text() == "CURRENT"


def test_parse_tier_counters() -> None:
    text = "\n".join([
        "# HELP livefeat_tier_keys_total Keys asked of a storage tier",
        'livefeat_tier_keys_total{result="hit",tier="l1"} 10.0',
        'livefeat_tier_keys_total{result="miss",tier="l1"} 5.0',
        'livefeat_tier_keys_total{result="hit",tier="redis"} 5.0',
        'livefeat_tier_operation_duration_seconds_count{op="put",tier="rocksdb"} 3.0',
        'livefeat_tier_operation_duration_seconds_bucket{le="0.1",op="put",tier="rocksdb"} 3.0',
        'livefeat_write_behind_dropped_total{tier="rocksdb"} 0.0',
        'livefeat_requests_total{code="200",route="/v1/bundle",transport="http"} 7.0',
    ])  # fmt: skip
    assert prepare.parse_tier_counters(text) == {
        "keys": {"l1": {"hit": 10.0, "miss": 5.0}, "redis": {"hit": 5.0}},
        "calls": {"rocksdb put": 3.0},
        "write_behind_dropped": {"rocksdb": 0.0},
    }


def test_check_served_refuses_defaulted_users_or_rooms(tmp_path: Path) -> None:
    from loadtest.runner import check_served

    good = {"user": {"FOUND": 25}, "rooms": {"FOUND": 2000, "STALE": 500}, "pairs": {"DEFAULTED": 2400, "FOUND": 100}}  # fmt: skip
    check_served("case", good, tmp_path)  # absent pairs are normal
    bad = {"user": {"DEFAULTED": 25}, "rooms": {"DEFAULTED": 2500}, "pairs": {"DEFAULTED": 2500}}
    with pytest.raises(RuntimeError, match="generate it again"):
        check_served("case", bad, tmp_path)
