"""Single flight: identical concurrent misses are fetched once, and no reader inherits
another reader's deadline or cancellation, nor a value older than a write it follows.

A fetch runs as a task of its own, apart from the requests waiting for it. Each
request waits only as long as its own deadline allows: one that times out or is
cancelled stops waiting, and the fetch goes on for the others (and still fills L1).

A write that lands while a fetch of the same key is under way detaches that fetch
(`forget`): a read that starts afterwards starts a fetch of its own instead of joining
one that may have read the old value, and the detached fetch's answer for that key is
not cached (`Flight.stale`). Requests that joined it before the write may still get the
old value: they started before the write was acknowledged.

    reader A --get--> [flight k1,k2] --fetch task--> tiers
    reader B --get--> joins k1's flight; waits with B's own deadline
    write k1 -------> forget(k1): flight detached, k1 marked stale
    reader C --get--> new flight for k1

Misses of requests that run in the same turn of the event loop share one fetch: a
fetch task takes its keys when it first runs, in the loop's next turn, and until then
the flight is *open* and takes the keys of other requests' misses too, up to
MAX_OPEN_KEYS. A saturated server parses several requests per wake-up, so this
replaces several tier calls (a Redis MGET, its reply's wake-up, a fetch task, a batch
decode per view) by one; each request still waits with its own deadline. It adds no
wait: the fetch starts when it would have started alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from service.store.base import UNAVAILABLE

K = bytes
D = TypeVar("D")  # what the fetch needs per key (a decoder)
log = logging.getLogger(__name__)
# An open flight takes other requests' keys while it holds fewer than this many: about
# ten requests' misses of a user and 100 rooms, one MGET of a few hundred KB.
MAX_OPEN_KEYS = 1024


class Flight:
    """One fetch of some keys; `stale` holds its keys written since it started.

    `parts` holds the keys (with what the fetch needs per key) given to it while it
    was open, one dict per request, until the fetch takes them; `size` counts them."""

    __slots__ = ("parts", "size", "stale", "task")

    def __init__(self, keys: dict[K, Any]) -> None:
        self.stale: set[bytes] = set()
        self.task: asyncio.Task[dict[bytes, Any]] | None = None
        self.parts: list[dict[K, Any]] = [keys]
        self.size = len(keys)


Fetch = Callable[[dict[K, D], Flight], Awaitable[dict[K, Any]]]


def _answer(flight: Flight, key: K) -> Any:
    task = flight.task
    if task is None or not task.done() or task.cancelled():
        return UNAVAILABLE
    return task.result().get(key, UNAVAILABLE)


async def _wait(tasks: set[asyncio.Task[Any]], deadline: float | None) -> None:
    """Until every task is done, or `deadline` (the loop's clock) has passed; the tasks
    are never cancelled. asyncio.wait with the loop taken from the tasks, and without
    its set of futures: 5.4 us against 8.1 for one task that ends at once (a timeit
    loop, 2026-12-07). On CPython 3.11 each asyncio.get_running_loop() (asyncio.wait,
    current_task, timeout) is also a getpid() system call, about 0.25 us."""
    pending = [t for t in tasks if not t.done()]
    if not pending:
        return
    loop = pending[0].get_loop()
    if deadline is not None and deadline <= loop.time():
        return
    waiter: asyncio.Future[None] = loop.create_future()
    left = len(pending)

    def one_done(_: asyncio.Task[Any]) -> None:
        nonlocal left
        left -= 1
        if not left and not waiter.done():
            waiter.set_result(None)

    def expired() -> None:
        if not waiter.done():
            waiter.set_result(None)

    for t in pending:
        t.add_done_callback(one_done)
    timer = None if deadline is None else loop.call_at(deadline, expired)
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        for t in pending:
            t.remove_done_callback(one_done)


class Coalescer(Generic[D]):
    """Runs `fetch(missed, flight)` once per set of keys no flight already covers, the
    misses of one turn of the loop together (the module doc).

    `fetch` returns a value (or None, not stored, or UNAVAILABLE) per key; it is told
    its flight so that it can skip caching the keys in `flight.stale`.
    """

    def __init__(self, fetch: Fetch[D]) -> None:
        self._fetch = fetch
        self._flights: dict[K, Flight] = {}
        self._tasks: set[asyncio.Task[dict[K, Any]]] = set()
        self._open: Flight | None = None  # a flight whose fetch has not yet started

    def __repr__(self) -> str:
        return f"<Coalescer [{len(self._flights)} keys in {len(self._tasks)} fetches]>"

    async def get(self, missed: dict[K, D], deadline: float | None) -> dict[K, Any]:
        """A value per key of `missed`; UNAVAILABLE where none arrived by `deadline`
        (the event loop's clock; None: wait for the fetch). The dict returned may be
        the fetch's own, shared with other readers and holding their keys as well:
        read the keys of `missed` in it, do not change it."""
        flight, others = self._launch(missed)
        tasks = {f.task for f in others.values() if f.task is not None}
        if flight is not None and flight.task is not None:
            tasks.add(flight.task)
        await _wait(tasks, deadline)
        if flight is None:
            return {key: _answer(f, key) for key, f in others.items()}
        task = flight.task
        mine: dict[K, Any] | None = None
        if task is not None and task.done() and not task.cancelled():
            mine = task.result()  # every key of the flight, unless the fetch failed
        if mine is None or len(mine) != flight.size:
            mine = {k: _answer(flight, k) for k in missed if k not in others}
        if not others:
            return mine
        out = dict(mine)
        for key, f in others.items():
            out[key] = _answer(f, key)
        return out

    def refresh(self, keys: dict[K, D]) -> None:
        """Fetch `keys` in the background (unless already under way); nobody waits."""
        self._launch(keys)

    def _launch(self, missed: dict[K, D]) -> tuple[Flight | None, dict[K, Flight]]:
        """The flight that fetches the keys of `missed` no other flight covers (None if
        there are none): the open one, which takes them, or a new one, then open; and
        the other flights that cover the rest."""
        flights = self._flights
        current = self._open
        if current is not None and current.size >= MAX_OPEN_KEYS:
            current = self._open = None
        others: dict[K, Flight] = {}
        mine = missed
        joined = 0  # keys of `missed` the open flight already has
        if flights:
            for key in missed:
                f = flights.get(key)
                if f is not None:
                    if f is current:
                        joined += 1
                    else:
                        others[key] = f
            if others or joined:
                mine = {k: d for k, d in missed.items() if k not in flights}
        if current is not None:
            if mine:
                current.parts.append(mine)
                current.size += len(mine)
                flights.update(dict.fromkeys(mine, current))
            elif not joined:
                return None, others
            return current, others
        if not mine:
            return None, others
        flight = Flight(mine)
        task = asyncio.get_running_loop().create_task(self._run(flight))
        flight.task = task
        self._tasks.add(task)
        self._open = flight
        flights.update(dict.fromkeys(mine, flight))
        return flight, others

    async def _run(self, flight: Flight) -> dict[K, Any]:
        if self._open is flight:  # its keys are taken now: later misses start another
            self._open = None
        parts = flight.parts
        keys = parts[0]
        if len(parts) > 1:
            keys = {}
            for part in parts:
                keys.update(part)
        flight.parts = []
        try:
            return await self._fetch(keys, flight)
        except Exception:  # a bug below: the readers get UNAVAILABLE, not an exception
            log.exception("a fetch of %d keys failed", len(keys))
            return {}
        finally:
            flights = self._flights
            for key in keys:
                if flights.get(key) is flight:
                    del flights[key]
            self._tasks.discard(flight.task)  # type: ignore[arg-type]

    def forget(self, keys: Sequence[K] | Any) -> None:
        """`keys` were written: detach their fetches under way (see the module doc), and
        close the open flight if it has one of them."""
        flights = self._flights
        if not flights:
            return
        for key in keys:
            flight = flights.pop(key, None)
            if flight is not None:
                flight.stale.add(key)
                if flight is self._open:
                    self._open = None

    def forget_all(self) -> None:
        """Every key may have been written (a lost notification): detach every fetch."""
        for key, flight in self._flights.items():
            flight.stale.add(key)
        self._flights.clear()
        self._open = None

    async def close(self) -> None:
        """Cancel the fetches under way."""
        self._open = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
