"""`livefeat consume` against a real broker (Tansu) and a real redis-server: values
served equal the source messages' newest values, bad messages are dead-lettered with
their reason, offsets are committed, and a SIGKILL or a rebalance loses nothing."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.core.registry import load_registry
from service.settings import DEMO_REGISTRY
from tests.kafka.conftest import Consumer, committed, produce, read_topic
from tests.kafka.source import bad_messages, encode, expected, now_ms, room_updates
from tests.support.kafka_proc import KafkaBroker
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process

REGISTRY = load_registry(DEMO_REGISTRY)
PLAN = REGISTRY.views["room_stats"]


def wait_committed(
    broker: KafkaBroker, group: str, topic: str, total: int, timeout_s: float = 60.0
) -> None:
    """Wait until the group has committed all `total` messages of `topic`."""
    end = time.monotonic() + timeout_s
    done = -1
    while time.monotonic() < end:
        done = committed(broker.bootstrap, group, topic)
        if done == total:
            return
        time.sleep(0.2)
    raise AssertionError(f"committed {done} of {total} after {timeout_s} s")


def stored_rows(redis_server: RedisServer, rooms: list[int]) -> dict[int, Any]:
    """room -> (event time, values) as stored in Redis, decoded with the view's codec."""
    raw = redis_server.client().mget([PLAN.key(r) for r in rooms])
    return {
        r: PLAN.codec.decode_values(v) for r, v in zip(rooms, raw, strict=True) if v is not None
    }


def as_served(values: dict[str, Any]) -> dict[str, Any]:
    """Values as stored and served: vectors as float32 lists."""
    return {k: np.float32(v).tolist() if isinstance(v, list) else v for k, v in values.items()}


def test_values_served_are_the_newest_sent_and_bad_messages_are_dead_lettered(
    broker: KafkaBroker, redis_server: RedisServer, start_consumer: Callable[..., Consumer],
    start_server: Callable[..., Any], tmp_path: Path,
) -> None:  # fmt: skip
    topic, dlq, group = "rooms-a", "rooms-a-dead", "group-a"
    broker.create_topics(topic, partitions=2)
    broker.create_topics(dlq)
    rnd = random.Random(7)
    base = now_ms() - 120_000
    updates = room_updates(PLAN, rnd, rooms=150, updates=6, base_ms=base)
    messages = [encode(PLAN, *u) for u in updates]
    bad = bad_messages(PLAN, base)
    for _, message in bad:  # interleaved with the good ones of the same batches
        messages.insert(rnd.randrange(len(messages)), message)
    produce(broker.bootstrap, topic, messages)
    consumer = start_consumer(
        "--kafka", broker.bootstrap, "--topic", topic, "--view", PLAN.name, "--group", group,
        "--dead-letter-topic", dlq, "--redis-url", redis_server.url,
    )  # fmt: skip
    wait_committed(broker, group, topic, len(messages))

    def outcome(name: str) -> float:
        return consumer.metric("livefeat_kafka_messages_total", topic=topic, outcome=name)

    assert outcome("consumed") == len(messages)
    assert outcome("bad") == len(bad)
    assert outcome("written") + outcome("ignored") == len(updates)
    for reason, count in Counter(r for r, _ in bad).items():
        assert consumer.metric("livefeat_kafka_bad_messages_total", topic=topic, reason=reason) == count  # fmt: skip
    assert consumer.metric("livefeat_kafka_dead_lettered_total", topic=topic) == len(bad)
    assert consumer.metric("livefeat_kafka_consumer_lag_messages", topic=topic) == 0
    assert consumer.terminate() == 0, consumer.log()

    letters = read_topic(broker.bootstrap, dlq, len(bad))
    assert len(letters) == len(bad)
    sent = {message: reason for reason, message in bad}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["livefeat-reason"] == sent[(letter.key, letter.value)]
        assert headers["livefeat-source-topic"] == topic
        assert headers["livefeat-field"] and headers["livefeat-detail"]
        assert int(headers["livefeat-source-offset"]) >= 0
        assert int(headers["livefeat-source-partition"]) in (0, 1)

    # What a serving replica over the same Redis answers equals the source's newest values.
    want = expected(PLAN, updates)
    data_dir = tmp_path / "serve-data"
    data_dir.mkdir()
    server = start_server(data_dir, "--redis-url", redis_server.url)
    rooms = sorted(want)
    got = httpx.post(f"{server.url}/v1/features", json={"view": PLAN.name, "ids": rooms}, timeout=10).json()  # fmt: skip
    for room, row in zip(rooms, got["rows"], strict=True):
        assert row["id"] == room
        assert row["features"] == {f"{PLAN.name}.{k}": v for k, v in as_served(want[room][1]).items()}  # fmt: skip
        assert row["status"][PLAN.name] in ("FOUND", "STALE")
    assert {r: t for r, (t, _) in stored_rows(redis_server, rooms).items()} == {r: t for r, (t, _) in want.items()}  # fmt: skip


