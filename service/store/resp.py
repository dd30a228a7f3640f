"""A lean Redis reader for the serving path: MGET and PING on pipelined connections.

Every read below L1 that goes to Redis is one MGET. Through redis-py's asyncio client
an MGET of 101 keys cost about 210 us of CPU on the development machine (its
connection pool, retry wrapper, timeout context, command packing and response
callbacks), which was the largest single item of a request that misses L1 (17% of a
cold HTTP request). Here the same call costs 55-80 us: the command is packed in one
join, written to a connection that may already carry other calls (pipelining: Redis
answers in order), and hiredis parses the replies as they arrive
(docs/design.md, "Reading Redis").

Each call has its own future in its connection's queue, answered in order. A call
whose caller gave up (cancelled, timed out) keeps its place in the queue and its
reply is dropped when it arrives, so a connection is never left one reply behind
(redis-py's asyncio #2624 family). A call with no reply within `timeout_s` fails with
RespTimeout and closes its connection, failing the calls queued behind it: Redis
answers in order, so they would wait as long.

Used for reads on a single node over `redis://` (plain TCP, optional user, password
and database in the URL): `RespReader.for_url` says None for anything else (TLS, unix
sockets, URL options), which stays with redis-py, as do all writes and clusters.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis.connection import parse_url

from service import native


class RespError(Exception):
    """Redis answered with an error, or the connection failed."""


class RespTimeout(RespError):
    """No answer within the reader's timeout."""


