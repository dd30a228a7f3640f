"""How much of a request's remaining time the core may spend reading tiers.

Both front ends keep a margin of the caller's remaining time to encode and send
the answer: 10% of it, at least a millisecond. The core's reads then end in
time, and rows not read are served as defaults marked UNAVAILABLE.
"""

from __future__ import annotations

MARGIN_FRACTION = 0.1
MIN_MARGIN_S = 0.001


def read_budget_s(remaining_s: float) -> float:
    """Seconds for tier reads out of `remaining_s` seconds left to answer (never negative)."""
    return max(remaining_s - max(remaining_s * MARGIN_FRACTION, MIN_MARGIN_S), 0.0)
