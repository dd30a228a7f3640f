"""The pure logic of the locust load test (loadtest/locust_plan.py, loadtest/run_locust.py).

No locust run and no locust import here: importing locust monkey-patches the standard library
with gevent, which the rest of the test session must not see.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml

from loadtest import locust_plan as plan
from loadtest import run_locust
from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service.settings import DEMO_REGISTRY


class FakeStats:
    """Locust's cumulative counters, fed one second of traffic at a time."""

    def __init__(self) -> None:
        self.times: Counter[int] = Counter()
        self.reads = self.requests = self.failures = 0

    def second(self, reads: int, fast_ms: int, tail_ms: int, pushes: int = 2) -> None:
        """``reads`` reads: 2% at ``tail_ms`` (so p99 == tail_ms), the rest at ``fast_ms``."""
        tail = max(1, reads // 50)
        self.times[tail_ms] += tail
        self.times[fast_ms] += reads - tail
        self.reads += reads
        self.requests += reads + pushes

    def snapshot(self, t: float) -> plan.Snapshot:
        return plan.Snapshot(t, dict(self.times), self.reads, self.requests, self.failures)


def drive(
    search: plan.KneeSearch, tail_by_users: dict[int, int], reads_per_user: int = 50
) -> list[tuple[float, tuple[int, float] | None]]:
    """Tick once a second as locust does, with traffic shaped by the users of each tick."""
    stats, ticks, t, target = FakeStats(), [], 0.0, None
    for _ in range(1000):
        if target is not None:
            users = target[0] - search.plan.fixed_users
            stats.second(users * reads_per_user, 5, tail_by_users[users])
        target = search.tick(t, stats.snapshot(t))
        ticks.append((t, target))
        if target is None:
            return ticks
        t += 1.0
    raise AssertionError("the search never stopped")


# ------------------------------------------------------------------------- the step plan


def test_parse_steps() -> None:
    assert plan.parse_steps("2,4, 8") == (2, 4, 8)
    assert plan.parse_steps("5") == (5,)
    for bad in ("", "0,1", "4,2", "2,2", "a,b", "-1"):
        with pytest.raises(ValueError):
            plan.parse_steps(bad)


def test_step_plan_targets_and_bounds() -> None:
    p = plan.StepPlan(users=(2, 4, 8), step_s=10, settle_s=3, fixed_users=1)
    assert p.duration_s == 30
    assert [p.step_at(t) for t in (0, 9.99, 10, 19.5, 20, 29.9)] == [0, 0, 1, 1, 2, 2]
    assert p.step_at(30) is None
    assert [p.target(i) for i in range(3)] == [(3, 8.0), (5, 8.0), (9, 8.0)]
    assert plan.StepPlan(users=(1, 2), spawn_rate=0.5).target(1) == (2, 0.5)
    warm = plan.StepPlan(users=(2, 4), step_s=10, settle_s=3, warmup_s=15)
    assert warm.duration_s == 35 and (warm.start_s(0), warm.start_s(1)) == (15, 25)
    assert [warm.step_at(t) for t in (0, 14.9, 15, 24.9, 25, 34.9, 35)] == [0, 0, 0, 0, 1, 1, None]
    with pytest.raises(ValueError):
        plan.StepPlan(users=(1, 2), step_s=5, settle_s=5)
    with pytest.raises(ValueError):
        plan.StepPlan(users=(1, 2), warmup_s=-1)
    with pytest.raises(ValueError):
        plan.StepPlan(users=(3, 2))


def test_tick_sequence_without_knee_runs_every_step_then_stops() -> None:
    p = plan.StepPlan(users=(1, 2, 3), step_s=5, settle_s=2, fixed_users=1)
    search = plan.KneeSearch(p, budget_ms=50)
    ticks = drive(search, {1: 10, 2: 20, 3: 30})
    expected = [(2, 3.0)] * 5 + [(3, 3.0)] * 5 + [(4, 3.0)] * 5 + [None]
    assert [target for _, target in ticks] == expected
    assert search.stopped_by == "last_step" and search.knee is None
    assert [r.users for r in search.results] == [1, 2, 3]
    assert [r.p99_ms for r in search.results] == [10, 20, 30]
    assert search.last_within_budget is not None and search.last_within_budget.users == 3
    # measured from the settle point (t=2 of each step) to the first tick of the next step
    assert all(r.measured_s == 3 for r in search.results)
    assert search.tick(99, FakeStats().snapshot(99)) is None  # stays stopped


def test_warmup_is_not_measured() -> None:
    p = plan.StepPlan(users=(1, 2), step_s=4, settle_s=1, warmup_s=5)
    search = plan.KneeSearch(p, budget_ms=50)
    stats, targets = FakeStats(), []
    for t in range(14):
        tail = 900 if t < 5 else 10  # a slow start (cold caches) during the warm-up only
        target = search.tick(t, stats.snapshot(t))
        targets.append(target)
        if target is None:
            break
        stats.second(100, 5, tail)
    assert targets == [(1, 2.0)] * 9 + [(2, 2.0)] * 4 + [None]
    assert search.stopped_by == "last_step" and search.knee is None
    assert [(r.step, r.reads, r.p99_ms) for r in search.results] == [(0, 300, 10), (1, 300, 10)]


def test_knee_found_stops_the_test_at_the_first_step_over_budget() -> None:
    p = plan.StepPlan(users=(2, 4, 6, 8), step_s=4, settle_s=1)
    search = plan.KneeSearch(p, budget_ms=50)
    ticks = drive(search, {2: 12, 4: 35, 6: 80, 8: 400}, reads_per_user=25)
    assert ticks[-1] == (12.0, None)  # step 2 (6 users) closes at t=12: no step 3
    assert search.stopped_by == "knee"
    knee, ok = search.knee, search.last_within_budget
    assert knee is not None and (knee.step, knee.users, knee.p99_ms) == (2, 6, 80)
    assert knee.over_budget and knee.decisive
    # 6 users x 25 reads/s for the 3 measured seconds, plus 2 pushes/s
    assert (knee.reads, knee.read_rps, knee.requests, knee.rps) == (450, 150.0, 456, 152.0)
    assert ok is not None and (ok.users, ok.p99_ms) == (4, 35)
    report = search.report()
    assert report["knee"]["users"] == 6 and report["last_within_budget"]["users"] == 4
    assert report["stopped_by"] == "knee" and len(report["steps"]) == 3
    assert orjson.loads(orjson.dumps(report)) == report  # JSON-able as is
    assert "knee at 6 users" in search.summary()


def test_budget_is_exclusive_and_configurable() -> None:
    p = plan.StepPlan(users=(1, 2), step_s=3, settle_s=0)
    at_budget = plan.KneeSearch(p, budget_ms=50)
    drive(at_budget, {1: 50, 2: 50})
    assert at_budget.stopped_by == "last_step"  # p99 == budget is within budget
    strict = plan.KneeSearch(p, budget_ms=20)
    drive(strict, {1: 50, 2: 50})
    assert strict.stopped_by == "knee" and strict.knee is not None and strict.knee.users == 1
    assert strict.last_within_budget is None and "no step within budget" in strict.summary()


def test_too_few_reads_do_not_decide_the_knee() -> None:
    p = plan.StepPlan(users=(1, 2), step_s=3, settle_s=1)
    search = plan.KneeSearch(p, budget_ms=50, min_reads=20)
    drive(search, {1: 500, 2: 10}, reads_per_user=5)  # step 0: 10 reads, step 1: 20
    first, second = search.results
    assert not first.decisive and not first.over_budget and first.p99_ms == 500
    assert second.decisive and not second.over_budget
    assert search.stopped_by == "last_step"


def test_finish_measures_a_step_cut_short() -> None:
    p = plan.StepPlan(users=(1, 2), step_s=10, settle_s=2)
    search, stats = plan.KneeSearch(p, budget_ms=50), FakeStats()
    for t in range(6):  # ticks at t=0..5, locust stopped from outside at t=6
        search.tick(t, stats.snapshot(t))
        stats.second(100, 5, 200)
    search.finish(stats.snapshot(6))
    assert search.stopped_by == "knee" and search.knee is not None
    assert (search.knee.reads, search.knee.measured_s) == (400, 4)  # t=2..6
    before_settle = plan.KneeSearch(p, budget_ms=50)
    before_settle.tick(0, FakeStats().snapshot(0))
    before_settle.finish(FakeStats().snapshot(1))
    assert before_settle.stopped_by == "interrupted" and before_settle.results == []


# ------------------------------------------------------------------------- percentiles


def test_histogram_percentile_is_nearest_rank() -> None:
    h = {1: 50, 2: 49, 90: 1}
    assert plan.histogram_percentile(h, 0.99) == 2  # rank 99 of 100
    assert plan.histogram_percentile(h, 1.0) == 90
    assert plan.histogram_percentile(h, 0.5) == 1
    assert plan.histogram_percentile({7: 1}, 0.99) == 7
    assert plan.histogram_percentile({}, 0.99) is None
    assert plan.histogram_percentile({3: 0, 4: 2}, 0.5) == 4
    assert plan.histogram_percentile({10: 1, 20: 1, 30: 998}, 0.001) == 10
    with pytest.raises(ValueError):
        plan.histogram_percentile(h, 0)


def test_snapshot_diff_and_merge() -> None:
    after, before = {1: 5, 2: 3, 9: 1}, {1: 2, 2: 3}
    assert plan.Snapshot.diff_times(after, before) == {1: 3, 9: 1}
    assert plan.Snapshot.diff_times({1: 1}, {1: 4}) == {}  # after a stats reset: never negative
    assert plan.merge_histograms([{1: 1, 2: 2}, {2: 3}, {}]) == {1: 1, 2: 5}


# ------------------------------------------------------------------------- requests


def test_requests_are_reproducible_and_standard() -> None:
    a, b = plan.bundle_requests(300, seed=7), plan.bundle_requests(300, seed=7)
    assert a == b and a != plan.bundle_requests(300, seed=8)
    for user, rooms in a:
        assert 1 <= user <= plan.N_USERS
        assert len(rooms) == 100 == len(set(rooms))
        assert all(1 <= r <= plan.N_ROOMS for r in rooms)
    hot = sum(1 in rooms for _, rooms in a)  # Zipf(1.1): room 1 is in almost every request
    assert hot > 0.9 * len(a)
    assert plan.http_bundle_bodies(a) == plan.http_bundle_bodies(b)
    assert plan.grpc_bundle_bodies(a) == plan.grpc_bundle_bodies(b)


def test_request_bodies_encode_the_requests() -> None:
    reqs = plan.bundle_requests(5, seed=1, n_candidates=20)
    for (user, rooms), body in zip(reqs, plan.http_bundle_bodies(reqs), strict=True):
        assert orjson.loads(body) == {"bundle": "live_ranker", "user_id": user, "room_ids": rooms}
    for (user, rooms), raw in zip(reqs, plan.grpc_bundle_bodies(reqs), strict=True):
        msg = pb.GetBundleRequest.FromString(raw)
        assert (msg.bundle, msg.user_id, list(msg.room_ids)) == ("live_ranker", user, rooms)


def test_room_updates_match_the_registry_and_are_reproducible() -> None:
    features = yaml.safe_load(DEMO_REGISTRY.read_text())["views"]["room_stats"]["features"]
    a, b = plan.RoomUpdates(40, seed=3), plan.RoomUpdates(40, seed=3)
    body = orjson.loads(a.body(1_764_000_000_123))
    assert body == orjson.loads(b.body(1_764_000_000_123))
    assert body["view"] == "room_stats" and len(body["rows"]) == 40
    assert len({row["id"] for row in body["rows"]}) == 40
    for row in body["rows"]:
        assert row["event_time_ms"] == 1_764_000_000_123
        assert 1 <= row["id"] <= plan.N_ROOMS
        for name, value in row["values"].items():
            kind = features[name]["type"]
            assert isinstance(value, int if kind == "int64" else float), (name, value)
            assert value >= 0
    assert a.rows_at(1) != a.rows_at(1)  # successive pushes move on
    with pytest.raises(ValueError):
        plan.RoomUpdates(0)


# ------------------------------------------------------------------------- the make target


def test_make_loadtest_profile_is_bounded() -> None:
    steps = plan.parse_steps(run_locust.PROFILE["LIVEFEAT_STEP_USERS"])
    step_s = float(run_locust.PROFILE["LIVEFEAT_STEP_S"])
    warmup_s = float(run_locust.PROFILE["LIVEFEAT_WARMUP_S"])
    assert warmup_s + len(steps) * step_s <= 90  # the machine is shared: about a minute of load
    assert 0 <= float(run_locust.PROFILE["LIVEFEAT_STEP_SETTLE_S"]) < step_s


STATS_CSV = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,\
90%,95%,98%,99%,99.9%,99.99%,100%
grpc,/livefeat.v1.FeatureService/GetBundle,100,0,7,8,2,40,70000,10.0,0.0,7,8,9,9,12,15,20,30,40,40,40
POST,/v1/bundle,120,{fails},8,9,3,50,150000,12.0,0.0,8,9,10,11,13,16,22,35,50,50,50
,Aggregated,220,{fails},8,9,2,50,110000,22.0,0.0,8,9,10,10,13,16,21,33,50,50,50
"""


def test_summary_counts_failures_from_the_stats_csv(tmp_path: Path) -> None:
    (tmp_path / "livefeat_stats.csv").write_text(STATS_CSV.format(fails=0))
    lines, requests, failures = run_locust.summarize(tmp_path)
    assert (requests, failures) == (220, 0)
    assert any("grpc /livefeat.v1.FeatureService/GetBundle" in line for line in lines)
    (tmp_path / "livefeat_stats.csv").write_text(STATS_CSV.format(fails=3))
    assert run_locust.summarize(tmp_path)[1:] == (220, 3)
    assert run_locust.summarize(tmp_path / "none")[1:] == (0, 0)


def test_locust_is_not_imported_by_the_pure_modules() -> None:
    assert "locust" not in sys.modules and "gevent" not in sys.modules