class _Connection(asyncio.Protocol):
    """One TCP connection: calls are written as they come and answered in order."""

    def __init__(self, on_lost: Callable[[_Connection], None]) -> None:
        self._on_lost = on_lost
        self._reader = hiredis.Reader(replyError=RespError)
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        # Its loop, asked once: each asyncio.get_running_loop() is a getpid() system
        # call on CPython 3.11 (coalesce.py, _wait).
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self.pending
        try:
            while (reply := reader.gets()) is not False:
                if not pending:
                    raise RespError("a reply nobody asked for")
                future = pending.popleft()
                if not future.done():  # else its caller gave up: the reply is dropped
                    future.set_result(reply)
        except Exception as exc:  # a protocol error: nothing after it can be trusted
            self.close(RespError(f"bad reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RespError(f"connection lost: {exc or 'closed by Redis'}"))

    def _fail(self, exc: RespError) -> None:
        if self.lost is None:
            self.lost = exc
            self._on_lost(self)
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(self.lost)

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """Send one packed command; its future gets the reply (or a RespError)."""
        future = self.loop.create_future()
        if self.lost is not None or self.transport is None:
            future.set_exception(self.lost or RespError("not connected"))
            return future
        self.pending.append(future)
        self.transport.write(command)
        return future

    def close(self, exc: RespError) -> None:
        """Fail every queued call with `exc` and drop the connection."""
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()


def pack(*args: bytes) -> bytes:
    """A command in RESP: an array of bulk strings (native.resp_command; an MGET of 101
    keys took 8.6 us in hiredis.pack_command, 13.7 joined in Python)."""
    return native.resp_command(args)


class RespReader:
    """MGET and PING against one Redis node, on up to `max_connections` connections.

    A call goes to an idle connection, else to a new one while fewer than
    `max_connections` are open, else behind the calls of the least busy one.
    Raises RespTimeout (no answer in `timeout_s`; connecting: `connect_timeout_s`)
    and RespError (refused, error reply, connection lost)."""

    def __init__(
        self,
        host: str,
        port: int = 6379,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        client_name: str | None = "livefeat",
        timeout_s: float = 0.1,
        connect_timeout_s: float = 0.2,
        max_connections: int = 8,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self._hello = self._handshake(db, username, password, client_name)
        self._open: list[_Connection] = []
        self._opening: set[asyncio.Task[_Connection]] = set()
        self._closed = False

    @classmethod
    def for_url(cls, url: str, **kwargs: Any) -> RespReader | None:
        """A reader for a `redis://` URL with host, port, database, user and password at
        most; None for any other URL (redis-py serves those)."""
        if not url.startswith("redis://"):
            return None
        try:
            parts = parse_url(url)
        except ValueError:
            return None
        if not set(parts) <= {"host", "port", "db", "username", "password"}:
            return None
        return cls(
            parts.get("host") or "localhost",
            int(parts.get("port") or 6379),
            db=int(parts.get("db") or 0),
            username=parts.get("username"),
            password=parts.get("password"),
            **kwargs,
        )

    def __repr__(self) -> str:
        busy = sum(len(c.pending) for c in self._open)
        return f"<RespReader {self.host}:{self.port} [{len(self._open)} connections, {busy} calls]>"

    @staticmethod
    def _handshake(
        db: int, username: str | None, password: str | None, client_name: str | None
    ) -> list[bytes]:
        commands = []
        if password is not None:
            auth = (username.encode(),) if username else ()
            commands.append(pack(b"AUTH", *auth, password.encode()))
        if db:
            commands.append(pack(b"SELECT", b"%d" % db))
        if client_name:
            commands.append(pack(b"CLIENT", b"SETNAME", client_name.encode()))
        return commands

    async def mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The value of each key (None where there is none)."""
        reply = await self._call(pack(b"MGET", *keys))
        if not isinstance(reply, list) or len(reply) != len(keys):
            raise RespError(f"MGET of {len(keys)} keys answered {type(reply).__name__}")
        return reply

    async def ping(self) -> bool:
        """Whether Redis answered PONG."""
        return await self._call(pack(b"PING")) == b"PONG"  # type: ignore[no-any-return]

    async def _call(self, command: bytes) -> Any:
        conn = self._pick()
        if conn is None:
            conn = await self._connection()
        future = conn.call(command)
        timer = conn.loop.call_later(self.timeout_s, self._expire, conn, future)
        try:
            reply = await future
        finally:
            timer.cancel()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def _pick(self) -> _Connection | None:
        """An idle connection; else None while another may be opened; else the least
        busy one (None if none is open yet)."""
        best = None
        for conn in self._open:
            if not conn.pending:
                return conn
            if best is None or len(conn.pending) < len(best.pending):
                best = conn
        if len(self._open) + len(self._opening) < self.max_connections:
            return None
        return best

    async def _connection(self) -> _Connection:
        """A new connection, or (at `max_connections`) one being opened. The opening runs
        as a task of its own, so a caller that gives up does not stop it for others."""
        if len(self._open) + len(self._opening) < self.max_connections:
            task = asyncio.get_running_loop().create_task(self._connect())
            self._opening.add(task)
            task.add_done_callback(self._opened)
        else:
            task = next(iter(self._opening))
        return await asyncio.shield(task)

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        self._opening.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: its waiters may all have gone

    def _expire(self, conn: _Connection, future: asyncio.Future[Any]) -> None:
        if not future.done():
            conn.close(RespTimeout(f"no answer from Redis in {self.timeout_s} s"))

    async def _connect(self) -> _Connection:
        if self._closed:
            raise RespError("the reader is closed")
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self._drop), self.host, self.port),
                self.connect_timeout_s,
            )
        except TimeoutError:
            raise RespTimeout(
                f"no connection to {self.host}:{self.port} in {self.connect_timeout_s} s"
            ) from None
        except OSError as exc:
            raise RespError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            replies = await asyncio.wait_for(
                asyncio.gather(*(conn.call(c) for c in self._hello)), self.connect_timeout_s
            )
        except BaseException as exc:
            conn.close(RespError("handshake failed"))
            if isinstance(exc, TimeoutError):
                raise RespTimeout(
                    f"no answer to the handshake in {self.connect_timeout_s} s"
                ) from None
            raise
        for reply in replies:
            if isinstance(reply, RespError):
                conn.close(reply)
                raise reply
        if self._closed:
            conn.close(RespError("the reader is closed"))
            raise RespError("the reader is closed")
        self._open.append(conn)
        return conn

    def _drop(self, conn: _Connection) -> None:
        """`conn` failed or was closed: calls go to the others from now on."""
        if conn in self._open:
            self._open.remove(conn)

    async def close(self) -> None:
        """Close every connection; calls under way fail."""
        self._closed = True
        for task in list(self._opening):
            task.cancel()
        for conn in list(self._open):
            conn.close(RespError("the reader is closed"))
        await asyncio.sleep(0)  # let the transports finish closing
