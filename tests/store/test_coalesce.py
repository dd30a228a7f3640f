"""The coalescer's answers: a request's own flight, a shared one, a failed fetch."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.store.base import UNAVAILABLE
from service.store.coalesce import Coalescer, Flight


def test_a_request_gets_its_own_flight_s_answer_for_every_key() -> None:
    async def fetch(keys: dict[bytes, Any], flight: Flight) -> dict[bytes, Any]:
        return {k: (None if k == b"b" else b"v" + k) for k in keys}

    async def main() -> None:
        got = await Coalescer(fetch).get(dict.fromkeys([b"a", b"b", b"c"]), None)
        assert got == {b"a": b"va", b"b": None, b"c": b"vc"}

    asyncio.run(main())


def test_a_failed_or_partial_fetch_answers_unavailable_for_what_it_lacks() -> None:
    async def failing(keys: dict[bytes, Any], flight: Flight) -> dict[bytes, Any]:
        raise RuntimeError("a bug below")

    async def partial(keys: dict[bytes, Any], flight: Flight) -> dict[bytes, Any]:
        return {b"a": b"va"}

    async def main() -> None:
        keys = dict.fromkeys([b"a", b"b"])
        assert await Coalescer(failing).get(keys, None) == {b"a": UNAVAILABLE, b"b": UNAVAILABLE}
        assert await Coalescer(partial).get(keys, None) == {b"a": b"va", b"b": UNAVAILABLE}

    asyncio.run(main())


def test_a_request_joining_another_flight_gets_both_answers() -> None:
    calls: list[list[bytes]] = []
    gate = asyncio.Event()

    async def fetch(keys: dict[bytes, Any], flight: Flight) -> dict[bytes, Any]:
        calls.append(sorted(keys))
        await gate.wait()
        return {k: b"v" + k for k in keys}

    async def main() -> None:
        coalescer = Coalescer(fetch)
        first = asyncio.ensure_future(coalescer.get(dict.fromkeys([b"a", b"b"]), None))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(coalescer.get(dict.fromkeys([b"b", b"c"]), None))
        await asyncio.sleep(0)
        gate.set()
        assert await first == {b"a": b"va", b"b": b"vb"}
        assert await second == {b"b": b"vb", b"c": b"vc"}
        assert calls == [[b"a", b"b"], [b"c"]]

    asyncio.run(main())


def test_a_deadline_passed_answers_unavailable() -> None:
    async def slow(keys: dict[bytes, Any], flight: Flight) -> dict[bytes, Any]:
        await asyncio.sleep(1)
        return dict.fromkeys(keys, b"late")

    async def main() -> None:
        coalescer = Coalescer(slow)
        loop = asyncio.get_running_loop()
        got = await coalescer.get(dict.fromkeys([b"a"]), loop.time() + 0.01)
        assert got == {b"a": UNAVAILABLE}
        await coalescer.close()

    asyncio.run(main())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["read", "write", "turn"]),
            st.lists(st.sampled_from([b"a", b"b", b"c", b"d"]), min_size=1, max_size=3),
            st.integers(0, 3),
        ),
        max_size=30,
    )
)
def test_no_read_returns_a_value_older_than_a_write_before_it_started(
    ops: list[tuple[str, list[bytes], int]],
) -> None:
    """Reads, writes and turns of the loop in any order, fetches taking 0-3 turns: every
    read gets every key it asked, none older than the last write before the read."""
    stored = dict.fromkeys([b"a", b"b", b"c", b"d"], 0)
    turns = {"fetch": 0}  # how many turns a fetch starting now takes (the last op's)

    async def fetch(keys: dict[bytes, Any], flight: Flight) -> dict[bytes, Any]:
        read = {k: stored[k] for k in keys}  # what the tier holds when the fetch starts
        for _ in range(turns["fetch"]):
            await asyncio.sleep(0)
        return read

    async def main() -> None:
        coalescer = Coalescer(fetch)
        reads = []

        async def read(keys: list[bytes]) -> None:
            floor = {k: stored[k] for k in keys}
            got = await coalescer.get(dict.fromkeys(keys), None)
            reads.append((floor, {k: got[k] for k in keys}))

        tasks = []
        for op, keys, n in ops:
            turns["fetch"] = n
            if op == "read":
                tasks.append(asyncio.ensure_future(read(keys)))
            elif op == "write":
                for k in keys:
                    stored[k] += 1
                coalescer.forget(keys)
            else:
                for _ in range(n):
                    await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        for floor, got in reads:
            assert all(got[k] >= floor[k] for k in floor), (floor, got)

    asyncio.run(main())
