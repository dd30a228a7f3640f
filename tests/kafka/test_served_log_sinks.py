"""`livefeat serve --log-served-*`: sampled bundle answers reach a real Kafka topic and the
JSON Lines files, from both front ends, equal to what HTTP served."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service._gen.livefeat.v1 import livefeat_pb2_grpc as pb_grpc
from tests.kafka.conftest import read_topic
from tests.support.kafka_proc import KafkaBroker

pytestmark = pytest.mark.process

BUNDLE = {"bundle": "live_ranker", "user_id": 7, "room_ids": [3, 1, 2, 3]}


def without_ages(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if k != "age_ms"}


def test_sampled_answers_reach_kafka_and_files(
    broker: KafkaBroker, start_server: Callable[..., Any], fresh_data_dir: Path, tmp_path: Path
) -> None:
    topic = "served"
    broker.create_topics(topic)
    out = tmp_path / "served"
    server = start_server(fresh_data_dir, "--kafka", broker.bootstrap, "--log-served-topic", topic,
                          "--log-served-dir", str(out), "--log-served-fraction", "1")  # fmt: skip
    http = httpx.post(f"{server.url}/v1/bundle", json=BUNDLE, headers={"X-Request-Id": "http-1"})
    assert http.status_code == 200
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.FeatureServiceStub(channel)
        stub.GetBundle(pb.GetBundleRequest(bundle="live_ranker", user_id=7, room_ids=[3, 1, 2, 3]),
                       metadata=[("x-request-id", "grpc-1")], timeout=10)  # fmt: skip
    records = read_topic(broker.bootstrap, topic, 2)
    assert server.stop() == 0  # the drain flushes the file sink
    files = list(out.iterdir())
    assert len(files) == 1 and files[0].name.startswith("served-") and files[0].suffix == ".jsonl"
    lines = [orjson.loads(line) for line in files[0].read_bytes().splitlines()]
    from_kafka = [orjson.loads(r.value) for r in records]
    assert [r.key for r in records] == [b"7", b"7"]
    for got in (lines, from_kafka):
        by_id = {r["request_id"]: r for r in got}
        assert sorted(by_id) == ["grpc-1", "http-1"]
        answer = http.json()
        for record in by_id.values():
            assert record["format"] == 1 and record["room_ids"] == BUNDLE["room_ids"]
            assert without_ages(record["user"]) == answer["user"]
            assert [without_ages(r) for r in record["rooms"]] == answer["rooms"]
            assert [without_ages(p) for p in record["pairs"]] == answer["pairs"]
            assert set(record["user"]["age_ms"]) == {"user_profile"}