def test_a_sigkill_mid_stream_and_a_rebalance_lose_nothing(
    broker: KafkaBroker, redis_server: RedisServer, start_consumer: Callable[..., Consumer]
) -> None:
    topic, group = "rooms-k", "group-k"
    broker.create_topics(topic, partitions=4)
    rnd = random.Random(11)
    base = now_ms() - 120_000
    updates = room_updates(PLAN, rnd, rooms=400, updates=50, base_ms=base)
    first, second, third = updates[:10_000], updates[10_000:14_000], updates[14_000:]
    produce(broker.bootstrap, topic, [encode(PLAN, *u) for u in first])
    args = ("--kafka", broker.bootstrap, "--topic", topic, "--view", PLAN.name, "--group", group,
            "--redis-url", redis_server.url)  # fmt: skip
    # The killed consumer's partitions wait for its session to time out: 3 s, not 10.
    env = {"LIVEFEAT_KAFKA_SESSION_TIMEOUT_S": "3"}
    # Small batches: it commits often, so the kill lands between two commits.
    one = start_consumer(*args, env={**env, "LIVEFEAT_KAFKA_BATCH_MAX_MESSAGES": "500"})
    while committed(broker.bootstrap, group, topic) == 0:
        time.sleep(0.02)
    one.kill()
    done = committed(broker.bootstrap, group, topic)
    assert 0 < done < len(first), "the kill came too late to be mid-stream"
    produce(broker.bootstrap, topic, [encode(PLAN, *u) for u in second])

    two = start_consumer(*args, env=env)
    produce(broker.bootstrap, topic, [encode(PLAN, *u) for u in third[:2000]])
    three = start_consumer(*args, env=env)  # a rebalance: two gives up partitions to three
    produce(broker.bootstrap, topic, [encode(PLAN, *u) for u in third[2000:]])
    wait_committed(broker, group, topic, len(updates))
    assert two.terminate() == 0 and three.terminate() == 0

    want = expected(PLAN, updates)
    got = stored_rows(redis_server, sorted(want))
    assert len(got) == len(want)
    for room, (t, values) in want.items():
        assert got[room] == (t, as_served(values)), room


def test_with_redis_down_nothing_is_committed_the_lag_shows_and_nothing_is_lost(
    broker: KafkaBroker, redis_server: RedisServer, start_consumer: Callable[..., Consumer]
) -> None:
    topic, group = "rooms-r", "group-r"
    broker.create_topics(topic, partitions=2)
    updates = room_updates(PLAN, random.Random(5), rooms=100, updates=5, base_ms=now_ms() - 60_000)
    produce(broker.bootstrap, topic, [encode(PLAN, *u) for u in updates])
    redis_server.stop()
    consumer = start_consumer("--kafka", broker.bootstrap, "--topic", topic, "--view", PLAN.name,
                              "--group", group, "--redis-url", redis_server.url, ready=False)  # fmt: skip
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            lag = consumer.metric("livefeat_kafka_consumer_lag_messages", topic=topic)
            failed = consumer.metric("livefeat_kafka_failures_total", step="write")
        except httpx.TransportError:
            lag = failed = 0
        if lag == len(updates) and failed >= 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no lag or write failures shown: {consumer.log()}")
    assert consumer.get("/readyz").status_code == 503  # no storage tier answers
    assert committed(broker.bootstrap, group, topic) == 0
    redis_server.restart()  # empty, on the same port: the retries now succeed
    wait_committed(broker, group, topic, len(updates))
    assert consumer.metric("livefeat_kafka_consumer_lag_messages", topic=topic) == 0
    want = expected(PLAN, updates)
    got = stored_rows(redis_server, sorted(want))
    assert {r: v for r, v in got.items()} == {r: (t, as_served(v)) for r, (t, v) in want.items()}
