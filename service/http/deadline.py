"""HTTP deadlines: a per-request budget for storage reads, as gRPC has its caller's deadline.

HTTP has no standard deadline, so the budget is the server's default
(`LIVEFEAT_HTTP_TIMEOUT_S`), or the caller's `X-Livefeat-Timeout-Ms` header
(an integer of milliseconds, 1..60000). The budget runs from the moment the
route starts (body parsing included); the core gets it minus the margin kept
to encode and send (service/core/deadline.py). Rows not read in time are
served as defaults marked UNAVAILABLE, as on gRPC.
"""

from __future__ import annotations

import time

from starlette.requests import Request

from service.core.deadline import read_budget_s
from service.errors import InvalidArgument

HEADER = "X-Livefeat-Timeout-Ms"
_KEY = HEADER.lower()
MAX_TIMEOUT_MS = 60_000


class BadHeader(InvalidArgument):
    """A request header livefeat reads is malformed (answered 400, naming the header)."""


class Deadline:
    """When one request's answer is due. `budget_s` None: no deadline."""

    __slots__ = ("budget_s", "start")

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.start = time.perf_counter()

    def read_timeout_s(self) -> float | None:
        """Seconds the core may spend on tier reads from now (None: unbounded)."""
        if self.budget_s is None:
            return None
        return read_budget_s(self.budget_s - (time.perf_counter() - self.start))


def deadline_of(request: Request, default_s: float) -> Deadline:
    """The request's deadline: its header's, else `default_s` (0: none). Raises BadHeader."""
    raw = request.headers.get(_KEY)
    if raw is None:
        return Deadline(default_s or None)
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_TIMEOUT_MS:
        raise BadHeader(HEADER, f"expected an integer of milliseconds in 1..{MAX_TIMEOUT_MS}")
    return Deadline(int(text) / 1000)
