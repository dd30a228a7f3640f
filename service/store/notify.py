"""Change notifications between replicas over Redis pub/sub.

Why pub/sub rather than a Stream: a notification is only useful for a moment
(it tells replicas to drop L1 entries that a TTL would expire anyway), pub/sub
delivers it with one hop and nothing to trim or acknowledge, and what it loses
while a replica is disconnected is covered by one rule: a replica whose
subscription (re)starts drops its whole L1. A Stream would add per-replica
read positions and trimming to recover messages we do not need to recover.

Four kinds of message, each starting with a magic, origin (16 bytes) and sent_at_ms (<q):

- b"LF1", with values (pushes, up to VALUES_UP_TO_ITEMS items): items, each <H key
  length, key, <I value length, value. Replicas also keep the values in their RocksDB.
- b"LF2", keys only (loads): <H prefix length, the view's key prefix (``view:version:``),
  then the rest of every key (its ids, digits and colons) joined by newlines. A replica
  splits it with one `bytes.split`: absorbing a million loaded keys cost the serving
  loop 4.6 us per key with per-item framing, the bulk of its time during a load.

- b"LF3", resync, nothing else: the sender could not tell every change (its backlog of
  failed publications overflowed, service/store/feed.py); replicas drop their L1 and
  rebuild their presence filter, as when their own subscription restarts.

- b"LF4", barrier: <Q seq after the header. Every subscriber that reaches it has applied
  every message the sender published before it, and says so by publishing the seq on
  the sender's ack channel (`ack_channel(origin)`). A serving replica ends each push with
  one and waits for as many acks as PUBLISH counted receivers (feed.py, Acks): a read
  that starts on any replica after the push was acknowledged sees it.

Messages are small (KEYS_PER_MESSAGE keys, MAX_MESSAGE_BYTES) and a replica yields
its event loop after applying each one, so requests interleave with a load's flood of
notifications. Redis Cluster propagates classic PUBLISH to every node, so one plain
connection to any node serves a cluster too.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from service.stored import view_prefix

CHANNEL = b"livefeat:changes"
MAGIC = b"LF1"  # items with values
MAGIC_KEYS = b"LF2"  # keys only, by view prefix
MAGIC_RESYNC = b"LF3"  # forget everything derived from notifications
MAGIC_BARRIER = b"LF4"  # acknowledge everything before this
_SEQ = struct.Struct("<Q")
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


def encode_resync(origin: bytes, sent_at_ms: int) -> bytes:
    """The LF3 message: every replica forgets what it derived from notifications."""
    return MAGIC_RESYNC + _HEAD.pack(origin, sent_at_ms)


def ack_channel(origin: bytes) -> bytes:
    """The channel on which the replica `origin` hears acks of its barriers."""
    return CHANNEL + b":acks:" + origin.hex().encode()


def encode_barrier(origin: bytes, sent_at_ms: int, seq: int) -> bytes:
    """The LF4 message: receivers acknowledge `seq` to `origin`."""
    return MAGIC_BARRIER + _HEAD.pack(origin, sent_at_ms) + _SEQ.pack(seq)


def barrier_seq(message: bytes) -> int | None:
    """The seq of an LF4 (barrier) message; None for other messages."""
    if not message.startswith(MAGIC_BARRIER):
        return None
    return int(_SEQ.unpack_from(message, len(MAGIC_BARRIER) + _HEAD.size)[0])


def is_resync(message: bytes) -> bool:
    """Whether `message` is an LF3 (resync) message."""
    return message.startswith(MAGIC_RESYNC)


def header(message: bytes) -> tuple[bytes, int]:
    """(origin, sent_at_ms) of a message. Raises ValueError if it is not ours."""
    known = (MAGIC, MAGIC_KEYS, MAGIC_RESYNC, MAGIC_BARRIER)
    if not message.startswith(known) or len(message) < 3 + _HEAD.size:
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
    items: list[tuple[bytes, bytes]] = []
    if is_resync(message) or barrier_seq(message) is not None:
        return origin, sent_at_ms, items
    while pos < len(message):
        klen = int.from_bytes(message[pos : pos + 2], "little")
        key = message[pos + 2 : pos + 2 + klen]
        pos += 2 + klen
        vlen = int.from_bytes(message[pos : pos + 4], "little")
        if pos + 4 + vlen > len(message):
            raise ValueError("a change message cut short")
        items.append((key, message[pos + 4 : pos + 4 + vlen]))
        pos += 4 + vlen
    return origin, sent_at_ms, items
