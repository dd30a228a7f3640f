"""The tier interface: batched, async, bytes in and bytes out.

A durable tier (RocksDB, Redis) stores encoded rows under their keys. Every
call is batched; failures are raised as `TierError` subclasses (never swallowed
into None: None means "not stored"). Write policy, newest event wins, is the
tier's job because only the tier can apply it atomically.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Protocol

Items = Sequence[tuple[bytes, bytes]]


class _Unavailable:
    def __repr__(self) -> str:
        return "UNAVAILABLE"


# What a read returns for a key that no tier could answer in time (None: not stored).
UNAVAILABLE: Final[Any] = _Unavailable()


class Tier(Protocol):
    """A durable storage tier."""

    name: str

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values for `keys`, aligned, None where absent. Raises TierError.

        Answers or raises (TierTimeout) within a bound of the tier's own: a read
        runs in a fetch that other requests may join (coalesce.py), and nothing
        above the tier cuts it short."""
        ...

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        """Store each (key, value) unless the stored value's event time is at least as new.

        Returns, aligned with `items`, whether each was written. Durable when it
        returns. Raises TierError; then nothing of the batch may be assumed written.
        """
        ...

    def scan_keys(self, prefix: bytes) -> AsyncIterator[list[bytes]]:
        """Every stored key starting with `prefix`, in batches (to rebuild in-memory
        indexes at start). Raises TierError."""
        ...

    async def sync(self) -> None:
        """Make everything written so far durable (a no-op where writes already are)."""
        ...

    async def ready(self) -> bool:
        """Whether the tier can answer now (for /readyz)."""
        ...

    async def close(self) -> None:
        """Release the tier's resources."""
        ...


class ImmediateReads(Protocol):
    """What a tier may offer beside Tier: reads answered on the calling thread, for
    the few keys a request misses (RocksDB; not Redis, which needs a round trip)."""

    def get_many_now(self, keys: Sequence[bytes]) -> list[bytes | None] | None:
        """Values for `keys` as Tier.get_many gives them, read at once; None (nothing
        read) where answering would wait. Raises TierError."""
        ...
