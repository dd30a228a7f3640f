"""The workers' local channel: its formats, and calls over a real Unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.workers import channel


def test_items_and_keys_round_trip() -> None:
    items = [(b"k1", b"v" * 300), (b"", b""), (b"\x00\xff", b"x")]
    assert channel.decode_items(channel.encode_items(items)) == items
    keys = [b"a", b"", b"\x01" * 70_000]
    assert channel.decode_keys(channel.encode_keys(keys)) == keys


def test_calls_answers_errors_and_nobody_listening(tmp_path: Path) -> None:
    path = tmp_path / "w.sock"

    async def echo(payload: bytes) -> bytes:
        return payload[::-1]

    async def fail(payload: bytes) -> bytes:
        raise ValueError("no such thing")

    async def slow(payload: bytes) -> bytes:
        await asyncio.sleep(10)
        return b""

    async def go() -> None:
        with pytest.raises(channel.Unreachable):  # no socket file
            await channel.call(path, 1, b"", 1.0)
        server = channel.ChannelServer(path, {1: echo, 2: fail, 3: slow})
        await server.start()
        assert await channel.call(path, 1, b"abc", 1.0) == b"cba"
        with pytest.raises(channel.CallFailed, match="no such thing"):
            await channel.call(path, 2, b"", 1.0)
        with pytest.raises(channel.CallFailed, match="no handler"):
            await channel.call(path, 9, b"", 1.0)
        with pytest.raises(TimeoutError):
            await channel.call(path, 3, b"", 0.05)
        await server.close()
        with pytest.raises(channel.Unreachable):
            await channel.call(path, 1, b"", 1.0)

    asyncio.run(go())


def test_a_socket_file_nobody_listens_on_is_unreachable(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:  # bound, then closed: what a killed worker leaves
        s.bind(str(path))
    with pytest.raises(channel.Unreachable):
        asyncio.run(channel.call(path, 1, b"", 1.0))
