"""The served-feature log: records equal the HTTP answer, sampling, a bounded queue that
drops and counts, file naming and rotation. Over a real RocksDB core; clocks injected."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from service import metrics
from service.core.registry import load_registry
from service.core.service import BundleResult, FeatureService
from service.http.encode import encode_bundle
from service.served_log import FileSink, ServedLog, encode_record
from service.settings import DEMO_REGISTRY
from service.store.factory import assemble
from service.store.l1 import L1Cache
from service.store.rocks import RocksTier

NOW = 1_800_000_000_000
NAME = re.compile(r"^served-\d{8}T\d{6}-\d+\.jsonl$")


@pytest.fixture
def core(tmp_path: Path) -> Iterator[FeatureService]:
    store = assemble(L1Cache(1000, 60.0), [RocksTier(tmp_path / "db")])
    core = FeatureService(load_registry(DEMO_REGISTRY), store, clock_ms=lambda: NOW)
    yield core
    asyncio.run(store.close())


def bundle(core: FeatureService) -> BundleResult:
    async def main() -> BundleResult:
        await core.push("room_stats", [
            {"id": 5, "event_time_ms": NOW - 1000, "values": {"viewer_count": 12, "gift_value_1m": 0.1}},
            {"id": 9, "event_time_ms": NOW - 7_200_000, "values": {"quality_score": 0.3}},
        ])  # fmt: skip
        await core.push("user_profile", [{"id": 7, "event_time_ms": NOW - 50, "values": {"country": "DE", "ctr_7d": 0.12}}])  # fmt: skip
        await core.push("user_room_affinity", [{"id": [7, 9], "event_time_ms": NOW - 5, "values": {"gifts_30d": 3}}])  # fmt: skip
        return await core.get_bundle("live_ranker", 7, [9, 5, 4, 9])

    return asyncio.run(main())


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    async def write(self, records: Any) -> None:
        self.records += records

    async def close(self) -> None:
        pass


def test_a_record_carries_the_http_answer_with_ages_in_request_order(core: FeatureService) -> None:
    result = bundle(core)
    record = orjson.loads(encode_record(result, "req-1", NOW + 3))
    http = orjson.loads(encode_bundle(result))
    assert list(record) == ["format", "request_id", "time_ms", "bundle", "user_id", "room_ids",
                            "user", "rooms", "pairs"]  # fmt: skip
    assert (record["format"], record["request_id"], record["time_ms"]) == (1, "req-1", NOW + 3)
    assert (record["bundle"], record["user_id"], record["room_ids"]) == (
        "live_ranker",
        7,
        [9, 5, 4, 9],
    )
    strip = lambda e: {k: v for k, v in e.items() if k != "age_ms"}  # noqa: E731
    assert strip(record["user"]) == http["user"]
    assert [strip(r) for r in record["rooms"]] == http["rooms"]
    assert [strip(p) for p in record["pairs"]] == http["pairs"]
    assert [r["id"] for r in record["rooms"]] == [9, 5, 4, 9]
    assert [p["id"] for p in record["pairs"]] == [[7, 9], [7, 5], [7, 4], [7, 9]]
    assert record["user"]["age_ms"] == {"user_profile": 50}
    assert [r["age_ms"]["room_stats"] for r in record["rooms"]] == [7_200_000, 1000, -1, 7_200_000]
    assert [r["status"]["room_stats"] for r in record["rooms"]] == ["STALE", "FOUND", "DEFAULTED", "STALE"]  # fmt: skip
    assert record["pairs"][0]["features"]["user_room_affinity.gifts_30d"] == 3
    assert record["pairs"][1]["age_ms"] == {"user_room_affinity": -1}
    assert record["user"]["features"]["user_profile.country"] == "DE"


def test_only_the_sampled_fraction_is_logged(core: FeatureService) -> None:
    result = bundle(core)
    draws = iter([0.05, 0.5, 0.09, 0.1, 0.99])
    sink = Recorder()

    async def main() -> None:
        served = ServedLog([sink], 0.1, 100, draw=lambda: next(draws), clock_ms=lambda: NOW)
        served.start()
        calls = []
        for i in range(5):
            served.offer(result, lambda i=i: calls.append(i) or f"r{i}")
        await served.close()
        assert calls == [0, 2]  # request ids are made only for sampled answers

    asyncio.run(main())
    assert [orjson.loads(v)["request_id"] for _, v in sink.records] == ["r0", "r2"]
    assert [k for k, _ in sink.records] == [b"7", b"7"]


def test_a_full_queue_drops_and_counts_without_waiting(core: FeatureService) -> None:
    result = bundle(core)
    dropped = metrics.SERVED_LOG_RECORDS.labels("dropped")
    sink = Recorder()

    async def main() -> None:
        served = ServedLog([sink], 1.0, 3, clock_ms=lambda: NOW)
        before = dropped._value.get()
        for i in range(5):  # the sender has not run yet: three fit, two are dropped
            served.offer(result, f"r{i}")
        assert dropped._value.get() - before == 2
        served.start()
        await served.close()

    asyncio.run(main())
    assert [orjson.loads(v)["request_id"] for _, v in sink.records] == ["r0", "r1", "r2"]


def test_the_file_sink_names_files_and_rotates_by_age_and_size(tmp_path: Path) -> None:
    clock = [1_764_000_000.0]  # 2025-11-24T16:00:00Z
    sink = FileSink(tmp_path / "served", max_bytes=100, max_age_s=3600, clock=lambda: clock[0])

    async def main() -> None:
        await sink.write([(b"7", b'{"a":1}'), (b"7", b'{"a":2}')])
        clock[0] += 3599
        await sink.write([(b"7", b'{"a":3}')])
        clock[0] += 1  # an hour after the first file opened
        await sink.write([(b"7", b'{"a":4,"pad":"' + b"x" * 120 + b'"}')])
        clock[0] += 1
        await sink.write([(b"7", b'{"a":5}')])  # the last file is over 100 bytes
        await sink.close()

    asyncio.run(main())
    files = sorted((tmp_path / "served").iterdir())
    assert [f.name.split("-")[1] for f in files] == [
        "20251124T160000",
        "20251124T170000",
        "20251124T170001",
    ]
    assert all(NAME.match(f.name) for f in files)
    lines = [[orjson.loads(line)["a"] for line in f.read_text().splitlines()] for f in files]
    assert lines == [[1, 2, 3], [4], [5]]
