"""Batches checked column-wise (MessageParser.check_batch) and written with
FeatureService.write_batch: each message gets the outcome `parse` gives it on its own,
and the stored rows are those of the one-message-at-a-time path and of the source data.

Batches mix complete and partial rows, every kind of bad message, several messages of
one entity (equal event times too), fields in any order, and values the column checks
do not take outright (ints for doubles, long strings, ...)."""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.codec import FLOAT32_MAX, INT64_MAX, INT64_MIN, Feature
from service.core.registry import ViewPlan, parse_registry
from service.core.service import FeatureService
from service.kafka.messages import BadMessage, CheckedBatch, MessageParser
from service.store.factory import assemble
from service.store.l1 import L1Cache
from service.store.rocks import RocksTier

REGISTRY = parse_registry("""
entities:
  room: {key: room_id}
  user_room: {key: [user_id, room_id]}
views:
  rooms:
    entity: room
    max_age_s: 60
    storage_ttl_s: 600
    features:
      n: {type: int64, default: 3}
      live: {type: bool, default: false}
      name: {type: string, default: "none"}
      d: {type: double, default: 0.5}
      emb: {type: float_vector, dim: 3}
      f: {type: float, default: 0.25}
  pairs:
    entity: user_room
    max_age_s: 60
    storage_ttl_s: 600
    features:
      visits: {type: int64, default: 0}
      score: {type: double, default: 0.0}
      tag: {type: string, default: ""}
bundles:
  b:
    room: [rooms]
""")
NOW = 1_800_000_000_000
BASE = NOW - 60_000
Message = tuple[bytes | None, bytes | None]


def good_value(rnd: random.Random, f: Feature) -> Any:
    if f.type == "int64":
        return rnd.choice([rnd.randint(-(10**6), 10**6), INT64_MAX, INT64_MIN, 0])
    if f.type in ("double", "float"):  # ints are numbers too; 3e38 fits a float32
        return rnd.choice([rnd.randint(0, 800) / 8, rnd.randint(-5, 5), 3e38, -1e-3])
    if f.type == "bool":
        return rnd.random() < 0.5
    if f.type == "string":  # 20,000 characters: over the column check's fast bound, valid
        return rnd.choice(["", "music", "é€😀", "x" * 20_000])
    return [rnd.choice([rnd.randint(-64, 64) / 8, rnd.randint(-3, 3)]) for _ in range(f.dim)]


def bad_value(rnd: random.Random, f: Feature) -> Any:
    if f.type == "int64":
        return rnd.choice(["1", 1.5, True, 2**63, None])
    if f.type == "double":
        return rnd.choice(["x", True, None, [1.0]])
    if f.type == "float":
        return rnd.choice([1e39, -FLOAT32_MAX * 2, "x", False])
    if f.type == "bool":
        return rnd.choice([1, 0, "true", None])
    if f.type == "string":
        return rnd.choice([5, None, "é" * 40_000])  # 80,000 bytes of UTF-8
    return rnd.choice([[1.0] * (f.dim + 1), [True] * f.dim, ["1"] * f.dim, None, 1.0, [1e39] * f.dim])  # fmt: skip


def entity(plan: ViewPlan, rnd: random.Random) -> tuple[int, ...]:
    return tuple(rnd.randint(1, 4) for _ in plan.key_columns)


def key_text(ids: tuple[int, ...]) -> bytes:
    return b":".join(b"%d" % i for i in ids)


