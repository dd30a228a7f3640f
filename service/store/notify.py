"""Change notifications between replicas over Redis pub/sub.

Why pub/sub rather than a Stream: a notification is only useful for a moment
(it tells replicas to drop L1 entries that a TTL would expire anyway), pub/sub
delivers it with one hop and nothing to trim or acknowledge, and what it loses
while a replica is disconnected is covered by one rule: a replica whose
subscription (re)starts drops its whole L1. A Stream would add per-replica
read positions and trimming to recover messages we do not need to recover.

Two kinds of message, both starting with a magic, origin (16 bytes) and sent_at_ms (<q):

- b"LF1", with values (pushes, up to VALUES_UP_TO_ITEMS items): items, each <H key
  length, key, <I value length, value. Replicas also keep the values in their RocksDB.
- b"LF2", keys only (loads): <H prefix length, the view's key prefix (``view:version:``),
  then the rest of every key (its ids, digits and colons) joined by newlines. A replica
  splits it with one `bytes.split`: absorbing a million loaded keys cost the serving
  loop 4.6 us per key with per-item framing, the bulk of its time during a load.

Messages are small (KEYS_PER_MESSAGE keys, MAX_MESSAGE_BYTES) and a replica yields
its event loop after applying each one, so requests interleave with a load's flood of
notifications. Redis Cluster propagates classic PUBLISH to every node, so one plain
connection to any node serves a cluster too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from service import metrics
from service.core.registry import view_prefix
from service.errors import TierUnavailable

log = logging.getLogger(__name__)
CHANNEL = b"livefeat:changes"
MAGIC = b"LF1"  # items with values
MAGIC_KEYS = b"LF2"  # keys only, by view prefix
_HEAD = struct.Struct("<16sq")
_PREFIX_LEN = struct.Struct("<H")
# Small messages: a replica applies one message at a time on its event loop, so
# these bound how long absorbing them holds up requests (well under a millisecond).
MAX_MESSAGE_BYTES = 64 * 1024
KEYS_PER_MESSAGE = 1_000
VALUES_UP_TO_ITEMS = 1_000  # larger writes (loads) notify keys only


def encode(
    origin: bytes, items: Sequence[tuple[bytes, bytes]], sent_at_ms: int, with_values: bool = True
) -> list[bytes]:
    """Messages for `items`: with their values up to VALUES_UP_TO_ITEMS items, else (or
    if not `with_values`: loads) keys only."""
    if not with_values or len(items) > VALUES_UP_TO_ITEMS:
        return encode_keys(origin, [k for k, _ in items], sent_at_ms)
    return encode_items(origin, items, sent_at_ms)


def encode_keys(origin: bytes, keys: Sequence[bytes], sent_at_ms: int) -> list[bytes]:
    """LF2 messages of at most KEYS_PER_MESSAGE keys each, grouped by view prefix."""
    head = MAGIC_KEYS + _HEAD.pack(origin, sent_at_ms)
    groups: dict[bytes, list[bytes]] = {}
    prefix: bytes | None = None
    cut, rests = 0, []
    for key in keys:
        if prefix is None or not key.startswith(prefix):  # a batch is mostly one view
            prefix = view_prefix(key)
            cut = len(prefix)
            rests = groups.setdefault(prefix, [])
        rests.append(key[cut:])
    messages = []
    for prefix, rests in groups.items():
        for start in range(0, len(rests), KEYS_PER_MESSAGE):
            chunk = rests[start : start + KEYS_PER_MESSAGE]
            body = b"\n".join(chunk)
            if body.count(b"\n") != len(chunk) - 1:  # not our key format: frame each one
                messages += encode_items(origin, [(prefix + r, b"") for r in chunk], sent_at_ms)
                continue
            messages.append(head + _PREFIX_LEN.pack(len(prefix)) + prefix + body)
    return messages


def encode_items(
    origin: bytes, items: Sequence[tuple[bytes, bytes]], sent_at_ms: int
) -> list[bytes]:
    """LF1 messages (each at most about MAX_MESSAGE_BYTES); values b"" mean key only."""
    head = MAGIC + _HEAD.pack(origin, sent_at_ms)
    messages, parts, size = [], [head], len(head)
    for key, value in items:
        part = len(key).to_bytes(2, "little") + key + len(value).to_bytes(4, "little") + value
        if size + len(part) > MAX_MESSAGE_BYTES and len(parts) > 1:
            messages.append(b"".join(parts))
            parts, size = [head], len(head)
        parts.append(part)
        size += len(part)
    if len(parts) > 1:
        messages.append(b"".join(parts))
    return messages


def header(message: bytes) -> tuple[bytes, int]:
    """(origin, sent_at_ms) of a message. Raises ValueError if it is not ours."""
    if not message.startswith((MAGIC, MAGIC_KEYS)) or len(message) < 3 + _HEAD.size:
        raise ValueError("not a livefeat change message")
    return _HEAD.unpack_from(message, 3)  # type: ignore[return-value]


def decode_keys(message: bytes) -> list[bytes] | None:
    """The keys of an LF2 (keys only) message; None for an LF1 message."""
    if not message.startswith(MAGIC_KEYS):
        return None
    pos = len(MAGIC_KEYS) + _HEAD.size
    (size,) = _PREFIX_LEN.unpack_from(message, pos)
    prefix = message[pos + 2 : pos + 2 + size]
    return [prefix + rest for rest in message[pos + 2 + size :].split(b"\n")]


def decode(message: bytes) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
    """(origin, sent_at_ms, items) of a message; keys-only items have value b"".
    Raises ValueError if it is not ours."""
    origin, sent_at_ms = header(message)
    keys = decode_keys(message)
    if keys is not None:
        return origin, sent_at_ms, [(k, b"") for k in keys]
    pos = len(MAGIC) + _HEAD.size
    items = []
    while pos < len(message):
        klen = int.from_bytes(message[pos : pos + 2], "little")
        key = message[pos + 2 : pos + 2 + klen]
        pos += 2 + klen
        vlen = int.from_bytes(message[pos : pos + 4], "little")
        items.append((key, message[pos + 4 : pos + 4 + vlen]))
        pos += 4 + vlen
    return origin, sent_at_ms, items


class ChangeFeed:
    """Publishes this replica's accepted writes; applies other replicas' writes to `store`.

    `store` needs `absorb(items_with_values, keys)` and `on_feed(subscribed)`.
    """

    def __init__(self, url: str, store: Any, *, channel: bytes = CHANNEL) -> None:
        self.channel = channel
        self.origin = uuid.uuid4().bytes
        self.store = store
        plain = url.replace("+cluster", "", 1)
        self._pub = aredis.Redis.from_url(plain, socket_timeout=1.0, socket_connect_timeout=0.5)
        self._sub_url = plain
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.subscriptions = 0  # how many times a subscription (re)started
        self._connected = metrics.CHANGE_FEED_CONNECTED
        self._received = metrics.CHANGE_FEED_KEYS.labels("received")
        self._delay = metrics.CHANGE_FEED_DELAY_SECONDS

    def __repr__(self) -> str:
        state = "subscribed" if self.connected.is_set() else "disconnected"
        return f"<ChangeFeed {self.channel.decode()} {state}, {self.subscriptions} subscriptions>"

    async def publish(self, items: Sequence[tuple[bytes, bytes]], with_values: bool = True) -> None:
        """Tell the other replicas about written items (see `encode`). Raises TierUnavailable."""
        if not items:
            return
        messages = encode(self.origin, items, time.time_ns() // 1_000_000, with_values)
        try:
            if len(messages) == 1:
                await self._pub.publish(self.channel, messages[0])
            else:  # a load's batch: one round trip
                async with self._pub.pipeline(transaction=False) as pipe:
                    for message in messages:
                        pipe.publish(self.channel, message)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            raise TierUnavailable("change_feed", f"publish: {exc}") from exc
        metrics.CHANGE_FEED_KEYS.labels("published").inc(len(items))

    async def subscribers(self) -> int:
        """How many processes (serving replicas) subscribe to the channel, on the node
        this feed publishes to. Raises TierUnavailable."""
        try:
            got = await self._pub.pubsub_numsub(self.channel)
        except (RedisError, OSError) as exc:
            raise TierUnavailable("change_feed", f"pubsub numsub: {exc}") from exc
        return int(got[0][1]) if got else 0

    def start(self) -> None:
        """Subscribe in the background, and again whenever the subscription is lost."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff_s = 0.05
        while True:
            client = aredis.Redis.from_url(
                self._sub_url, socket_connect_timeout=0.5, client_name=f"livefeat-sub-{os.getpid()}"
            )
            try:
                await self._listen(client)
            except (RedisError, OSError) as exc:
                log.warning("change feed lost its subscription: %s", exc)
            finally:
                if self.connected.is_set():
                    self.store.on_feed(False)
                self.connected.clear()
                self._connected.set(0)
                await client.aclose()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 2.0)

    async def _listen(self, client: aredis.Redis) -> None:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            async for message in pubsub.listen():
                if message["type"] == "subscribe":
                    # Whatever was published while we were away is lost: the store
                    # forgets its L1 and rebuilds what it derived from notifications.
                    self.subscriptions += 1
                    self.connected.set()
                    self._connected.set(1)
                    self.store.on_feed(True)
                    log.info("change feed subscribed; L1 cleared")
                elif message["type"] == "message":
                    self._apply(message["data"])
                    # Let requests run between messages (redis-py hands over messages
                    # already buffered without yielding): a load's flood of them would
                    # otherwise hold the loop for as long as the backlog lasts.
                    await asyncio.sleep(0)
        finally:
            await pubsub.aclose()

    def _apply(self, data: bytes) -> None:
        try:
            origin, sent_at_ms = header(data)
            if origin == self.origin:  # our own write: nothing to decode
                return
            keys = decode_keys(data)
            items = [] if keys is not None else decode(data)[2]
        except (ValueError, struct.error) as exc:
            log.warning("ignored a malformed change message (%d bytes): %s", len(data), exc)
            return
        self._delay.observe(max(time.time_ns() // 1_000_000 - sent_at_ms, 0) / 1000)
        if keys is None:
            keys = [k for k, _ in items]
            items = [(k, v) for k, v in items if v]
        self._received.inc(len(keys))
        self.store.absorb(items, keys)

    async def close(self) -> None:
        """Stop subscribing and close both connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pub.aclose()
