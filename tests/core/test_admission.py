"""Admission (service/core/admission.py): the in-flight bound, as plain logic."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge

from service.core.admission import Admission, Overloaded


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
