"""Kafka ingestion rate: `livefeat consume` into Redis against `livefeat load` of the same rows.

    python -m loadtest.kafka_rate [--rows 200000] [--partitions 4] [--repetitions 2]
                                  [--out loadtest/results/kafka-rate.json]

Generates `--rows` full rows of room_stats (distinct rooms, every feature set), then
per repetition, each against a fresh redis-server of our own (free port):

- ``kafka``: the rows as JSON messages (keyed by room id) on a fresh topic of a Tansu
  broker of our own (the test broker, from the dev extra), produced before the consumer
  starts, so the consumer's time is measured alone; one `livefeat consume --redis-url`
  process (no data dir: Redis only, the production shape). Rate: rows / (time from the
  first written batch to the last one, read from its /metrics), so the group join
  (seconds on Tansu) is left out.
- ``load``: the same rows in a Parquet file, `livefeat load room_stats FILE --redis-url`
  (which also writes a RocksDB data dir); rate: the CLI's own timer.

The target is at least 50,000 rows/s per consumer process; the ratio kafka/load is the
same-run comparison. Everything runs on loopback; every process is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from loadtest.servers import Server, free_port, livefeat_command, redis_server, redis_url
from service.core.registry import ViewPlan, load_registry
from service.settings import DEMO_REGISTRY

TARGET_ROWS_S = 50_000
# /metrics is read every 20 ms until the first batch is written, then every POLL_S: each
# read costs the consumer about a millisecond of its CPU (5% of it at 20 ms).
POLL_S = 0.1
VIEW = "room_stats"
_CLI_RATE = re.compile(r"\(([\d,]+) rows/s\)")


def make_rows(plan: ViewPlan, n: int, seed: int = 1) -> list[dict[str, Any]]:
    """`n` full rows of distinct rooms, event times in the last hour."""
    rnd = random.Random(seed)
    now = time.time_ns() // 1_000_000
    rows = []
    for room in range(1, n + 1):
        row: dict[str, Any] = {"room_id": room, "event_time_ms": now - rnd.randint(0, 3_600_000)}
        for f in plan.codec.features:
            if f.type == "int64":
                row[f.name] = rnd.randint(0, 10**6)
            elif f.type == "double":
                row[f.name] = rnd.random() * 1000
            elif f.type == "string":
                row[f.name] = rnd.choice(["music", "games", "chat", "sport"])
            else:
                row[f.name] = [rnd.random() for _ in range(f.dim)]
        rows.append(row)
    return rows


def write_parquet(plan: ViewPlan, rows: list[dict[str, Any]], path: Path) -> None:
    columns: dict[str, Any] = {
        "room_id": pa.array([r["room_id"] for r in rows], pa.int64()),
        "event_time": pa.array([r["event_time_ms"] for r in rows], pa.int64()),
    }
    for f in plan.codec.features:
        columns[f.name] = [r[f.name] for r in rows]
    pq.write_table(pa.table(columns), path)


async def _produce(bootstrap: str, topic: str, rows: list[dict[str, Any]], partitions: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all",
                                max_batch_size=1 << 20)  # fmt: skip
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps(r), key=b"%d" % r["room_id"]) for r in rows]  # fmt: skip
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


_DONE = re.compile(r'livefeat_kafka_messages_total\{outcome="(?:written|ignored|bad)",topic="[^"]+"\} (\S+)')  # fmt: skip


def _done(port: int) -> float:
    """Messages the consumer has finished: written (or ignored as not newer), or refused."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return sum(float(m) for m in _DONE.findall(text))


