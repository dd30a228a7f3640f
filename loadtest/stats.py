"""Pure statistics for the benchmark runner: percentiles, medians, throughput, ratios.

Percentiles use the **nearest-rank** method: the q-th percentile of n samples is the
smallest sample such that at least q% of the samples are less than or equal to it, i.e.
the sample at 1-based rank ``ceil(q / 100 * n)`` in sorted order. Every percentile is
therefore a latency that was actually observed (no interpolation), and p99.9 of fewer
than 1,000 samples is simply the maximum. The rank is computed in exact decimal
arithmetic, so p99.9 of 1..1000 is 999, not 1000 through a float rounding error.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

__all__ = [
    "PERCENTILES",
    "cpu_percent",
    "latency_summary",
    "median",
    "median_of_runs",
    "percentile",
    "percentiles",
    "ratio",
    "throughput",
]

PERCENTILES: tuple[float, ...] = (50, 90, 99, 99.9)
"""The percentiles reported for every run (docs/benchmark-workload.md)."""


def _rank(q: float, n: int) -> int:
    """1-based nearest rank of the q-th percentile among n samples."""
    exact = Fraction(repr(float(q))) * n / 100  # repr: 99.9 is 999/10, not 99.90000000000000568
    return max(1, math.ceil(exact))


def percentile(samples: Sequence[float], q: float, *, is_sorted: bool = False) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100) of ``samples``.

    Raises ValueError on no samples or q outside (0, 100]. Pass ``is_sorted=True`` to skip
    sorting samples that are already in ascending order.
    """
    return percentiles(samples, (q,), is_sorted=is_sorted)[0]


def percentiles(
    samples: Sequence[float], qs: Iterable[float] = PERCENTILES, *, is_sorted: bool = False
) -> list[float]:
    """Nearest-rank percentiles of ``samples``, one per ``qs`` (sorts once)."""
    if len(samples) == 0:
        raise ValueError("no samples: a percentile of an empty list is undefined")
    ordered = samples if is_sorted else sorted(samples)
    out = []
    for q in qs:
        if not 0 < q <= 100:
            raise ValueError(f"percentile {q} is outside (0, 100]")
        out.append(ordered[_rank(q, len(ordered)) - 1])
    return out


def percentile_key(q: float) -> str:
    """The name of a percentile in reports: 50 -> "p50", 99.9 -> "p99.9"."""
    return f"p{q:g}"


def latency_summary(samples_ns: Sequence[int], qs: Iterable[float] = PERCENTILES) -> dict[str, Any]:
    """Latency figures in milliseconds from samples in nanoseconds.

    Keys: count, mean, min, max and one per percentile ("p50", "p90", "p99", "p99.9").
    Raises ValueError on no samples.
    """
    if len(samples_ns) == 0:
        raise ValueError("no latency samples")
    ordered = sorted(samples_ns)
    qs = tuple(qs)
    out: dict[str, Any] = {"count": len(ordered)}
    for q, v in zip(qs, percentiles(ordered, qs, is_sorted=True), strict=True):
        out[percentile_key(q)] = v / 1e6
    out["mean"] = math.fsum(ordered) / len(ordered) / 1e6
    out["min"] = ordered[0] / 1e6
    out["max"] = ordered[-1] / 1e6
    return out


def median(values: Iterable[float]) -> float:
    """The median (the mean of the two middle values for an even count). ValueError if empty."""
    data = list(values)
    if not data:
        raise ValueError("no values: the median of an empty list is undefined")
    return statistics.median(data)


def throughput(completed: int, seconds: float) -> float:
    """Requests per second. Raises ValueError unless seconds > 0 and completed >= 0."""
    if seconds <= 0:
        raise ValueError(f"a throughput needs a positive duration, got {seconds} s")
    if completed < 0:
        raise ValueError(f"negative request count {completed}")
    return completed / seconds


def cpu_percent(cpu_seconds: float, wall_seconds: float) -> float:
    """CPU time as a percentage of wall time (100 = one core busy all the time)."""
    if wall_seconds <= 0:
        raise ValueError(f"a CPU share needs a positive duration, got {wall_seconds} s")
    return 100.0 * cpu_seconds / wall_seconds


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def median_of_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-figure medians over repetitions of one run.

    Every numeric figure (nested dicts included) is the median of that figure across the
    runs, taken independently: the median p99 need not come from the run with the median
    throughput. Non-numeric values are kept when all runs agree and dropped otherwise; a
    figure missing (or None) in some runs is the median of the runs that have it. Raises
    ValueError on no runs.
    """
    if not runs:
        raise ValueError("no runs: nothing to take a median of")
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for run in runs for k in run))
    for key in keys:
        values = [run[key] for run in runs if run.get(key) is not None]
        if not values:
            out[key] = None
        elif all(isinstance(v, Mapping) for v in values):
            out[key] = median_of_runs(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = median(values)
        elif all(v == values[0] for v in values):
            out[key] = values[0]
    return out


MIN_REQUESTS_PER_SECOND = 20  # fewer in a second: its p99 says nothing


def per_second(
    latencies_ns: Sequence[int], done_ns: Sequence[int], t0_ns: int
) -> list[dict[str, Any]]:
    """Per second of the window (by completion time): requests, p50 and p99 in ms."""
    buckets: dict[int, list[int]] = {}
    for latency, done in zip(latencies_ns, done_ns, strict=True):
        buckets.setdefault((done - t0_ns) // 1_000_000_000, []).append(latency)
    out = []
    for second in sorted(buckets):
        samples = sorted(buckets[second])
        out.append({
            "second": second,
            "requests": len(samples),
            "p50_ms": percentile(samples, 50, is_sorted=True) / 1e6,
            "p99_ms": percentile(samples, 99, is_sorted=True) / 1e6,
        })  # fmt: skip
    return out


def worst_second_p99(seconds: Sequence[Mapping[str, Any]]) -> float | None:
    """The highest per-second p99 (ms) among seconds with enough requests to have one."""
    p99s = [s["p99_ms"] for s in seconds if s["requests"] >= MIN_REQUESTS_PER_SECOND]
    return max(p99s) if p99s else None
