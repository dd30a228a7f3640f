"""Scenario 9: a replica's link to Redis fails while another replica takes pushes.

Replica A talks to Redis directly, replica B through the fault proxy, so B's
reads, writes and change-feed subscription all cross the fault. During and after
the fault A takes pushes of new user x room pairs, rows B has never seen: B serves
a pair it has never seen as DEFAULTED without a lookup while its presence filter is
trusted, and trusts it only while its change feed flows. If the feed stopped
silently (or came back without B forgetting what it missed), B would serve those
pairs DEFAULTED for good. Faults: a partition (blackhole), a link losing bytes
without closing (drop: B must notice a silent feed by itself), resets. Asserted: B
serves every pushed pair, value for value, within 30 s (short form 10 s) of the
fault's end; the time each took is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.faults.harness import FULL, FaultServer, Oracle, record, run_fault
from tests.support.fault_proxy import FaultProxy
from tests.support.redis_proc import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.process]

VIEW = "user_room_affinity"
USER = 1
FIRST_ROOM = 700_001
BOUND_S = 30.0 if FULL else 10.0
MODES = ["blackhole", "drop", "reset"] if FULL else ["drop"]


def push_pair(server: FaultServer, room: int, event_time_ms: int) -> None:
    row = {"id": [USER, room], "event_time_ms": event_time_ms,
           "values": {"watch_sec_30d": room, "gifts_30d": 7, "last_visit_age_s": 1}}  # fmt: skip
    r = httpx.post(f"{server.url}/v1/push", json={"view": VIEW, "rows": [row]}, timeout=10)
    assert r.status_code == 200, r.text


def served_pair(server: FaultServer, room: int) -> tuple[str, Any]:
    r = httpx.post(
        f"{server.url}/v1/features", json={"view": VIEW, "ids": [[USER, room]]}, timeout=5
    )
    if r.status_code != 200:
        return f"http_{r.status_code}", None
    row = r.json()["rows"][0]
    return row["status"][VIEW], row["features"][f"{VIEW}.watch_sec_30d"]


@pytest.mark.parametrize("mode", MODES)
def test_replica_sees_pushes_after_its_link_failed(
    fault_server: Callable[..., FaultServer],
    redis_server: RedisServer,
    redis_proxy: FaultProxy,
    oracle: Oracle,
    mode: str,
) -> None:
    a = fault_server("--redis-url", redis_server.url)
    b = fault_server("--redis-url", f"redis://127.0.0.1:{redis_proxy.port}/0")
    pushed: list[tuple[int, float]] = []  # (room, monotonic time A acknowledged it)

    def during() -> None:
        redis_proxy.set(mode)
        for k in range(3):  # while B is cut off
            push_pair(a, FIRST_ROOM + k, time.time_ns() // 1_000_000)
            pushed.append((FIRST_ROOM + k, time.monotonic()))
            time.sleep(0.2)

    figures = run_fault(
        f"replica_feed_{mode}",
        b,
        oracle,
        during,
        lambda: redis_proxy.set("pass"),
        10.0 if FULL else 1.0,
    )
    fault_end = time.monotonic()
    for k in range(3, 6):  # after the fault
        push_pair(a, FIRST_ROOM + k, time.time_ns() // 1_000_000)
        pushed.append((FIRST_ROOM + k, time.monotonic()))
    seen: dict[int, float] = {}
    last: dict[int, tuple[str, Any]] = {}
    while len(seen) < len(pushed) and time.monotonic() - fault_end < BOUND_S:
        for room, acked in pushed:
            if room in seen:
                continue
            last[room] = served_pair(b, room)
            if last[room] == ("FOUND", room):
                seen[room] = round(time.monotonic() - max(acked, fault_end), 3)
            else:
                assert last[room][0] in ("DEFAULTED", "UNAVAILABLE"), last[room]
        time.sleep(0.05)
    figures["replica_b"] = {
        "pairs_pushed_on_a": len(pushed),
        "seconds_until_b_served_each": seen,
        "still_not_served": {room: last[room] for room, _ in pushed if room not in seen},
    }
    record(f"replica_feed_{mode}", figures)
    missing = figures["replica_b"]["still_not_served"]
    assert not missing, f"B still does not serve pairs pushed on A ({BOUND_S} s): {missing}"
