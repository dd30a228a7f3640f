"""Change notifications between replicas over Redis pub/sub.

Why pub/sub rather than a Stream: a notification is only useful for a moment
(it tells replicas to drop L1 entries that a TTL would expire anyway), pub/sub
delivers it with one hop and nothing to trim or acknowledge, and what it loses
while a replica is disconnected is covered by one rule: a replica whose
subscription (re)starts drops its whole L1. A Stream would add per-replica
read positions and trimming to recover messages we do not need to recover.

Message: b"LF1" | origin (16 bytes) | sent_at_ms (<q) | items, each
<H key length, key, <I value length, value (length 0: key only). Pushes carry
values, so replicas also keep them in their local RocksDB; large loads carry
keys only. Redis Cluster propagates classic PUBLISH to every node, so one
plain connection to any node serves a cluster too.
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
from service.errors import TierUnavailable

log = logging.getLogger(__name__)
CHANNEL = b"livefeat:changes"
MAGIC = b"LF1"
_HEAD = struct.Struct("<16sq")
# Small messages: a replica applies one message at a time on its event loop, so
# this bounds how long absorbing a bulk load's keys holds up requests (~2k keys).
MAX_MESSAGE_BYTES = 64 * 1024
VALUES_UP_TO_ITEMS = 1_000  # larger writes (loads) notify keys only


def encode(origin: bytes, items: Sequence[tuple[bytes, bytes]], sent_at_ms: int) -> list[bytes]:
    """Messages (each at most about MAX_MESSAGE_BYTES) for `items`; values b"" mean key only."""
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


def decode(message: bytes) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
    """(origin, sent_at_ms, items) of a message. Raises ValueError if it is not ours."""
    if not message.startswith(MAGIC):
        raise ValueError("not a livefeat change message")
    origin, sent_at_ms = _HEAD.unpack_from(message, len(MAGIC))
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

    async def publish(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Tell the other replicas about written items. Raises TierUnavailable."""
        if not items:
            return
        if len(items) > VALUES_UP_TO_ITEMS:
            items = [(k, b"") for k, _ in items]
        try:
            for message in encode(self.origin, items, time.time_ns() // 1_000_000):
                await self._pub.publish(self.channel, message)
        except (RedisError, OSError) as exc:
            raise TierUnavailable("change_feed", f"publish: {exc}") from exc
        metrics.CHANGE_FEED_KEYS.labels("published").inc(len(items))

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
        finally:
            await pubsub.aclose()

    def _apply(self, data: bytes) -> None:
        try:
            origin, sent_at_ms, items = decode(data)
        except ValueError:
            return
        if origin == self.origin:
            return
        self._delay.observe(max(time.time_ns() // 1_000_000 - sent_at_ms, 0) / 1000)
        self._received.inc(len(items))
        self.store.absorb([(k, v) for k, v in items if v], [k for k, _ in items])

    async def close(self) -> None:
        """Stop subscribing and close both connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pub.aclose()
