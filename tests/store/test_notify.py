"""Change messages: both formats round-trip, and a replica applies only others' writes."""

import asyncio
from typing import Any

from service.store import notify
from service.store.feed import ChangeFeed

ORIGIN = b"o" * 16


def test_pushes_carry_values_and_loads_carry_keys_grouped_by_view() -> None:
    items = [(b"room_stats:v1:%d" % i, b"value-%d" % i) for i in range(10)]
    (message,) = notify.encode(ORIGIN, items, 123)
    assert message.startswith(notify.MAGIC)
    assert notify.decode(message) == (ORIGIN, 123, items)

    keys = [b"user_room_affinity:v2:%d:%d" % (i, i * 7) for i in range(2_500)]
    keys += [b"room_stats:v1:%d" % i for i in range(10)]
    many = [(k, b"v") for k in keys]
    messages = notify.encode(ORIGIN, many, 456)
    assert all(m.startswith(notify.MAGIC_KEYS) for m in messages)
    assert len(messages) == 4  # 1,000 keys at most per message, one view per message
    decoded = [k for m in messages for k in notify.decode_keys(m) or []]
    assert sorted(decoded) == sorted(keys)
    assert all(notify.decode(m)[:2] == (ORIGIN, 456) for m in messages)
    assert notify.decode_keys(message) is None


def test_keys_outside_the_key_format_are_framed_one_by_one() -> None:
    keys = [b"odd:v1:a\nb", b"odd:v1:c", b"nocolon"] + [b"p:v:%d" % i for i in range(1_000)]
    messages = notify.encode(ORIGIN, [(k, b"x") for k in keys], 1)
    decoded = [k for m in messages for k, _ in notify.decode(m)[2]]
    assert sorted(decoded) == sorted(keys)


class Listener:
    def __init__(self) -> None:
        self.absorbed: list[tuple[Any, Any]] = []
        self.resyncs = 0

    def absorb(self, items: Any, keys: Any) -> None:
        self.absorbed.append((items, keys))

    def resync(self) -> None:
        self.resyncs += 1

    def lost(self) -> None:
        pass


def test_a_replica_absorbs_others_writes_and_ignores_its_own_and_garbage() -> None:
    async def go() -> None:
        store = Listener()
        feed = ChangeFeed("redis://127.0.0.1:1", store, b"o" * 16)  # never connects here
        other = b"x" * 16
        push = [(b"room_stats:v1:1", b"value")]
        await feed._apply(notify.encode(other, push, 1)[0])
        load = [(b"room_stats:v1:%d" % i, b"v") for i in range(1_001)]
        for message in notify.encode(other, load, 1):
            await feed._apply(message)
        await feed._apply(notify.encode(feed.origin, push, 1)[0])  # its own write
        await feed._apply(b"LF1" + b"\x00" * 5)  # truncated
        await feed._apply(b"something else")
        assert store.absorbed[0] == (push, [push[0][0]])
        loaded = [k for items, keys in store.absorbed[1:] for k in keys if not items]
        assert loaded == [k for k, _ in load]
        assert len(store.absorbed) == 3
        await feed.close()

    asyncio.run(go())
