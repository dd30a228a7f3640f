"""Admission: a bound on the requests one process works on at once, shared by both front ends.

Why refuse instead of queueing: past the knee of the latency curve, every extra
request in the event loop only adds to the wait of all the others, so a queue
turns overload into timeouts for everyone (goodput collapses). Refusing the
excess at once (HTTP 429 with Retry-After, gRPC RESOURCE_EXHAUSTED) keeps the
admitted requests at knee latency and tells callers to back off or go to
another replica. Health, readiness and metrics are never counted nor refused
(the edges do not ask for them).

Where the knee lies depends on the request mix, the tiers and the machine: a
process whose requests wait on Redis takes many more in flight than one that
reads L1 and spends CPU. So by default the bound adapts (`AdaptiveLimit`): it
grows while the latency of admitted requests stays near its recent floor and
shrinks when they wait for the event loop (`LoopLag`), not when they wait for a
slow Redis (docs/operations.md, "Overload").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from service.errors import LivefeatError


class Overloaded(LivefeatError):
    """The process already works on as many requests as it may; retry after `retry_after_s`."""

    def __init__(self, limit: int, retry_after_s: float) -> None:
        super().__init__(f"over {limit} requests in flight in this process: retry later")
        self.limit = limit
        self.retry_after_s = retry_after_s


class LoopLag:
    """How late the event loop runs what is due: the signal that requests wait for CPU.

    `run()` (a task on the serving loop) sleeps `interval_s` again and again and
    adds up how late each wake-up came; `take()` gives the mean lateness in seconds
    since the last take (0.0 when no wake-up came yet) and starts again. A loop
    waiting on Redis or RocksDB is idle and wakes on time; a loop with more work
    ready than it can run wakes late, by about the work queued ahead.
    """

    def __init__(
        self, interval_s: float = 0.005, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._late_s = 0.0
        self._wakeups = 0

    def __repr__(self) -> str:
        return f"<LoopLag every {self.interval_s * 1000:g} ms>"

    def note(self, late_s: float) -> None:
        """One wake-up came `late_s` after it was due."""
        self._late_s += late_s
        self._wakeups += 1

    def take(self) -> float:
        """The mean lateness since the last take, in seconds."""
        mean = self._late_s / self._wakeups if self._wakeups else 0.0
        self._late_s = 0.0
        self._wakeups = 0
        return mean

    async def run(self) -> None:
        """Measure until cancelled."""
        clock, interval = self._clock, self.interval_s
        while True:
            due = clock() + interval
            await asyncio.sleep(interval)
            self.note(max(0.0, clock() - due))


class AdaptiveLimit:
    """A bound on requests in flight led by their latency (additive increase, multiplicative decrease).

    Latencies of admitted requests are taken in windows of `window` answers. The
    baseline is the lowest window median of the last `baseline_s` seconds: what a
    request costs when it does not wait behind others. At the end of each window,
    with `peak` the most requests in flight at once during it:
    - median > `tolerance` x baseline, peak > `floor`, and the loop ran late by more
      than `lag_fraction` x baseline on average (`lag`, a LoopLag's take; None: not
      asked): requests wait behind each other for the loop; the limit becomes
      `backoff` x min(limit, peak), never under `floor`. (Slow answers with few in
      flight, such as big requests, or with an idle loop, such as a slow Redis, are
      not queueing and shrink nothing.)
    - median within that, and the peak reached the limit (demand is at least the
      limit): it grows by one, never over `ceiling`;
    - otherwise it stays: an idle process does not raise its bound.
    Except: with more than `spin_ratio` refusals per answer in the window, callers
    retry at once instead of backing off; refusing them costs more CPU than it
    saves (and the lateness it causes would shrink the bound further, down to a
    process busy with refusals only), so the bound grows by one instead and does
    not shrink for `spin_hold_s`: such callers get what no bound would give them.
    A baseline older than `baseline_s` is forgotten, so a lasting change of the
    workload (a slower Redis, bigger requests) moves it within that time.
    """

    def __init__(self, ceiling: int, floor: int = 2, tolerance: float = 1.5, window: int = 16,
                 backoff: float = 0.8, baseline_s: float = 30.0,
                 lag: Callable[[], float] | None = None, lag_fraction: float = 1.0,
                 spin_ratio: float = 4.0, spin_hold_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor ({floor}) <= ceiling ({ceiling})")
        if tolerance <= 1 or not 0 < backoff < 1 or window < 1 or baseline_s <= 0:
            raise ValueError("need tolerance > 1, 0 < backoff < 1, window >= 1, baseline_s > 0")
        self.ceiling = ceiling
        self.floor = floor
        self.tolerance = tolerance
        self.window = window
        self.backoff = backoff
        self.baseline_s = baseline_s
        self._lag = lag
        self.lag_fraction = lag_fraction
        self.spin_ratio = spin_ratio
        self.spin_hold_s = spin_hold_s
        self._spinning_until = float("-inf")
        self._clock = clock
        # Start low: the bound grows by one per window while answers stay fast, so it
        # reaches what the traffic needs within a few windows, without a first burst.
        self._limit = float(floor)
        self.limit = floor
        self.peak = 0  # the most in flight at once in this window (kept by Admission)
        self.refusals = 0  # reads refused in this window (counted by Admission)
        self._samples: list[float] = []
        self._bucket_s = baseline_s / 10
        self._minima: deque[tuple[int, float]] = deque()  # (bucket number, lowest median)

    def __repr__(self) -> str:
        return f"<AdaptiveLimit {self.limit} in [{self.floor}, {self.ceiling}]>"

    @property
    def baseline(self) -> float | None:
        """The baseline latency in seconds now (None before the first window)."""
        return min(m for _, m in self._minima) if self._minima else None

    def observe(self, latency_s: float, in_flight: int) -> None:
        """One admitted request was answered after `latency_s`; `in_flight` are left."""
        samples = self._samples
        samples.append(latency_s)
        if len(samples) >= self.window:
            samples.sort()
            self._close(samples[len(samples) // 2])
            samples.clear()
            self.peak = in_flight

    def _close(self, median: float) -> None:
        bucket = int(self._clock() // self._bucket_s)
        minima = self._minima
        while minima and minima[0][0] <= bucket - 10:
            minima.popleft()
        if minima and minima[-1][0] == bucket:
            if median < minima[-1][1]:
                minima[-1] = (bucket, median)
        else:
            minima.append((bucket, median))
        baseline = min(m for _, m in minima)
        lag_s = self._lag() if self._lag is not None else None
        refusals, self.refusals = self.refusals, 0
        now = self._clock()
        if refusals > self.spin_ratio * self.window:
            # Callers retry at once: refusing them costs the loop more than serving
            # them would, and the lateness it causes would only shrink the bound more.
            self._spinning_until = now + self.spin_hold_s
            self._limit = min(float(self.ceiling), self._limit + 1)
        elif median > self.tolerance * baseline:
            if (self.peak > self.floor and now >= self._spinning_until
                    and (lag_s is None or lag_s > self.lag_fraction * baseline)):  # fmt: skip
                self._limit = max(float(self.floor), min(self._limit, self.peak) * self.backoff)
        elif self.peak >= self.limit:
            self._limit = min(float(self.ceiling), self._limit + 1)
        self.limit = int(self._limit)


class Admission:
    """A bound on requests in flight (0: none). Not thread-safe: one event loop.

    `enter()` admits a read or raises Overloaded, and returns the time it was
    admitted; each admitted read must `leave(admitted)` exactly once. With an
    `adaptive` limit (AdaptiveLimit, its ceiling `limit`) the reads' bound follows
    their latency. Writes (`enter_write` / `leave_write`: pushes, streamed loads)
    are bounded by `limit` only: a push is not refused because reads queue, and a
    long load stream does not take a read's place. Both count toward `limit`.
    `retry_after_s` is what refused callers are told to wait. `gauge` and
    `limit_gauge` (prometheus Gauges, optional) follow the count in flight and the
    reads' bound in force.
    """

    def __init__(self, limit: int, retry_after_s: float = 1.0, gauge: Any = None,
                 adaptive: AdaptiveLimit | None = None, limit_gauge: Any = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if adaptive is not None and adaptive.ceiling != limit:
            raise ValueError("the adaptive limit's ceiling must be the configured limit")
        self.ceiling = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0  # reads and writes
        self.reads = 0
        self.refused = 0
        self._gauge = gauge
        self._adaptive = adaptive
        self._limit_gauge = limit_gauge
        self._clock = clock
        if limit_gauge is not None:
            limit_gauge.set(self.limit)

    def __repr__(self) -> str:
        bound = self.limit or "unbounded"
        return f"<Admission {self.in_flight}/{bound} in flight, {self.refused} refused>"

    @property
    def limit(self) -> int:
        """The reads' bound in force now (0: none)."""
        return self._adaptive.limit if self._adaptive is not None else self.ceiling

    def _refuse(self, limit: int) -> Overloaded:
        self.refused += 1
        return Overloaded(limit, self.retry_after_s)

    def _admit(self) -> None:
        self.in_flight += 1
        if self._gauge is not None:
            self._gauge.inc()

    def _release(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("leave() without a matching enter()")
        self.in_flight -= 1
        if self._gauge is not None:
            self._gauge.dec()

    def enter(self) -> float:
        """Admit one read and return when. Raises Overloaded (and counts it) at the bound."""
        limit = self.limit
        if limit and (self.reads >= limit or self.in_flight >= self.ceiling):
            if self._adaptive is not None:
                self._adaptive.refusals += 1
            raise self._refuse(limit)
        self._admit()
        self.reads += 1
        adaptive = self._adaptive
        if adaptive is not None and self.reads > adaptive.peak:
            adaptive.peak = self.reads
        return self._clock()

    def leave(self, admitted: float | None = None) -> None:
        """An admitted read is answered (or failed); `admitted` is what enter() returned."""
        if self.reads <= 0:
            raise RuntimeError("leave() without a matching enter()")
        self._release()
        self.reads -= 1
        adaptive = self._adaptive
        if adaptive is not None and admitted is not None:
            before = adaptive.limit
            adaptive.observe(self._clock() - admitted, self.reads)
            if adaptive.limit != before and self._limit_gauge is not None:
                self._limit_gauge.set(adaptive.limit)

    def enter_write(self) -> None:
        """Admit one write: refused only when `limit` requests of any kind are in flight."""
        if self.ceiling and self.in_flight >= self.ceiling:
            raise self._refuse(self.ceiling)
        self._admit()

    def leave_write(self) -> None:
        """An admitted write is answered (or failed)."""
        self._release()