def run_kafka(work: Path, rows: list[dict[str, Any]], partitions: int, rep: int) -> dict[str, Any]:
    from tests.support.kafka_proc import KafkaBroker

    broker = KafkaBroker(work / f"kafka-{rep}")
    redis = redis_server(f"redis-kafka-{rep}", work / f"redis-kafka-{rep}")
    consumer: Server | None = None
    try:
        redis.start()
        redis.wait_ready()
        topic = f"rate-{rep}"
        asyncio.run(_produce(broker.bootstrap, topic, rows, partitions))
        port = free_port()
        consumer = Server(f"consume-{rep}", [livefeat_command(), "consume", "--kafka", broker.bootstrap,
                          "--topic", topic, "--view", VIEW, "--redis-url", redis_url(redis),
                          "--metrics-port", str(port), "--http-host", "127.0.0.1"],
                          port, work / f"consume-{rep}.log")  # fmt: skip
        consumer.start()
        first = last = None
        before = (0.0, 0.0)  # (time, messages done) at the poll before
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            consumer.check_alive()
            try:
                got = _done(port)
            except httpx.HTTPError:
                got = 0.0
            now = time.monotonic()
            if got and first is None:
                first = (now, got)
            if got >= len(rows):
                # Done between this poll and the one before: the time at which the rate
                # so far reaches the end (the polls are sparse, to leave the consumer alone).
                last = now
                if first is not None and before[1] > first[1]:
                    rate = (before[1] - first[1]) / (before[0] - first[0])
                    last = min(now, before[0] + (len(rows) - before[1]) / rate)
                break
            before = (now, got)
            time.sleep(0.02 if first is None else POLL_S)
        if first is None or last is None:
            raise RuntimeError(f"the consumer did not finish: {consumer.log_tail()}")
        seconds = last - first[0]
        counted = len(rows) - first[1]  # the first poll may already see a batch or more
        return {
            "rows": counted,
            "seconds": round(seconds, 3),
            "rows_per_s": round(counted / seconds),
        }
    finally:
        if consumer is not None:
            consumer.stop()
        redis.stop()
        broker.stop()


def run_load(work: Path, path: Path, rep: int) -> dict[str, Any]:
    import subprocess

    redis = redis_server(f"redis-load-{rep}", work / f"redis-load-{rep}")
    try:
        redis.start()
        redis.wait_ready()
        done = subprocess.run([livefeat_command(), "load", VIEW, str(path), "--redis-url", redis_url(redis),
                               "--data-dir", str(work / f"load-data-{rep}"), "--max-rows-per-s", "0"],
                              capture_output=True, text=True, timeout=600, check=True)  # fmt: skip
        match = _CLI_RATE.search(done.stdout)
        if match is None:
            raise RuntimeError(f"no rate in the load's output: {done.stdout}")
        return {"rows_per_s": int(match[1].replace(",", "")), "output": done.stdout.strip()}
    finally:
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/kafka-rate.json"))
    args = parser.parse_args(argv)
    plan = load_registry(DEMO_REGISTRY).views[VIEW]
    rows = make_rows(plan, args.rows)
    runs = []
    with tempfile.TemporaryDirectory(prefix="kafka-rate-") as tmp:
        work = Path(tmp)
        path = work / "rooms.parquet"
        write_parquet(plan, rows, path)
        for rep in range(args.repetitions):
            order = ("kafka", "load") if rep % 2 == 0 else ("load", "kafka")
            got: dict[str, Any] = {}
            for mode in order:
                print(f"repetition {rep + 1}: {mode} ...", file=sys.stderr, flush=True)
                got[mode] = run_kafka(work, rows, args.partitions, rep) if mode == "kafka" else run_load(work, path, rep)  # fmt: skip
            got["ratio_kafka_to_load"] = round(got["kafka"]["rows_per_s"] / got["load"]["rows_per_s"], 3)  # fmt: skip
            runs.append(got)
            print(json.dumps(got), file=sys.stderr)
    best = max(r["kafka"]["rows_per_s"] for r in runs)
    report = {"rows": args.rows, "partitions": args.partitions, "runs": runs,
              "best_kafka_rows_per_s": best, "target_rows_per_s": TARGET_ROWS_S,
              "target_met": best >= TARGET_ROWS_S}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"kafka consume: best {best:,} rows/s (target {TARGET_ROWS_S:,}); ratios kafka/load "
          f"{[r['ratio_kafka_to_load'] for r in runs]}; {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
