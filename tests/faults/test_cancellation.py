"""Scenario 5: a cancellation storm while the Redis circuit is open, then normal service.

Many gRPC calls with a 1 ms deadline and HTTP clients that hang up mid-request (after
the whole request, or half of its body) hit the server while Redis is unreachable (the
circuit opens) and then slow (its probes are cancelled with the calls). Afterwards
the server must answer normal requests correctly and promptly, and Redis must serve
again: a circuit stuck open or a coalesced fetch leaked by a cancelled caller shows
as no recovery.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable

import grpc
import orjson
import pytest

from service.client import AsyncLivefeatClient
from tests.faults.harness import FULL, FaultServer, Oracle, metric, run_fault
from tests.support.fault_proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.process]

STORM_S = 10.0 if FULL else 1.0
MAX_WAVES = 10_000 if FULL else 5
"""The storm ends after STORM_S or MAX_WAVES waves: each HTTP hang-up is still served to the
end (docs/reliability.md), so the short form bounds the backlog it leaves."""
PER_WAVE = 100 if FULL else 30  # gRPC calls and HTTP hang-ups per wave, all at once


async def _grpc_wave(client: AsyncLivefeatClient, oracle: Oracle, seen: Counter[str]) -> None:
    async def one(i: int) -> None:
        user = oracle.users[i % len(oracle.users)]
        rooms = oracle.rooms[: 50 + i % 100]
        try:
            await client.get_bundle(user, rooms, timeout=0.001 if i % 2 else 0.005)
            seen["grpc_OK"] += 1
        except grpc.aio.AioRpcError as exc:
            seen[f"grpc_{exc.code().name}"] += 1

    await asyncio.gather(*(one(i) for i in range(PER_WAVE)))


async def _http_hangup(port: int, body: bytes, half: bool, seen: Counter[str]) -> None:
    """Send a bundle request (or half of its body), then close the socket with an RST."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        seen["http_connect_failed"] += 1
        return
    head = (
        f"POST /v1/bundle HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + (body[: len(body) // 2] if half else body))
    await writer.drain()
    await asyncio.sleep(0.001 if half else 0.002)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()
    seen["http_half_body_hangup" if half else "http_hangup"] += 1


async def _storm(server: FaultServer, oracle: Oracle, seconds: float) -> Counter[str]:
    seen: Counter[str] = Counter()
    bodies = [
        orjson.dumps(
            {"bundle": "live_ranker", "user_id": u, "room_ids": oracle.rooms[: 100 + u % 100]}
        )
        for u in oracle.users[:50]
    ]
    async with AsyncLivefeatClient(server.grpc_target) as client:
        end = time.monotonic() + seconds
        wave = 0
        while time.monotonic() < end and wave < MAX_WAVES:
            http = [
                _http_hangup(server.port, bodies[(wave + i) % len(bodies)], i % 3 == 0, seen)
                for i in range(PER_WAVE)
            ]
            await asyncio.gather(_grpc_wave(client, oracle, seen), *http)
            wave += 1
        seen["waves"] = wave
    return seen


def test_cancellation_storm(
    fault_server: Callable[..., FaultServer], redis_proxy: FaultProxy, oracle: Oracle
) -> None:
    server = fault_server("--redis-url", f"redis://127.0.0.1:{redis_proxy.port}/0")
    seen: Counter[str] = Counter()

    def start() -> None:
        redis_proxy.set("blackhole")
        time.sleep(0.5)  # reads time out: the circuit opens
        seen["circuit_open_at_storm_start"] = int(
            metric(server, "livefeat_tier_circuit_open", tier="redis")
        )
        redis_proxy.set("latency", delay_ms=20)  # probes now succeed, slowly: cancel them
        seen.update(asyncio.run(_storm(server, oracle, STORM_S)))

    run_fault(
        "cancellation_storm",
        server,
        oracle,
        start,
        lambda: redis_proxy.set("pass"),
        0.0,
        extra=lambda: {"storm": dict(sorted(seen.items())), "storm_s": STORM_S},
    )
    assert seen["grpc_DEADLINE_EXCEEDED"] > 0
