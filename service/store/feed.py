"""Change notifications between replicas over Redis pub/sub: the publishing side
(`Publisher`) and the receiving side (`ChangeFeed`, which tells a `FeedListener`).
Message formats, and why pub/sub rather than a Stream: notify.py.

Nothing stops the feed for good. A publication that fails is kept (its keys, up to
`max_backlog_keys`) and sent again by a background task until Redis takes it; past
that bound one resync message replaces the backlog. The subscriber resubscribes
after any error, and a message it cannot apply makes the listener resync, since
what it said is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from collections.abc import Sequence
from typing import Any, Protocol

import redis.asyncio as aredis

from service import metrics
from service.errors import TierUnavailable
from service.store import notify
from service.store.base import Items

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Wait:
    """Acks counted for one barrier; `need` is known once PUBLISH has answered."""

    __slots__ = ("done", "got", "need")

    def __init__(self) -> None:
        self.got = 0
        self.need: int | None = None
        self.done = asyncio.Event()

    def check(self) -> None:
        if self.need is not None and self.got >= self.need:
            self.done.set()


class Acks:
    """The barriers this replica published and the acks they wait for (notify.py, LF4).

    `enabled` while this replica's ChangeFeed listens on its ack channel: without it
    no ack could arrive, and writes are acknowledged without waiting. A replica that
    does not answer within `timeout_s` (paused, partitioned) is waited for no longer:
    it may serve an older value until its L1 entry expires (l1_ttl_s), as a replica
    that missed a notification does.
    """

    def __init__(self, timeout_s: float = 0.25) -> None:
        self.timeout_s = timeout_s
        self.enabled = False
        self._seq = 0
        self._waits: dict[int, _Wait] = {}
        self._timeouts = metrics.CHANGE_FEED_ACK_TIMEOUTS

    def __repr__(self) -> str:
        return f"<Acks {'on' if self.enabled else 'off'}, {len(self._waits)} waiting>"

    def open(self) -> tuple[int, _Wait]:
        """A new barrier: its seq, and what counts its acks."""
        self._seq += 1
        wait = self._waits[self._seq] = _Wait()
        return self._seq, wait

    def ack(self, seq: int) -> None:
        """A receiver has applied everything up to barrier `seq`."""
        wait = self._waits.get(seq)
        if wait is not None:
            wait.got += 1
            wait.check()

    async def wait(self, seq: int, wait: _Wait, receivers: int) -> None:
        """Until `receivers` acks of `seq` arrived, or `timeout_s` passed."""
        wait.need = receivers
        wait.check()
        try:
            await asyncio.wait_for(wait.done.wait(), self.timeout_s)
        except TimeoutError:
            self._timeouts.inc()
            log.debug("barrier %d: %d of %d acks in time", seq, wait.got, receivers)
        finally:
            del self._waits[seq]


class Publisher:
    """Publishes this process's accepted writes on `channel` through `client`; with
    `acks`, a write with values waits until every subscriber has applied it."""

    def __init__(
        self,
        client: aredis.Redis,
        origin: bytes,
        *,
        acks: Acks | None = None,
        channel: bytes = notify.CHANNEL,
        retry_s: float = 0.5,
        max_backlog_keys: int = 100_000,
    ) -> None:
        self.origin = origin
        self.channel = channel
        self._client = client
        self._acks = acks
        self._retry_s = retry_s
        self._max_backlog = max_backlog_keys
        self._backlog: list[bytes] = []
        self._resync = False
        self._retry: asyncio.Task[None] | None = None
        self._published = metrics.CHANGE_FEED_KEYS.labels("published")

    def __repr__(self) -> str:
        state = "resync pending" if self._resync else f"{len(self._backlog)} keys to resend"
        return f"<Publisher {self.channel.decode()} {state}>"

    async def publish(self, items: Items, with_values: bool = True) -> None:
        """Tell the other replicas about written items (notify.encode). Never raises: a
        failed publication is sent again later (see the module doc)."""
        if not items:
            return
        if self._backlog or self._resync:  # keep order behind what waits to be resent
            self._defer([k for k, _ in items])
            return
        now = _now_ms()
        messages = notify.encode(self.origin, items, now, with_values)
        acks = self._acks if with_values and self._acks is not None and self._acks.enabled else None
        if acks is not None:  # open before sending: the first acks may beat PUBLISH's answer
            seq, wait = acks.open()
            messages.append(notify.encode_barrier(self.origin, now, seq))
        try:
            receivers = await self._send(messages)
        except TierUnavailable as exc:
            metrics.TIER_ERRORS.labels("change_feed", "publish", type(exc).__name__).inc()
            log.warning("could not publish %d changed keys (will retry): %s", len(items), exc)
            self._defer([k for k, _ in items])
            receivers = 0
        else:
            self._published.inc(len(items))
        if acks is not None:
            await acks.wait(seq, wait, receivers)

    async def _send(self, messages: Sequence[bytes]) -> int:
        """Publish `messages` in one round trip; returns how many subscribers got the last."""
        try:
            if len(messages) == 1:
                return int(await self._client.publish(self.channel, messages[0]))
            async with self._client.pipeline(transaction=False) as pipe:
                for message in messages:
                    pipe.publish(self.channel, message)
                return int((await pipe.execute())[-1])
        except Exception as exc:  # redis-py or the socket: the caller retries
            raise TierUnavailable("change_feed", f"publish: {exc}") from exc

    def _defer(self, keys: list[bytes]) -> None:
        if not self._resync:
            self._backlog += keys
            if len(self._backlog) > self._max_backlog:
                self._backlog.clear()
                self._resync = True
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._resend())

    async def _resend(self) -> None:
        while self._backlog or self._resync:
            await asyncio.sleep(self._retry_s)
            keys, resync = self._backlog, self._resync
            if resync:
                messages = [notify.encode_resync(self.origin, _now_ms())]
            else:
                messages = notify.encode_keys(self.origin, keys, _now_ms())
            try:
                await self._send(messages)
            except TierUnavailable:
                continue
            if resync:
                self._resync = False
                log.info("published a resync: replicas forget their L1 and presence filters")
            else:
                del self._backlog[: len(keys)]
                self._published.inc(len(keys))

    async def subscribers(self) -> int:
        """How many processes (serving replicas) subscribe to the channel, on the node
        this publisher talks to. Raises TierUnavailable."""
        try:
            got = await self._client.pubsub_numsub(self.channel)
        except Exception as exc:
            raise TierUnavailable("change_feed", f"pubsub numsub: {exc}") from exc
        return int(got[0][1]) if got else 0

    async def close(self, timeout_s: float = 2.0) -> None:
        """Give a pending resend `timeout_s` to finish, then close the connection."""
        if self._retry is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._retry, timeout_s)
        await self._client.aclose()


class FeedListener(Protocol):
    """What a replica does with other replicas' notifications."""

    def absorb(self, items: Items, keys: Sequence[bytes]) -> None:
        """`keys` were written elsewhere; `items` carry values of some of them."""

    def resync(self) -> None:
        """Notifications may have been missed: forget whatever depends on them."""

    def lost(self) -> None:
        """The subscription is gone: notifications are being missed from now on."""


