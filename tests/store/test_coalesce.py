"""The coalescer's answers: a request's own flight, a shared one, a failed fetch."""

from __future__ import annotations

import asyncio
from typing import Any

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
