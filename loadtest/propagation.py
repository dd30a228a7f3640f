"""Propagation delay between replicas: a push accepted by replica A, until replica B serves it.

    python -m loadtest.propagation [--pushes 300] [--out loadtest/results/propagation.json]

Starts its own redis-server (free port) and two `livefeat serve` replicas sharing
it, each with its own data dir. Each round: B reads room R (so the old value is
in B's L1), a push of a new viewer_count for R is sent to A, and from A's answer
B is polled back to back until it serves the new value. The delay is measured
from A's acknowledgement to B's first answer carrying the new value; the
poll itself costs a fraction of a millisecond, which bounds the resolution.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx

from loadtest import stats
from loadtest.bench import HOST, Server, free_port, livefeat_command, machine_info
from tests.support.redis_proc import RedisServer

ROOM_VIEW = "room_stats"


def _replica(name: str, root: Path, redis_url: str) -> Server:
    port, grpc = free_port(), free_port()
    cmd = [livefeat_command(), "serve", "--data-dir", str(root / name), "--http-host", HOST,
           "--http-port", str(port), "--grpc-port", str(grpc), "--redis-url", redis_url, "--workers", "1"]  # fmt: skip
    return Server(name, cmd, port, root / f"{name}.log")


def _viewer_count(client: httpx.Client, room: int) -> int:
    r = client.post("/v1/features", json={"view": ROOM_VIEW, "ids": [room]})
    r.raise_for_status()
    return int(r.json()["rows"][0]["features"][f"{ROOM_VIEW}.viewer_count"])


def measure(pushes: int, timeout_s: float = 5.0) -> dict[str, object]:
    """Start Redis and two replicas, run `pushes` rounds, return the delays in ms."""
    with tempfile.TemporaryDirectory(prefix="livefeat-propagation-") as tmp:
        root = Path(tmp)
        redis = RedisServer(root)
        a, b = _replica("a", root, redis.url), _replica("b", root, redis.url)
        try:
            for s in (a, b):
                s.start()
            for s in (a, b):
                s.wait_ready()
            delays_ms, lost = [], 0
            with httpx.Client(base_url=f"http://{HOST}:{a.port}") as ca, \
                    httpx.Client(base_url=f"http://{HOST}:{b.port}") as cb:  # fmt: skip
                for i in range(1, pushes + 1):
                    room = 1 + i % 50
                    _viewer_count(cb, room)  # B holds the old value in L1
                    row = {"id": room, "event_time_ms": time.time_ns() // 1_000_000 + i,
                           "values": {"viewer_count": 1_000_000 + i}}  # fmt: skip
                    ca.post("/v1/push", json={"view": ROOM_VIEW, "rows": [row]}).raise_for_status()
                    acked = time.perf_counter()
                    while _viewer_count(cb, room) != 1_000_000 + i:
                        if time.perf_counter() - acked > timeout_s:
                            lost += 1
                            break
                    else:
                        delays_ms.append((time.perf_counter() - acked) * 1000)
        finally:
            for s in (a, b):
                s.stop()
            redis.stop()
    summary = stats.latency_summary([int(d * 1e6) for d in delays_ms]) if delays_ms else {}
    return {"pushes": pushes, "not_seen_within_s": {"count": lost, "timeout_s": timeout_s},
            "delay_ms": summary, "machine": machine_info()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure, print, and write the JSON report."""
    p = argparse.ArgumentParser(prog="python -m loadtest.propagation", description=__doc__)
    p.add_argument("--pushes", type=int, default=300)
    p.add_argument("--out", type=Path, default=Path("loadtest/results/propagation.json"))
    args = p.parse_args(argv)
    report = measure(args.pushes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("pushes", "not_seen_within_s", "delay_ms")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
