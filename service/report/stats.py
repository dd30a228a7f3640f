"""Figures of one view's sample: status shares, value ages, value distributions.

Pure functions over plain lists and numpy arrays (no I/O), so they are tested
with known inputs. Distributions are taken over the entities that had a stored
value (FOUND or STALE): defaults served for missing rows are counted by the
status shares and by `default_share`, and would only blur the shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.core.codec import Feature

STATUSES = ("FOUND", "STALE", "DEFAULTED", "UNAVAILABLE")
QUANTILES = (1, 5, 25, 50, 75, 95, 99)  # percent
HISTOGRAM_BINS = 20
TOP_VALUES = 10


def status_shares(statuses: Sequence[str]) -> dict[str, float]:
    """Share (0..1) of each status among `statuses`; every status present, 0.0 if unseen."""
    counts = Counter(statuses)
    total = len(statuses) or 1
    return {s: counts.get(s, 0) / total for s in STATUSES}


def quantiles(values: np.ndarray) -> dict[str, float]:
    """p1..p99 of `values` as {"p1": .., ...}; empty when there are no values."""
    if not len(values):
        return {}
    got = np.percentile(values, QUANTILES)
    return {f"p{q}": float(v) for q, v in zip(QUANTILES, got, strict=True)}


def histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, list[float]]:
    """Equal-width histogram: {"edges": bins + 1 floats, "counts": bins ints}."""
    if not len(values):
        return {"edges": [], "counts": []}
    low, high = float(values.min()), float(values.max())
    if low == high:  # one value: one bin around it
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def numeric_summary(values: np.ndarray) -> dict[str, Any]:
    """count, mean, std, min, max, quantiles and histogram of numeric `values`."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {"count": 0}
    return {
        "count": len(values),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": quantiles(values),
        "histogram": histogram(values),
    }


def age_summary(ages_ms: Sequence[int]) -> dict[str, Any]:
    """Ages of the stored values served (ms; -1 entries, no stored value, left out)."""
    ages = np.asarray([a for a in ages_ms if a >= 0], dtype=np.float64)
    return {"count": len(ages), "quantiles_ms": quantiles(ages), "histogram_ms": histogram(ages)}


def feature_summary(feature: Feature, values: Sequence[Any]) -> dict[str, Any]:
    """The distribution of one feature's `values`, by its type.

    numeric (int64, double, float): numeric_summary; bool: true/false shares;
    string: cardinality and the top values with their shares; float_vector:
    the dimension and the numeric summary of the vectors' L2 norms.
    """
    out: dict[str, Any] = {"type": feature.type}
    n = len(values)
    if feature.type == "bool":
        true = sum(1 for v in values if v)
        out |= {"count": n, "true_share": true / n if n else 0.0,
                "false_share": (n - true) / n if n else 0.0}  # fmt: skip
    elif feature.type == "string":
        counts = Counter(values)
        out |= {"count": n, "cardinality": len(counts),
                "top": [[v, c / n] for v, c in counts.most_common(TOP_VALUES)]}  # fmt: skip
    elif feature.type == "float_vector":
        matrix = np.asarray(values, dtype=np.float64).reshape(-1, feature.dim)
        out |= {"dim": feature.dim, "norm": numeric_summary(np.linalg.norm(matrix, axis=1))}
    else:
        out |= numeric_summary(np.asarray(values, dtype=np.float64))
    return out


def default_share(feature: Feature, values: Sequence[Any]) -> float:
    """Share of `values` equal to the feature's default (served defaults included)."""
    if not values:
        return 0.0
    default = feature.default
    if feature.type == "float_vector":
        hits = sum(1 for v in values if np.array_equal(np.asarray(v), np.asarray(default)))
    else:
        hits = sum(1 for v in values if v == default)
    return hits / len(values)
