"""The pure logic of the locust load test: requests, room updates, the step plan, the knee.

Nothing here imports locust (which monkey-patches the standard library with gevent when
imported), so the unit tests in ``tests/test_locust_shape.py`` can run it in the pytest process.
``loadtest/locustfile.py`` wires these pieces to locust.

The knee: the load steps up (``StepPlan``); in each step, after a settling time, the read
latencies (``/v1/bundle`` and gRPC ``GetBundle``) are measured from locust's own cumulative
response-time histograms (``Snapshot``), and the first step whose p99 passes the budget is the
knee (``KneeSearch``). The test stops there, or after the last step.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import orjson

from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service.workload import ZIPF_S, RequestGenerator

__all__ = [
    "BUNDLE",
    "BUNDLE_PATH",
    "GRPC_GET_BUNDLE",
    "N_ROOMS",
    "N_USERS",
    "PUSH_PATH",
    "READ_NAMES",
    "KneeSearch",
    "RoomUpdates",
    "Snapshot",
    "StepPlan",
    "StepResult",
    "bundle_requests",
    "grpc_bundle_bodies",
    "histogram_percentile",
    "http_bundle_bodies",
    "measure",
    "merge_histograms",
    "parse_steps",
]

N_USERS, N_ROOMS = 100_000, 20_000  # the standard workload (docs/benchmark-workload.md)
BUNDLE = "live_ranker"
BUNDLE_PATH = "/v1/bundle"
PUSH_PATH = "/v1/push"
GRPC_GET_BUNDLE = "/livefeat.v1.FeatureService/GetBundle"
READ_NAMES = frozenset({BUNDLE_PATH, GRPC_GET_BUNDLE})
"""Names (in locust's stats) of the ranker reads whose p99 decides the knee."""


# --------------------------------------------------------------------------- requests


def bundle_requests(
    n: int,
    seed: int = 0,
    n_candidates: int = 100,
    n_users: int = N_USERS,
    n_rooms: int = N_ROOMS,
) -> list[tuple[int, list[int]]]:
    """``n`` ranker requests of the standard workload: (uniform user, Zipf(1.1) rooms)."""
    return RequestGenerator(n_users, n_rooms, n_candidates, seed=seed).requests(n)


def http_bundle_bodies(
    requests: Iterable[tuple[int, Sequence[int]]], bundle: str = BUNDLE
) -> list[bytes]:
    """``POST /v1/bundle`` JSON bodies, encoded once."""
    return [
        orjson.dumps({"bundle": bundle, "user_id": user, "room_ids": list(rooms)})
        for user, rooms in requests
    ]


def grpc_bundle_bodies(
    requests: Iterable[tuple[int, Sequence[int]]], bundle: str = BUNDLE
) -> list[bytes]:
    """Serialized ``GetBundleRequest`` messages, encoded once."""
    return [
        pb.GetBundleRequest(bundle=bundle, user_id=user, room_ids=rooms).SerializeToString()
        for user, rooms in requests
    ]


class RoomUpdates:
    """``POST /v1/push`` bodies of ``room_stats`` as a stream job sends them.

    Each push updates ``rows`` distinct rooms drawn by the same Zipf(1.1) popularity as the
    requests (hot rooms change most often, and are the ones every ranker reads), with a few
    per-second counters and rates around the room's popularity, stamped with the given time.
    """

    def __init__(self, rows: int, seed: int = 0, n_rooms: int = N_ROOMS) -> None:
        if rows < 1:
            raise ValueError("rows must be >= 1")
        self.rows = rows
        self._rooms = RequestGenerator(1, n_rooms, min(rows, n_rooms), seed=seed)
        self._rng = np.random.default_rng((seed, 1))

    def rows_at(self, event_time_ms: int) -> list[dict[str, Any]]:
        """The rows of the next push, stamped ``event_time_ms``."""
        rooms = np.asarray(self._rooms.next()[1], dtype=np.float64)
        n, rng = rooms.size, self._rng
        viewers = np.floor(50_000 * rooms**-ZIPF_S * rng.lognormal(0.0, 0.3, n)) + rng.poisson(3, n)
        likes = rng.poisson(viewers * 0.5)
        gifts = rng.poisson(viewers * 0.004)
        comments = rng.poisson(viewers * 0.05)
        gift_value = np.round(gifts * rng.lognormal(1.0, 1.0, n), 2)
        engagement = 1.0 - np.exp(-(likes + 3 * comments + 20 * gifts) / np.maximum(viewers, 1))
        return [
            {
                "id": int(rooms[i]),
                "event_time_ms": event_time_ms,
                "values": {
                    "viewer_count": int(viewers[i]),
                    "likes_5m": int(likes[i]),
                    "gift_count_1m": int(gifts[i]),
                    "comment_count_1m": int(comments[i]),
                    "gift_value_1m": float(gift_value[i]),
                    "engagement_score": float(engagement[i]),
                },
            }
            for i in range(n)
        ]

    def body(self, event_time_ms: int, view: str = "room_stats") -> bytes:
        """The JSON body of the next push."""
        return orjson.dumps({"view": view, "rows": self.rows_at(event_time_ms)})


# --------------------------------------------------------------------------- the step plan


def parse_steps(text: str) -> tuple[int, ...]:
    """ "2,4,8" -> (2, 4, 8): user counts, positive and strictly increasing."""
    try:
        steps = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(f"steps must be comma-separated integers, got {text!r}") from None
    if not steps:
        raise ValueError("at least one step is needed")
    if steps[0] < 1 or any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(f"steps must be positive and strictly increasing, got {text!r}")
    return steps


@dataclass(frozen=True)
class StepPlan:
    """Reader users per step, each step held ``step_s`` seconds; the first ``settle_s`` of a
    step are not measured (users spawning, connections opening, queues settling).

    The first step is preceded by ``warmup_s`` seconds at its load, not measured either (caches
    filling, a freshly started server finishing its start-up work). ``fixed_users`` (the
    writers, locust ``fixed_count`` users) come on top of every step.
    """

    users: tuple[int, ...]
    step_s: float = 10.0
    settle_s: float = 3.0
    fixed_users: int = 0
    warmup_s: float = 0.0
    spawn_rate: float | None = None
    """Users started per second; default: a whole step's increase within one second."""

    def __post_init__(self) -> None:
        parse_steps(",".join(map(str, self.users)))  # validates
        if self.step_s <= 0 or not 0 <= self.settle_s < self.step_s or self.warmup_s < 0:
            raise ValueError("need step_s > 0, 0 <= settle_s < step_s and warmup_s >= 0")

    @property
    def duration_s(self) -> float:
        """The length of the whole plan."""
        return self.warmup_s + len(self.users) * self.step_s

    def step_at(self, run_time_s: float) -> int | None:
        """The index of the step running at ``run_time_s`` (0 during the warm-up), or None
        after the last one."""
        t = run_time_s - self.warmup_s
        i = math.floor(t / self.step_s) if t > 0 else 0
        return i if i < len(self.users) else None

    def start_s(self, step: int) -> float:
        """When the measured part of ``step`` starts, settling included (after the warm-up)."""
        return self.warmup_s + step * self.step_s

    def target(self, step: int) -> tuple[int, float]:
        """What the shape's tick() returns during ``step``: (total users, spawn rate)."""
        rate = self.spawn_rate or float(max(self.users[-1], self.fixed_users, 1))
        return self.users[step] + self.fixed_users, rate


# --------------------------------------------------------------------------- measuring steps


def histogram_percentile(histogram: Mapping[int, int], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of a {latency_ms: count} histogram.

    That is, the smallest latency such that at least q of the samples are <= it. None if empty.
    """
    if not 0 < q <= 1:
        raise ValueError(f"quantile {q} is outside (0, 1]")
    n = sum(c for c in histogram.values() if c > 0)
    if n == 0:
        return None
    rank = max(1, math.ceil(Fraction(repr(float(q))) * n))
    seen = 0
    for latency in sorted(histogram):
        if histogram[latency] > 0:
            seen += histogram[latency]
            if seen >= rank:
                return float(latency)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class Snapshot:
    """Locust's cumulative counters at one moment (``t`` in seconds, any monotonic origin)."""

    t: float
    read_times: Mapping[int, int]
    """Cumulative {rounded latency ms: count} of the reads (``READ_NAMES``)."""
    reads: int
    requests: int
    failures: int

    @staticmethod
    def diff_times(after: Mapping[int, int], before: Mapping[int, int]) -> dict[int, int]:
        """The latencies recorded between two cumulative histograms (never negative)."""
        out = {k: v - before.get(k, 0) for k, v in after.items()}
        return {k: v for k, v in out.items() if v > 0}


@dataclass(frozen=True)
class StepResult:
    """One step as measured (after its settling time)."""

    step: int
    users: int
    """Reader users (without the fixed writers)."""
    measured_s: float
    requests: int
    rps: float
    """All requests (reads and pushes) per second."""
    reads: int
    read_rps: float
    failures: int
    p50_ms: float | None
    p99_ms: float | None
    """Of the reads; locust's histogram has 1 ms resolution below 100 ms, 10 ms up to 1 s."""
    over_budget: bool
    decisive: bool
    """Enough reads were measured for the step to decide the knee."""


def measure(
    step: int, users: int, begin: Snapshot, end: Snapshot, budget_ms: float, min_reads: int
) -> StepResult:
    """A step's figures between two snapshots."""
    seconds = max(end.t - begin.t, 1e-9)
    times = Snapshot.diff_times(end.read_times, begin.read_times)
    reads, requests = max(end.reads - begin.reads, 0), max(end.requests - begin.requests, 0)
    p99 = histogram_percentile(times, 0.99)
    decisive = reads >= min_reads and p99 is not None
    return StepResult(
        step=step,
        users=users,
        measured_s=round(seconds, 3),
        requests=requests,
        rps=round(requests / seconds, 2),
        reads=reads,
        read_rps=round(reads / seconds, 2),
        failures=max(end.failures - begin.failures, 0),
        p50_ms=histogram_percentile(times, 0.5),
        p99_ms=p99,
        over_budget=decisive and p99 is not None and p99 > budget_ms,
        decisive=decisive,
    )


@dataclass
class KneeSearch:
    """Drives a ``StepPlan`` one tick at a time and finds the knee.

    Call ``tick(run_time_s, snapshot)`` about once a second (locust's shape does); it returns
    (users, spawn_rate) to keep running, or None to stop: after the step whose read p99 passed
    ``budget_ms`` (the knee) or after the last step. ``finish`` closes a step cut short
    (locust stopped from outside). ``report()`` is the JSON-able result.
    """

    plan: StepPlan
    budget_ms: float = 50.0
    min_reads: int = 20
    results: list[StepResult] = field(default_factory=list)
    stopped_by: str | None = None
    """None while running, then "knee", "last_step" or "interrupted"."""
    _step: int | None = None
    _begin: Snapshot | None = None

    @property
    def done(self) -> bool:
        return self.stopped_by is not None

    @property
    def knee(self) -> StepResult | None:
        """The first step over budget, if any."""
        return next((r for r in self.results if r.over_budget), None)

    @property
    def last_within_budget(self) -> StepResult | None:
        """The highest decisive step within budget (before the knee)."""
        ok = [r for r in self.results if r.decisive and not r.over_budget]
        return ok[-1] if ok else None

    def _close(self, snapshot: Snapshot) -> StepResult | None:
        if self._step is None or self._begin is None:
            return None
        step = self._step
        result = measure(
            step, self.plan.users[step], self._begin, snapshot, self.budget_ms, self.min_reads
        )
        self.results.append(result)
        self._begin = None
        return result

    def tick(self, run_time_s: float, snapshot: Snapshot) -> tuple[int, float] | None:
        """The target for this moment; None to stop the test."""
        if self.done:
            return None
        step = self.plan.step_at(run_time_s)
        if step != self._step:
            closed = self._close(snapshot)
            if closed is not None and closed.over_budget:
                self.stopped_by = "knee"
                return None
            if step is None:
                self.stopped_by = "last_step"
                return None
            self._step = step
        assert step is not None
        if self._begin is None and run_time_s >= self.plan.start_s(step) + self.plan.settle_s:
            self._begin = snapshot
        return self.plan.target(step)

    def finish(self, snapshot: Snapshot) -> None:
        """The test ended from outside: measure the step running, if it got past settling."""
        if self.done:
            return
        closed = self._close(snapshot)
        self.stopped_by = "knee" if closed is not None and closed.over_budget else "interrupted"

    def report(self) -> dict[str, Any]:
        """The knee file's content."""
        knee, ok = self.knee, self.last_within_budget
        return {
            "budget_ms": self.budget_ms,
            "quantile": 0.99,
            "stopped_by": self.stopped_by,
            "knee": asdict(knee) if knee else None,
            "last_within_budget": asdict(ok) if ok else None,
            "steps": [asdict(r) for r in self.results],
            "plan": {
                "users": list(self.plan.users),
                "step_s": self.plan.step_s,
                "settle_s": self.plan.settle_s,
                "warmup_s": self.plan.warmup_s,
                "fixed_users": self.plan.fixed_users,
                "min_reads": self.min_reads,
            },
        }

    def summary(self) -> str:
        """One line for the log."""
        knee, ok = self.knee, self.last_within_budget
        best = (
            f"last within budget: {ok.users} users, {ok.rps:.0f} req/s, p99 {ok.p99_ms:.0f} ms"
            if ok
            else "no step within budget"
        )
        if knee:
            return (
                f"knee at {knee.users} users, {knee.rps:.0f} req/s: read p99 {knee.p99_ms:.0f} ms"
                f" > {self.budget_ms:g} ms ({best})"
            )
        return f"no knee up to the last step measured, p99 budget {self.budget_ms:g} ms ({best})"


def merge_histograms(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """The sum of {latency: count} histograms."""
    total: Counter[int] = Counter()
    for h in histograms:
        total.update(h)
    return dict(total)