def make_batch(
    plan: ViewPlan, rnd: random.Random, n: int, p_bad: float, p_partial: float
) -> tuple[list[Message], list[Any]]:
    """Messages, and per message what it is: ("good", ids, t, values) or ("bad", reason)."""
    features = plan.codec.features
    messages: list[Message] = []
    truth: list[Any] = []
    for _ in range(n):
        ids = entity(plan, rnd)
        t = BASE + rnd.randint(0, 6)  # few distinct times: equal ones in one batch
        chosen = rnd.sample(features, rnd.randint(1, len(features))) if rnd.random() < p_partial else features  # fmt: skip
        values = {f.name: good_value(rnd, f) for f in chosen}
        body: dict[str, Any] = {**dict(zip(plan.key_columns, ids, strict=True)), "event_time_ms": t, **values}  # fmt: skip
        key: bytes | None = key_text(ids)
        reason = None
        if rnd.random() < p_bad:
            reason = rnd.choice(["not_json", "not_object", "bad_key", "key_mismatch", "bad_event_time",
                                 "unknown_feature", "bad_value", "no_features"])  # fmt: skip
            column = rnd.choice(plan.key_columns)
            if reason == "bad_key":
                body[column] = rnd.choice(["1", -1, 1.0, None, True])
            elif reason == "key_mismatch":
                key = rnd.choice([None, key + b"0", b""])
            elif reason == "bad_event_time":
                body["event_time_ms"] = rnd.choice(["now", -1, 1.5, None, NOW + 10**7, 2**48])
            elif reason == "unknown_feature":
                body["nope"] = 1
            elif reason == "bad_value":
                f = rnd.choice(chosen)
                body[f.name] = bad_value(rnd, f)
            elif reason == "no_features":
                body = {k: v for k, v in body.items() if k in (*plan.key_columns, "event_time_ms")}
        if rnd.random() < 0.2:  # the same fields in another order
            items = list(body.items())
            rnd.shuffle(items)
            body = dict(items)
        value: bytes | None = orjson.dumps(body)
        if reason == "not_json":
            value = rnd.choice([b"", None, b"{oops", b"\xff"])
        elif reason == "not_object":
            value = rnd.choice([b"[1]", b'"s"', b"5", b"null"])
        messages.append((key, value))
        truth.append(("bad", reason) if reason else ("good", ids, t, values))
    return messages, truth


def parser(plan: ViewPlan) -> MessageParser:
    return MessageParser(plan, 300_000, lambda: NOW)


def outcomes(checked: CheckedBatch) -> dict[int, Any]:
    """position -> BadMessage, or (key, event time, values as plain Python values)."""
    out: dict[int, Any] = dict(checked.bad)
    out.update((pos, row) for pos, row in checked.rows)
    if checked.full is not None:
        times = checked.full.event_times_ms.tolist()
        for j, pos in enumerate(checked.full.positions):
            out[pos] = (checked.full.keys[j], times[j], checked.full.row(j))
    return out


batches = st.tuples(
    st.sampled_from(["rooms", "pairs"]),
    st.randoms(use_true_random=False),
    st.integers(1, 120),
    st.sampled_from([0.0, 0.1, 0.5]),  # bad
    st.sampled_from([0.0, 0.3, 1.0]),  # partial
)


@settings(max_examples=150, deadline=None)
@given(batches)
def test_each_message_gets_the_outcome_parse_gives_it(batch: Any) -> None:
    view, rnd, n, p_bad, p_partial = batch
    plan = REGISTRY.views[view]
    messages, truth = make_batch(plan, rnd, n, p_bad, p_partial)
    checked = parser(plan).check_batch([k for k, _ in messages], [v for _, v in messages])
    got = outcomes(checked)
    assert sorted(got) == list(range(n))  # every message once
    assert [p for p, _ in checked.bad] == sorted(p for p, _ in checked.bad)
    assert [p for p, _ in checked.rows] == sorted(p for p, _ in checked.rows)
    one_by_one = parser(plan)
    for pos, (key, value) in enumerate(messages):
        assert got[pos] == one_by_one.parse(key, value), pos
        if truth[pos][0] == "bad":
            assert isinstance(got[pos], BadMessage) and got[pos].reason == truth[pos][1]
        else:
            assert not isinstance(got[pos], BadMessage), got[pos]


def open_core(path: Path) -> FeatureService:
    return FeatureService(REGISTRY, assemble(L1Cache(0, 1.0), [RocksTier(path)]))


def oracle(plan: ViewPlan, stored: dict[bytes, tuple[int, dict[str, Any]]], truth: list[Any]) -> dict[bytes, bytes]:  # fmt: skip
    """key -> stored value after the good messages, applied in order over `stored`:
    newest event wins, features left out keep their values."""
    state = dict(stored)
    for item in truth:
        if item[0] != "good":
            continue
        _, ids, t, values = item
        key = plan.key(*ids)
        before = state.get(key, (-1, plan.codec.default_values))
        if t > before[0]:
            state[key] = (t, {**before[1], **values})
    return {key: plan.codec.encode(t, values) for key, (t, values) in state.items()}


