"""Tallies (service/metrics.py): what a flush adds is what direct updates would have."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service import metrics

BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.1, 1.0)
# Durations and sizes as recorded, with every bucket bound itself and far outside them.
AMOUNTS = st.one_of(
    st.sampled_from([0.0, *BUCKETS, 1e-300, 1e300]),
    st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample's value but `_created` (a time), by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def assert_same(direct: CollectorRegistry, tallied: CollectorRegistry) -> None:
    a, b = samples(direct), samples(tallied)
    assert a.keys() == b.keys()
    for key, value in a.items():  # sums: the same numbers added in another order
        assert math.isclose(value, b[key], rel_tol=1e-9, abs_tol=1e-12), (key, value, b[key])


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(AMOUNTS, max_size=50), min_size=1, max_size=5))
def test_histogram_tally_flushes_what_observe_would_have(batches: list[list[float]]) -> None:
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "h", ["route"], buckets=BUCKETS, registry=direct)
    h2 = Histogram("h", "h", ["route"], buckets=BUCKETS, registry=tallied)
    child, t = h1.labels("/v1/bundle"), metrics.HistogramTally(h2.labels("/v1/bundle"))
    for batch in batches:  # flushed between batches, as the server does every second
        for amount in batch:
            child.observe(amount)
            t.observe(amount)
        t.flush()
        assert_same(direct, tallied)
    t.flush()  # nothing new: adds nothing
    assert_same(direct, tallied)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["inc", "dec", "set", "flush"]), AMOUNTS)))
def test_gauge_and_counter_tallies_flush_what_direct_updates_would_have(
    ops: list[tuple[str, float]],
) -> None:
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    g1, g2 = (Gauge("g", "g", registry=r) for r in (direct, tallied))
    c1, c2 = (Counter("c", "c", registry=r) for r in (direct, tallied))
    gauge, counter = metrics.GaugeTally(g2), metrics.CounterTally(c2)
    for op, amount in ops:
        if op == "flush":
            gauge.flush()
            counter.flush()
            assert_same(direct, tallied)
        elif op == "set":
            g1.set(amount)
            gauge.set(amount)
        else:
            getattr(g1, op)(amount)
            getattr(gauge, op)(amount)
            c1.inc(amount)
            counter.inc(amount)
    gauge.flush()
    counter.flush()
    assert_same(direct, tallied)


def test_one_tally_per_child_and_scrape_flushes() -> None:
    child = metrics.REFUSED.labels("http")
    t = metrics.tally(child)
    assert metrics.tally(metrics.REFUSED.labels("http")) is t
    assert isinstance(metrics.tally(metrics.IN_FLIGHT), metrics.GaugeTally)
    assert isinstance(metrics.tally(metrics.BATCH_SIZE.labels("GetBundle")), metrics.HistogramTally)
    metrics.flush()
    before = metrics.REGISTRY.get_sample_value(
        "livefeat_requests_refused_total", {"transport": "http"}
    )
    t.inc(3)
    assert (
        metrics.REGISTRY.get_sample_value("livefeat_requests_refused_total", {"transport": "http"})
        == before
    )  # not yet flushed
    text = metrics.scrape().decode()
    assert f'livefeat_requests_refused_total{{transport="http"}} {before + 3}' in text
    with pytest.raises(TypeError):
        metrics.tally(object())
