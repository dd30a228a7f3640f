"""How a row's value was found. The numbers are the gRPC enum's."""

from enum import IntEnum


class Status(IntEnum):
    """FOUND fresh; STALE older than max_age_s; DEFAULTED missing; UNAVAILABLE no tier answered."""

    FOUND = 1
    STALE = 2
    DEFAULTED = 3
    UNAVAILABLE = 4
