"""Admission (service/core/admission.py): the in-flight bound, as plain logic."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge

from service.core.admission import AdaptiveLimit, Admission, LoopLag, Overloaded


def test_admits_up_to_the_limit_then_refuses_and_counts() -> None:
    gate = Admission(2, retry_after_s=0.5)
    gate.enter()
    gate.enter()
    with pytest.raises(Overloaded) as refused:
        gate.enter()
    assert refused.value.retry_after_s == 0.5
    assert "2 requests in flight" in str(refused.value)
    assert (gate.in_flight, gate.refused) == (2, 1)
    assert repr(gate) == "<Admission 2/2 in flight, 1 refused>"
    gate.leave()
    gate.enter()  # room again after a leave
    assert gate.in_flight == 2


def test_zero_means_no_bound() -> None:
    gate = Admission(0)
    for _ in range(10_000):
        gate.enter()
    assert (gate.in_flight, gate.refused) == (10_000, 0)
    assert "unbounded" in repr(gate)


def test_leave_without_enter_is_a_bug_not_a_negative_count() -> None:
    gate = Admission(1)
    with pytest.raises(RuntimeError):
        gate.leave()
    with pytest.raises(ValueError):
        Admission(-1)


def test_the_gauge_follows_the_count_in_flight() -> None:
    gauge = Gauge("in_flight", "test", registry=CollectorRegistry())
    gate = Admission(2, gauge=gauge)
    gate.enter()
    gate.enter()
    assert gauge._value.get() == 2
    with pytest.raises(Overloaded):
        gate.enter()
    assert gauge._value.get() == 2  # a refusal is never in flight
    gate.leave()
    assert gauge._value.get() == 1


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def burst(gate: Admission, clock: Clock, latency_s: float, callers: int, rounds: int = 1) -> int:
    """`rounds` times: `callers` arrive at once; those admitted are answered after `latency_s`.

    Returns how many were refused."""
    refused = 0
    for _ in range(rounds):
        admitted = []
        for _ in range(callers):
            try:
                admitted.append(gate.enter())
            except Overloaded:
                refused += 1
        clock.t += latency_s
        for t in admitted:
            gate.leave(t)
    return refused


def warm(gate: Admission, clock: Clock, latency_s: float = 0.004) -> None:
    """Demand one over the bound, answers at `latency_s`, until the bound is the ceiling."""
    for _ in range(1000):
        if gate.limit == gate.ceiling:
            return
        burst(gate, clock, latency_s, gate.limit + 1)
    raise AssertionError(f"the bound never grew to its ceiling: {gate!r}")


def adaptive_gate(ceiling: int = 16, floor: int = 2) -> tuple[Admission, AdaptiveLimit, Clock]:
    clock = Clock()
    limit = AdaptiveLimit(ceiling, floor=floor, window=10, clock=clock)
    return Admission(ceiling, adaptive=limit, clock=clock), limit, clock


def test_adaptive_limit_starts_at_its_floor_and_grows_while_answers_stay_fast() -> None:
    gate, limit, clock = adaptive_gate()
    assert gate.limit == 2
    burst(gate, clock, 0.004, 1, rounds=20)  # one caller: the bound is never reached
    assert gate.limit == 2
    assert limit.baseline == pytest.approx(0.004)
    warm(gate, clock)  # more callers than places, answers as fast
    burst(gate, clock, 0.004, 16, rounds=50)
    assert gate.limit == 16  # the ceiling, never more


def test_adaptive_limit_shrinks_while_requests_queue_and_never_under_its_floor() -> None:
    gate, _, clock = adaptive_gate()
    warm(gate, clock)
    assert gate.limit == 16
    burst(gate, clock, 0.040, 10, rounds=2)  # 10 at once, 10x the baseline: they queue
    assert gate.limit in (8, 6)  # 0.8 x the 10 seen at once (then 0.8 x 8)
    seen = []
    for _ in range(10):
        burst(gate, clock, 0.040, 10)
        seen.append(gate.limit)
    assert seen == sorted(seen, reverse=True) and seen[-1] == 2  # the floor
    assert burst(gate, clock, 0.040, 5) == 3
    assert gate.refused > 3


def test_slow_answers_without_concurrency_shrink_nothing() -> None:
    gate, _, clock = adaptive_gate()
    warm(gate, clock)
    burst(gate, clock, 0.100, 1, rounds=50)  # big requests or a slow Redis, one at a time
    burst(gate, clock, 0.100, 2, rounds=50)  # two at a time: not over the floor
    assert gate.limit == 16


def test_adaptive_limit_grows_only_when_demand_reaches_it() -> None:
    gate, _, clock = adaptive_gate()
    warm(gate, clock)
    burst(gate, clock, 0.040, 10, rounds=20)
    assert gate.limit == 2
    burst(gate, clock, 0.004, 1, rounds=10)  # fast again (one window mixes in the last bursts)
    settled = gate.limit
    burst(gate, clock, 0.004, 1, rounds=50)  # one at a time: the bound is not reached
    assert gate.limit == settled <= 3
    burst(gate, clock, 0.005, 8, rounds=5)  # 8 callers, fast answers: the bound is reached
    assert gate.limit == settled + 1
    burst(gate, clock, 0.0055, 8, rounds=50)  # within 1.5x the baseline: up to the demand
    assert gate.limit == 9  # grew past the demand by one, then the peak no longer reached it


def test_adaptive_limit_forgets_an_old_baseline() -> None:
    gate, limit, clock = adaptive_gate(ceiling=4)
    burst(gate, clock, 0.001, 4, rounds=50)
    assert gate.limit == 4
    burst(gate, clock, 0.010, 4, rounds=20)
    assert gate.limit == 2
    burst(gate, clock, 0.010, 4, rounds=20)  # the bound is reached, but 10x the baseline
    assert gate.limit == 2
    clock.t += 31  # 30 s later the 1 ms baseline is forgotten; 10 ms is normal now
    burst(gate, clock, 0.010, 8, rounds=50)
    assert limit.baseline == pytest.approx(0.010)
    assert gate.limit == 4  # the ceiling


def test_adaptive_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="floor"):
        AdaptiveLimit(2, floor=3)
    with pytest.raises(ValueError, match="ceiling must be"):
        Admission(8, adaptive=AdaptiveLimit(4))
    gauge = Gauge("limit", "test", registry=CollectorRegistry())
    clock = Clock()
    gate = Admission(8, adaptive=AdaptiveLimit(8, window=4, clock=clock), limit_gauge=gauge,
                     clock=clock)  # fmt: skip
    assert gauge._value.get() == 2  # the floor, to start
    burst(gate, clock, 0.001, 8, rounds=20)
    assert gauge._value.get() == gate.limit == 8
    burst(gate, clock, 0.010, 8)
    assert gauge._value.get() == gate.limit < 8


def test_writes_are_bounded_by_the_ceiling_only_and_count_toward_it() -> None:
    gate, _, clock = adaptive_gate(ceiling=4)
    burst(gate, clock, 0.001, 4, rounds=50)
    burst(gate, clock, 0.020, 4, rounds=20)
    assert gate.limit == 2  # reads queue: their bound is at the floor
    gate.enter_write()
    gate.enter_write()
    r1, r2 = gate.enter(), gate.enter()  # writes do not take the reads' places
    with pytest.raises(Overloaded):
        gate.enter()  # over the reads' bound
    with pytest.raises(Overloaded) as refused:
        gate.enter_write()  # 4 in flight: the ceiling
    assert refused.value.limit == 4
    gate.leave(r1)
    gate.leave(r2)
    gate.enter_write()
    gate.enter_write()
    with pytest.raises(Overloaded):
        gate.enter()  # reads under their bound, but 4 writes in flight
    for _ in range(4):
        gate.leave_write()
    assert (gate.in_flight, gate.reads) == (0, 0)
    with pytest.raises(RuntimeError):
        gate.leave_write()
    gate.enter_write()
    with pytest.raises(RuntimeError):
        gate.leave(0.0)  # a write in flight is not a read


def test_queueing_with_an_idle_loop_shrinks_nothing() -> None:
    """Slow answers while the loop wakes on time: a slow Redis, not CPU; the bound stays."""
    clock = Clock()
    lag = {"s": 0.0}
    limit = AdaptiveLimit(16, window=10, lag=lambda: lag["s"], clock=clock)
    gate = Admission(16, adaptive=limit, clock=clock)
    warm(gate, clock)
    burst(gate, clock, 0.040, 10, rounds=20)  # 10x the baseline, loop on time
    assert gate.limit == 16
    lag["s"] = 0.002  # the loop runs 2 ms late: under the 4 ms baseline
    burst(gate, clock, 0.040, 10, rounds=20)
    assert gate.limit == 16
    lag["s"] = 0.005  # 5 ms late: over the baseline, reads queue for the loop
    burst(gate, clock, 0.040, 10, rounds=2)
    assert gate.limit in (8, 6)


def test_loop_lag_measures_how_late_the_loop_wakes() -> None:
    async def main() -> tuple[float, float]:
        probe = LoopLag(interval_s=0.002)
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(0.05)
        idle = probe.take()
        for _ in range(5):
            time.sleep(0.02)  # the loop is busy: every wake-up comes late
            await asyncio.sleep(0)
        busy = probe.take()
        task.cancel()
        return idle, busy

    idle, busy = asyncio.run(main())
    assert busy > 0.005 > idle
    assert LoopLag().take() == 0.0


def test_callers_that_retry_at_once_stop_the_bound_from_shrinking() -> None:
    """Refusals outnumbering answers 4 to 1: refusing costs more than serving."""
    clock = Clock()
    lag = {"s": 0.010}  # the loop is late: refusals cost CPU too
    limit = AdaptiveLimit(16, window=10, lag=lambda: lag["s"], clock=clock)
    gate = Admission(16, adaptive=limit, clock=clock)
    warm(gate, clock)
    burst(gate, clock, 0.040, 10, rounds=20)  # queueing: down to the floor
    assert gate.limit == 2
    for _ in range(30):  # 60 callers retrying at once against 2 places
        burst(gate, clock, 0.040, 60)
    assert gate.limit > 2
