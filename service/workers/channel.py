"""The local channel between the workers of one pod: framed calls over Unix sockets.

Each worker listens on `worker-<index>.sock` in the supervisor's control dir.
A call is one connection: request `op (1 byte) | length (u32) | payload`, answer
`ok (1 byte) | length (u32) | payload` (an error's text when not ok). A fresh
connection per call costs tens of microseconds on a Unix socket, and it makes
"nobody listens" (refused, or no socket file) a definite answer: the worker is
not running, or has not opened its store yet, so it serves nothing stale.

Calls (payload formats below):
- WRITE (to worker 0, the RocksDB primary): items -> written flags.
- CHANGED (from worker 0 to the others): keys the primary wrote -> empty.
- RESYNC (from worker 0, when it starts, to the others): anything may have been
  written (a write it made before dying may not have been announced) -> empty.

Raised: Unreachable (nobody listens), CallFailed (the callee answered an error),
TimeoutError (no answer in time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

WRITE = 1
CHANGED = 2
RESYNC = 3
_HEAD = struct.Struct("<BI")
_LEN = struct.Struct("<I")
_PAIR = struct.Struct("<II")
Handler = Callable[[bytes], Awaitable[bytes]]


class Unreachable(Exception):
    """Nobody listens on the worker's socket."""


class CallFailed(Exception):
    """The callee answered with an error (its text)."""


def socket_path(control_dir: Path, index: int) -> Path:
    """Where worker `index` listens."""
    return control_dir / f"worker-{index}.sock"


def encode_items(items: Sequence[tuple[bytes, bytes]]) -> bytes:
    """count, then per item: key length, value length, key, value."""
    parts = [_LEN.pack(len(items))]
    for key, value in items:
        parts += (_PAIR.pack(len(key), len(value)), key, value)
    return b"".join(parts)


def decode_items(data: bytes) -> list[tuple[bytes, bytes]]:
    """The inverse of encode_items."""
    (count,) = _LEN.unpack_from(data)
    pos = _LEN.size
    items = []
    for _ in range(count):
        klen, vlen = _PAIR.unpack_from(data, pos)
        pos += _PAIR.size
        items.append((data[pos : pos + klen], data[pos + klen : pos + klen + vlen]))
        pos += klen + vlen
    return items


def encode_keys(keys: Sequence[bytes]) -> bytes:
    """count, then per key: length, key."""
    return b"".join([_LEN.pack(len(keys)), *(_LEN.pack(len(k)) + k for k in keys)])


def decode_keys(data: bytes) -> list[bytes]:
    """The inverse of encode_keys."""
    (count,) = _LEN.unpack_from(data)
    pos = _LEN.size
    keys = []
    for _ in range(count):
        (klen,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        keys.append(data[pos : pos + klen])
        pos += klen
    return keys


async def call(path: Path, op: int, payload: bytes, timeout_s: float) -> bytes:
    """One call to the worker listening on `path`; its answer's payload.

    Raises Unreachable, CallFailed, TimeoutError (after `timeout_s`).
    """
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise Unreachable(f"{path.name}: {exc.strerror}") from None
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(_HEAD.pack(op, len(payload)) + payload)
            ok, length = _HEAD.unpack(await reader.readexactly(_HEAD.size))
            body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise CallFailed(f"{path.name} closed the connection") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not ok:
        raise CallFailed(body.decode(errors="replace"))
    return body


class ChannelServer:
    """Answers calls on `path` with `handlers` (op -> async payload -> payload).

    A handler's exception is answered as an error (its text) and logged.
    """

    def __init__(self, path: Path, handlers: Mapping[int, Handler]) -> None:
        self.path = path
        self._handlers = handlers
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"<ChannelServer {self.path} {'open' if self._server else 'closed'}>"

    async def start(self) -> None:
        """Listen (a socket file left by a dead worker is replaced)."""
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            op, length = _HEAD.unpack(await reader.readexactly(_HEAD.size))
            payload = await reader.readexactly(length)
            handler = self._handlers.get(op)
            try:
                if handler is None:
                    raise CallFailed(f"no handler for op {op}")
                answer, ok = await handler(payload), 1
            except Exception as exc:
                log.warning("local call %d failed: %s", op, exc)
                answer, ok = f"{type(exc).__name__}: {exc}".encode(), 0
            writer.write(_HEAD.pack(ok, len(answer)) + answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the caller gave up (its timeout)
        finally:
            writer.close()

    async def close(self) -> None:
        """Stop listening and remove the socket file."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.path.unlink(missing_ok=True)
