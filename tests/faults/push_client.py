"""A pushing client for the client-kill scenario: `python -m tests.faults.push_client`.

Pushes batch after batch over gRPC (PushFeatures), batch b being rooms
FIRST + b*ROWS .. FIRST + (b+1)*ROWS - 1 with values derived from (room, b), and
appends b to ACK_FILE (flushed and fsynced) once the batch is acknowledged, until
killed or MAX_BATCHES are done.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from service.client import LivefeatClient


def batch_rows(first: int, rows: int, b: int, event_time_ms: int) -> list[dict]:
    return [
        {"id": room, "event_time_ms": event_time_ms, "values": batch_values(room, b)}
        for room in range(first + b * rows, first + (b + 1) * rows)
    ]


def batch_values(room: int, b: int) -> dict:
    return {"viewer_count": b, "likes_5m": room, "gift_count_1m": b * 7 + room % 1000}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("ack_file", type=Path)
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--max-batches", type=int, default=200)
    args = p.parse_args()
    t = time.time_ns() // 1_000_000
    with LivefeatClient(args.target) as client, args.ack_file.open("a") as acks:
        for b in range(args.max_batches):
            client.push("room_stats", batch_rows(args.first, args.rows, b, t), timeout=10)
            acks.write(f"{b}\n")
            acks.flush()
            os.fsync(acks.fileno())


if __name__ == "__main__":
    main()
