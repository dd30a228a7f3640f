"""Admission: a bound on the requests one process works on at once, shared by both front ends.

Why refuse instead of queueing: past the knee of the latency curve, every extra
request in the event loop only adds to the wait of all the others, so a queue
turns overload into timeouts for everyone (goodput collapses). Refusing the
excess at once (HTTP 429 with Retry-After, gRPC RESOURCE_EXHAUSTED) keeps the
admitted requests at knee latency and tells callers to back off or go to
another replica. Health, readiness and metrics are never counted nor refused
(the edges do not ask for them).
"""

from __future__ import annotations

from typing import Any

from service.errors import LivefeatError


class Overloaded(LivefeatError):
    """The process already works on as many requests as it may; retry after `retry_after_s`."""

    def __init__(self, limit: int, retry_after_s: float) -> None:
        super().__init__(f"over {limit} requests in flight in this process: retry later")
        self.limit = limit
        self.retry_after_s = retry_after_s


class Admission:
    """At most `limit` requests in flight (0: no limit). Not thread-safe: one event loop.

    `enter()` admits a request or raises Overloaded; each admitted request must
    `leave()` exactly once. `retry_after_s` is what refused callers are told to wait.
    `gauge` (a prometheus Gauge, optional) follows the count in flight.
    """

    def __init__(self, limit: int, retry_after_s: float = 1.0, gauge: Any = None) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.refused = 0
        self._gauge = gauge

    def __repr__(self) -> str:
        bound = self.limit or "unbounded"
        return f"<Admission {self.in_flight}/{bound} in flight, {self.refused} refused>"

    def enter(self) -> None:
        """Admit one request. Raises Overloaded (and counts it) when `limit` are in flight."""
        if self.limit and self.in_flight >= self.limit:
            self.refused += 1
            raise Overloaded(self.limit, self.retry_after_s)
        self.in_flight += 1
        if self._gauge is not None:
            self._gauge.inc()

    def leave(self) -> None:
        """An admitted request is answered (or failed)."""
        if self.in_flight <= 0:
            raise RuntimeError("leave() without a matching enter()")
        self.in_flight -= 1
        if self._gauge is not None:
            self._gauge.dec()