@settings(max_examples=60, deadline=None)
@given(batches, st.randoms(use_true_random=False))
def test_stored_rows_equal_the_one_by_one_path_and_the_source(batch: Any, prior: random.Random) -> None:  # fmt: skip
    view, rnd, n, p_bad, p_partial = batch
    plan = REGISTRY.views[view]
    messages, truth = make_batch(plan, rnd, n, p_bad, p_partial)
    # Some entities already stored, some of them newer than parts of the batch.
    stored = {}
    for _ in range(prior.randint(0, 3)):
        ids = entity(plan, prior)
        values = {f.name: good_value(prior, f) for f in prior.sample(plan.codec.features, 2)}
        stored[plan.key(*ids)] = (BASE + prior.randint(0, 6), {**plan.codec.default_values, **values})  # fmt: skip

    async def main(tmp: Path) -> None:
        batched, one_by_one = open_core(tmp / "batched"), open_core(tmp / "one")
        try:
            for core in (batched, one_by_one):
                await core.store.put_many([(k, plan.codec.encode(t, v)) for k, (t, v) in stored.items()])  # fmt: skip
            p = parser(plan)
            checked = p.check_batch([k for k, _ in messages], [v for _, v in messages])
            got = await batched.write_batch(plan, checked.full, checked.rows, "kafka")
            rows = [
                r for r in (p.parse(k, v) for k, v in messages) if not isinstance(r, BadMessage)
            ]
            want = await one_by_one.write_checked(plan, rows, "kafka")
            assert got == want
            keys = sorted({plan.key(*entity_ids) for entity_ids in _all_entities(plan)})
            after = await batched.store.get_stored(keys)
            assert after == await one_by_one.store.get_stored(keys)
            expected = oracle(plan, stored, truth)
            assert {k: v for k, v in zip(keys, after, strict=True) if v is not None} == expected
        finally:
            await batched.store.close()
            await one_by_one.store.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))


def _all_entities(plan: ViewPlan) -> list[tuple[int, ...]]:
    if plan.is_pair:
        return [(u, r) for u in range(1, 5) for r in range(1, 5)]
    return [(r,) for r in range(1, 5)]


def test_a_batch_of_complete_rows_is_all_columns() -> None:
    plan = REGISTRY.views["rooms"]
    messages, _ = make_batch(plan, random.Random(1), 50, 0.0, 0.0)
    checked = parser(plan).check_batch([k for k, _ in messages], [v for _, v in messages])
    assert checked.full is not None and not checked.rows and not checked.bad
    assert checked.full.positions == list(range(50))


def test_complete_rows_of_several_shapes_are_one_column_batch_in_order() -> None:
    """More field sets than the shape cache holds: complete rows still come out as one
    ColumnRows, in message order."""
    plan = REGISTRY.views["rooms"]
    p = parser(plan)
    p._shapes.clear()
    rnd = random.Random(2)
    messages = []
    for i in range(400):
        ids = (rnd.randint(1, 50),)
        if i % 2:  # partial rows of many field sets, between complete ones
            names = rnd.sample(plan.codec.features, 2)
            body = {"room_id": ids[0], "event_time_ms": BASE + i, **{f.name: good_value(rnd, f) for f in names}}  # fmt: skip
        else:
            body = {"room_id": ids[0], "event_time_ms": BASE + i, **{f.name: good_value(rnd, f) for f in plan.codec.features}}  # fmt: skip
        messages.append((key_text(ids), orjson.dumps(body)))
    import service.kafka.messages as m

    limit, m._MAX_SHAPES = m._MAX_SHAPES, 4  # the cache is emptied several times
    try:
        checked = p.check_batch([k for k, _ in messages], [v for _, v in messages])
    finally:
        m._MAX_SHAPES = limit
    assert checked.full is not None
    assert checked.full.positions == list(range(0, 400, 2))
    assert [pos for pos, _ in checked.rows] == list(range(1, 400, 2))
    assert outcomes(checked) == {i: p.parse(k, v) for i, (k, v) in enumerate(messages)}
