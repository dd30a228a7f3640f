"""Unit tests of the report's figures: known inputs, values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.codec import Feature
from service.report import skew, stats
from service.report.sample import choose


def test_status_shares_name_every_status() -> None:
    got = stats.status_shares(["FOUND", "FOUND", "STALE", "DEFAULTED"])
    assert got == {"FOUND": 0.5, "STALE": 0.25, "DEFAULTED": 0.25, "UNAVAILABLE": 0.0}
    assert stats.status_shares([]) == {s: 0.0 for s in stats.STATUSES}


def test_numeric_summary_of_1_to_100() -> None:
    got = stats.numeric_summary(np.arange(1, 101))
    assert got["count"] == 100 and got["mean"] == 50.5
    assert got["quantiles"]["p50"] == 50.5 and got["quantiles"]["p1"] == pytest.approx(1.99)
    assert got["histogram"]["counts"] == [5] * 20 and got["histogram"]["edges"][0] == 1
    assert stats.numeric_summary(np.array([])) == {"count": 0}
    one = stats.histogram(np.array([3.0, 3.0]))  # a constant: one bin around it
    assert sum(one["counts"]) == 2 and one["edges"][0] < 3 < one["edges"][-1]


def test_ages_leave_out_rows_without_a_stored_value() -> None:
    got = stats.age_summary([-1, 1000, 3000, -1])
    assert got["count"] == 2 and got["quantiles_ms"]["p50"] == 2000


def test_typed_feature_summaries() -> None:
    flag = Feature("live", "bool", 0, False)
    assert stats.feature_summary(flag, [True, False, False, False])["true_share"] == 0.25
    name = Feature("category", "string", 0, "")
    got = stats.feature_summary(name, ["a", "b", "a", "c"])
    assert got["cardinality"] == 3 and got["top"][0] == ["a", 0.5]
    vector = Feature("emb", "float_vector", 2, [0.0, 0.0])
    got = stats.feature_summary(vector, [[3.0, 4.0], [0.0, 1.0]])
    assert got["dim"] == 2 and got["norm"]["mean"] == 3.0
    assert stats.default_share(vector, [[0.0, 0.0], [1.0, 0.0]]) == 0.5
    assert stats.default_share(Feature("n", "int64", 0, 0), [0, 0, 5, 0]) == 0.75


def test_psi_and_ks_of_equal_and_shifted_samples() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1, 5000)
    same = rng.normal(0, 1, 5000)
    assert skew.psi_numeric(base, same) < 0.02
    assert skew.ks_statistic(base, same) < 0.05
    shifted = same + 1.0  # one standard deviation
    assert skew.psi_numeric(base, shifted) > 0.5
    # KS of N(0,1) against N(1,1): 2*Phi(0.5) - 1 = 0.383 in the limit.
    assert skew.ks_statistic(base, shifted) == pytest.approx(0.383, abs=0.03)
    assert skew.ks_statistic(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0


def test_psi_of_a_constant_offline_feature_still_sees_a_change() -> None:
    assert skew.psi_numeric(np.zeros(100), np.zeros(100)) == 0.0
    assert skew.psi_numeric(np.zeros(100), np.ones(100)) > skew.PSI_FLAG


def test_psi_categorical() -> None:
    offline = ["a"] * 50 + ["b"] * 50
    assert skew.psi_categorical(offline, ["a"] * 50 + ["b"] * 50) == 0.0
    # 50/50 -> 90/10: (0.4 ln 1.8) + (-0.4 ln 0.2) = 0.879
    got = skew.psi_categorical(offline, ["a"] * 90 + ["b"] * 10)
    assert got == pytest.approx(0.4 * np.log(1.8) + 0.4 * np.log(5), rel=1e-6)


def test_feature_skew_flags_and_needs_enough_values() -> None:
    f = Feature("x", "double", 0, 0.0)
    values = np.linspace(0, 1, 100)
    same = skew.feature_skew(f, values, values, [(v, v) for v in values])
    assert same["flags"] == [] and same["mismatch"] == 0.0
    moved = skew.feature_skew(f, values, values + 1, [(v, v + 1) for v in values])
    assert moved["flags"] == ["psi", "ks", "mismatch"]
    few = skew.feature_skew(f, values[:10], values[:10] + 1, [])
    assert few == {"psi": None, "ks": None, "mismatch": None, "compared": 0, "flags": []}


def test_same_value_at_stored_precision() -> None:
    single = Feature("x", "float", 0, 0.0)
    assert skew.same_value(single, 0.1, float(np.float32(0.1)))
    assert not skew.same_value(Feature("x", "double", 0, 0.0), 0.1, float(np.float32(0.1)))
    assert not skew.same_value(Feature("n", "int64", 0, 0), 3, 4)


def test_choose_is_seeded_and_keeps_order() -> None:
    ids = list(range(100))
    first = choose(ids, 10, seed=5)
    assert first == choose(ids, 10, seed=5) and first == sorted(first)
    assert first != choose(ids, 10, seed=6)
    assert choose(ids, 1000, seed=5) == ids