# Each replica hears itself on its own channel this often; a heartbeat not back within
# SILENCE_S (or overtaken by a later one) and the subscription is started again.
HEARTBEAT = b"hb:"
HEARTBEAT_S = 1.0
SILENCE_S = 5.0


class _Beats:
    """The heartbeats one subscription sent and has not heard back yet."""

    def __init__(self) -> None:
        self._seq = 0
        self._last_heard = 0
        self._out: dict[int, float] = {}  # seq -> when sent (the loop's clock)

    def sent(self, now: float) -> int:
        self._seq += 1
        self._out[self._seq] = now
        return self._seq

    def heard(self, seq: int) -> None:
        self._out.pop(seq, None)
        self._last_heard = max(self._last_heard, seq)

    def lost(self, now: float) -> list[int]:
        """Heartbeats overdue, or overtaken by a later one (delivery is in order)."""
        return [s for s, t in self._out.items() if s < self._last_heard or now - t > SILENCE_S]


class ChangeFeed:
    """Subscribes to `channel` and hands other replicas' messages to `listener`; answers
    barriers, and with `acks`, hears the acks of this replica's own barriers."""

    def __init__(
        self,
        url: str,
        listener: FeedListener,
        origin: bytes,
        *,
        acks: Acks | None = None,
        channel: bytes = notify.CHANNEL,
    ) -> None:
        self.channel = channel
        self.origin = origin
        self._listener = listener
        self._acks = acks
        self._ack_channel = notify.ack_channel(origin)
        self._url = url.replace("+cluster", "", 1)
        self._acker = aredis.Redis.from_url(
            self._url, socket_timeout=1.0, socket_connect_timeout=0.5
        )
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.subscriptions = 0  # how many times a subscription (re)started
        self._gauge = metrics.CHANGE_FEED_CONNECTED
        self._received = metrics.CHANGE_FEED_KEYS.labels("received")
        self._delay = metrics.CHANGE_FEED_DELAY_SECONDS

    def __repr__(self) -> str:
        state = "subscribed" if self.connected.is_set() else "disconnected"
        return f"<ChangeFeed {self.channel.decode()} {state}, {self.subscriptions} subscriptions>"

    def start(self) -> None:
        """Subscribe in the background, and again whenever the subscription is lost."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff_s = 0.05
        while True:
            client = aredis.Redis.from_url(
                self._url, socket_connect_timeout=0.5, client_name=f"livefeat-sub-{os.getpid()}"
            )
            try:
                await self._listen(client)
            except Exception as exc:  # whatever it was, subscribe again
                metrics.TIER_ERRORS.labels("change_feed", "subscribe", type(exc).__name__).inc()
                log.warning("change feed lost its subscription: %s: %s", type(exc).__name__, exc)
            finally:
                if self._acks is not None:
                    self._acks.enabled = False
                if self.connected.is_set():
                    backoff_s = 0.05  # it was up: the next try is quick again
                    self._listener.lost()
                self.connected.clear()
                self._gauge.set(0)
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 2.0)

    async def _listen(self, client: aredis.Redis) -> None:
        pubsub = client.pubsub()
        beats = _Beats()
        beat: asyncio.Task[None] | None = None
        try:
            await pubsub.subscribe(self.channel, self._ack_channel)
            while True:
                message = await pubsub.get_message(timeout=HEARTBEAT_S)
                if message is not None:
                    await self._handle(message, beats)
                    if beat is None and message["channel"] == self._ack_channel:
                        # Subscribed to our own channel: heartbeats can come back now.
                        beat = asyncio.get_running_loop().create_task(self._heartbeat(beats))
                # Our own numbered heartbeats come back through this connection, in
                # order with every notification: one that never comes back, or comes
                # after a later one, means the link lost bytes (it may look healthy,
                # sockets open), and notifications with them.
                lost = beats.lost(asyncio.get_running_loop().time())
                if lost:
                    raise TierUnavailable("change_feed", f"heartbeats lost on the link: {lost}")
        finally:
            if beat is not None:
                beat.cancel()
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _handle(self, message: dict[str, Any], beats: _Beats) -> None:
        kind, channel, data = message["type"], message["channel"], message["data"]
        if kind == "subscribe" and channel == self.channel:
            # Whatever was published while we were away is lost.
            self.subscriptions += 1
            self.connected.set()
            self._gauge.set(1)
            self._listener.resync()
            log.info("change feed subscribed; L1 cleared")
        elif kind == "subscribe" and self._acks is not None:
            self._acks.enabled = True
        elif kind == "message" and channel == self.channel:
            await self._apply(data)
            # Let requests run between messages (redis-py hands over messages already
            # buffered without yielding): a load's flood of them would otherwise hold
            # the loop for as long as the backlog lasts.
            await asyncio.sleep(0)
        elif kind == "message" and data.startswith(HEARTBEAT):
            beats.heard(int(data[len(HEARTBEAT) :]))
        elif kind == "message" and self._acks is not None:
            self._acks.ack(int(data))

    async def _heartbeat(self, beats: _Beats) -> None:
        loop = asyncio.get_running_loop()
        while True:
            seq = beats.sent(loop.time())
            with contextlib.suppress(Exception):  # a lost heartbeat is noticed as lost
                await self._acker.publish(self._ack_channel, HEARTBEAT + b"%d" % seq)
            await asyncio.sleep(HEARTBEAT_S)

    async def _apply(self, data: Any) -> None:
        try:
            origin, sent_at_ms = notify.header(data)
            seq = notify.barrier_seq(data)
            if seq is not None:  # everything before it is applied: say so to its sender
                await self._acker.publish(notify.ack_channel(origin), b"%d" % seq)
                return
            if origin == self.origin:  # our own write: nothing to decode
                return
            if notify.is_resync(data):
                self._listener.resync()
                return
            keys = notify.decode_keys(data)
            items: Items = [] if keys is not None else notify.decode(data)[2]
        except (ValueError, TypeError, struct.error) as exc:
            log.warning("ignored a malformed change message: %s", exc)
            return
        self._delay.observe(max(_now_ms() - sent_at_ms, 0) / 1000)
        if keys is None:
            keys = [k for k, _ in items]
            items = [(k, v) for k, v in items if v]
        self._received.inc(len(keys))
        try:
            self._listener.absorb(items, keys)
        except Exception:  # what this message said is lost: forget what depends on it
            log.exception("could not apply a change message of %d keys; resyncing", len(keys))
            self._listener.resync()

    async def close(self) -> None:
        """Stop subscribing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._acker.aclose()
