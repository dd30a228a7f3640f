"""Training/serving skew: offline values against the values served for them.

Three measures per feature, each flagged above a threshold:

- PSI (population stability index) of the served distribution against the
  offline one, over the offline deciles (numeric) or categories (string, bool).
  Flagged above 0.2, the usual "significant shift" line (0.1-0.2 is "moderate").
- KS: the two-sample Kolmogorov-Smirnov statistic (the largest gap between the
  two empirical CDFs), numeric features only. Flagged above 0.1.
- mismatch: among entities present in both, the share whose served value differs
  from the newest offline value. Flagged above 0.01. Floats are compared with
  the precision they are stored at (float: float32, relative 1e-6).

Skew measures need at least MIN_VALUES values on each side; with fewer they are
None (too little data to say), never flagged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.core.codec import Feature

PSI_FLAG = 0.2
KS_FLAG = 0.1
MISMATCH_FLAG = 0.01
MIN_VALUES = 50
PSI_BINS = 10
PSI_FLOOR = 1e-4  # an empty bin counts as this share: PSI stays finite
MAX_CATEGORIES = 20  # string categories beyond the offline top 20 count as one "other"
THRESHOLDS = {"psi": PSI_FLAG, "ks": KS_FLAG, "mismatch": MISMATCH_FLAG, "min_values": MIN_VALUES}


def _psi_of_counts(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(expected / max(expected.sum(), 1), PSI_FLOOR)
    a = np.maximum(actual / max(actual.sum(), 1), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_numeric(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of `actual` against `expected`, over `expected`'s quantile bins.

    Bins are (-inf, c1], (c1, c2], ... (ck, inf) for the distinct inner
    quantiles c of `expected`: a constant offline feature still gets two bins.
    """
    cuts = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    n = len(cuts) + 1
    e = np.bincount(np.searchsorted(cuts, expected, side="left"), minlength=n)
    a = np.bincount(np.searchsorted(cuts, actual, side="left"), minlength=n)
    return _psi_of_counts(e.astype(float), a.astype(float))


def psi_categorical(expected: Sequence[Any], actual: Sequence[Any]) -> float:
    """PSI over `expected`'s top categories (the rest, on both sides, as one)."""
    top = [v for v, _ in Counter(expected).most_common(MAX_CATEGORIES)]
    slot = {v: i for i, v in enumerate(top)}
    other = len(top)
    e = np.bincount([slot.get(v, other) for v in expected], minlength=other + 1)
    a = np.bincount([slot.get(v, other) for v in actual], minlength=other + 1)
    return _psi_of_counts(e.astype(float), a.astype(float))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: max |ECDF_a(x) - ECDF_b(x)| (0..1)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def same_value(feature: Feature, offline: Any, served: Any) -> bool:
    """Whether a served value is the offline value, at the precision it is stored at."""
    if feature.type == "float_vector":
        return bool(np.allclose(np.asarray(offline, np.float32), np.asarray(served, np.float32),
                                rtol=1e-6, atol=1e-7))  # fmt: skip
    if feature.type == "float":
        return bool(np.isclose(np.float32(offline), np.float32(served), rtol=1e-6, atol=1e-7))
    if feature.type == "double":
        return bool(np.isclose(float(offline), float(served), rtol=1e-12, atol=0.0))
    if feature.type == "int64":
        return int(offline) == int(served)
    return bool(offline == served)


def feature_skew(
    feature: Feature,
    offline: Sequence[Any] | np.ndarray,
    served: Sequence[Any] | np.ndarray,
    pairs: Sequence[tuple[Any, Any]],
) -> dict[str, Any]:
    """Skew of one feature: `offline` values (newest per entity), `served` values
    (stored values served for the sample), `pairs` (offline, served) for the
    same entities. Returns psi, ks, mismatch (each None when not measurable) and
    `flags`: the names of the measures over their thresholds.
    """
    psi = ks = None
    enough = len(offline) >= MIN_VALUES and len(served) >= MIN_VALUES
    if enough and feature.type in ("int64", "double", "float"):
        e = np.asarray(offline, dtype=np.float64)
        a = np.asarray(served, dtype=np.float64)
        psi, ks = psi_numeric(e, a), ks_statistic(e, a)
    elif enough and feature.type in ("string", "bool"):
        psi = psi_categorical(list(offline), list(served))
    mismatch = None
    if len(pairs) >= MIN_VALUES:
        differ = sum(1 for o, s in pairs if not same_value(feature, o, s))
        mismatch = differ / len(pairs)
    flags = [name for name, value, limit in
             (("psi", psi, PSI_FLAG), ("ks", ks, KS_FLAG), ("mismatch", mismatch, MISMATCH_FLAG))
             if value is not None and value > limit]  # fmt: skip
    return {"psi": psi, "ks": ks, "mismatch": mismatch, "compared": len(pairs), "flags": flags}
