"""The stored form's header and key layout, shared by the core and the storage tiers.

Every stored value starts with one little-endian u64: the event time in ms since
the epoch in the low 48 bits (ms until the year 10889) and the low 16 bits of the
view's schema version in the high 16 (the full version is in the key; this one
catches a misplaced value). Tiers compare event times (newest event wins) from
this header alone; only the core's codec (service/core/codec.py) reads the rest.

Keys are ``view:version:id`` (or ``view:version:user_id:room_id``), built by the
registry's ViewPlan; the store only needs to find a key's view prefix (`view_prefix`).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("<Q")
HEADER_SIZE = HEADER.size
EVENT_TIME_MAX = (1 << 48) - 1


class CorruptValue(ValueError):
    """A stored value does not match the view's layout (format, schema version, length,
    or text that is not UTF-8). Reads treat such a value as absent from that tier."""


def header(version: int, event_time_ms: int) -> bytes:
    """The 8-byte header of a stored value."""
    return HEADER.pack(((version & 0xFFFF) << 48) | event_time_ms)


def event_time_of(value: bytes) -> int:
    """The event time (ms since the epoch) of a stored value, read from its header."""
    return int.from_bytes(value[:6], "little")


def view_prefix(key: bytes) -> bytes:
    """The ``view:version:`` prefix a storage key starts with; b"" if none."""
    first = key.find(b":")
    second = key.find(b":", first + 1) if first >= 0 else -1
    return key[: second + 1] if second >= 0 else b""
