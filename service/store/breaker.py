"""A small circuit breaker: after `failures` consecutive failures a tier is skipped
for `open_s` seconds, then one probe call decides whether to close again.

Hand-written (about 50 lines) because the libraries add microseconds per call
or need another event loop (purgatory, pybreaker; docs/design.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed (calls go through), open (calls refused), half-open (one probe in flight)."""

    def __init__(
        self, failures: int = 3, open_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures_to_open = failures
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._probe_started = 0.0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state}, {self._failures} consecutive failures>"

    @property
    def state(self) -> str:
        """ "closed", "open" or "half-open"."""
        if self._failures < self.failures_to_open:
            return "closed"
        return "half-open" if self._clock() >= self._open_until else "open"

    def allow(self) -> bool:
        """Whether a call may go through now (half-open: only the first caller probes).

        A probe that has given no verdict for `open_s` is presumed lost (its caller
        vanished without calling `abandon`): another caller may probe.
        """
        state = self.state
        if state == "closed":
            return True
        if state == "half-open":
            now = self._clock()
            if not self._probing or now - self._probe_started >= self.open_s:
                self._probing = True
                self._probe_started = now
                return True
        return False

    def abandon(self) -> None:
        """The call that was let through ended without a verdict (it was cancelled):
        if it was the probe, the next caller probes instead."""
        self._probing = False

    def success(self) -> None:
        """A call succeeded: close."""
        self._failures = 0
        self._probing = False

    def failure(self) -> None:
        """A call failed: count it; open (again) at the threshold."""
        self._failures += 1
        self._probing = False
        if self._failures >= self.failures_to_open:
            self._open_until = self._clock() + self.open_s
