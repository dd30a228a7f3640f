"""Checks of request fields shared by both front ends; errors name the field."""

from __future__ import annotations

from typing import Any

from service.core.codec import EVENT_TIME_MAX, INT64_MAX
from service.errors import InvalidArgument, TooLarge

_INT_ONLY = {int}


def check_id(field: str, value: Any) -> int:
    """An entity id: an integer in 0..2**63-1."""
    if type(value) is not int:
        raise InvalidArgument(
            field, f"expected a non-negative integer id, got {type(value).__name__}"
        )
    if not 0 <= value <= INT64_MAX:
        raise InvalidArgument(field, "an id is an integer in 0..9223372036854775807")
    return value


def check_ids(field: str, values: Any, max_count: int) -> list[int]:
    """A non-empty list of at most `max_count` ids (duplicates allowed)."""
    if not isinstance(values, list):
        raise InvalidArgument(field, "expected a list of ids")
    if not values:
        raise InvalidArgument(field, "must not be empty")
    if len(values) > max_count:
        raise TooLarge(field, f"{len(values)} ids, at most {max_count} per request")
    # Fast path: passes in C for the common, valid case (bools are not ints here).
    if set(map(type, values)) == _INT_ONLY and min(values) >= 0 and max(values) <= INT64_MAX:
        return values
    for i, v in enumerate(values):
        check_id(f"{field}[{i}]", v)
    raise AssertionError("unreachable")  # pragma: no cover


def check_pair(field: str, value: Any) -> tuple[int, int]:
    """A (user_id, room_id) pair given as a two-element list."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidArgument(field, "expected [user_id, room_id]")
    return check_id(f"{field}[0]", value[0]), check_id(f"{field}[1]", value[1])


def check_event_time(field: str, value: Any) -> int:
    """An event time in milliseconds since the epoch."""
    if type(value) is not int or not 0 <= value <= EVENT_TIME_MAX:
        raise InvalidArgument(field, "expected event time in ms since the epoch, 0..2**48-1")
    return value
