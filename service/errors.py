"""The errors livefeat raises, none of which knows about HTTP or gRPC.

    LivefeatError
    ├── RequestError            the caller sent something we refuse (names the field)
    │   ├── InvalidArgument     malformed, wrong type, out of range
    │   ├── NotFound            unknown bundle, view or feature
    │   └── TooLarge            more ids or rows than one request may carry
    ├── RegistryError           the registry file is invalid (names file, view, field)
    ├── LoadError               a Parquet file cannot be loaded (names the column)
    └── TierError               a storage tier failed (names the tier)
        ├── TierUnavailable     the tier is down or cannot be reached
        └── TierTimeout         the tier did not answer in time

Each front end maps these to its wire codes in one table at its edge.
"""

from __future__ import annotations


class LivefeatError(Exception):
    """Base of every error livefeat raises on purpose."""


class RequestError(LivefeatError):
    """A request is refused; `field` is a dotted path into the request body."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        """The JSON-able body of this error."""
        return {"error": type(self).__name__, "field": self.field, "reason": self.reason}


class InvalidArgument(RequestError):
    """A field is malformed, of the wrong type or out of range."""


class NotFound(RequestError):
    """A bundle, view or feature named in the request does not exist."""


class TooLarge(RequestError):
    """The request carries more ids or rows than allowed."""


class RegistryError(LivefeatError):
    """The registry file is invalid; the message names the file, view and field."""


class LoadError(LivefeatError):
    """A batch load was refused before anything was written."""


class DataDirBusy(LivefeatError):
    """Another process (a running service, or another load) holds the data dir."""


class TierError(LivefeatError):
    """A storage tier failed to answer; `tier` is its name."""

    def __init__(self, tier: str, reason: str) -> None:
        super().__init__(f"{tier}: {reason}")
        self.tier = tier


class TierUnavailable(TierError):
    """The tier is down or cannot be reached."""


class TierTimeout(TierError):
    """The tier did not answer before the deadline."""
