"""Kafka test fixtures: a Tansu broker per module, `livefeat consume` subprocesses
(started by path, stopped by pid), a producer, and readers of committed offsets and
topics (standard Kafka protocol, aiokafka)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LIVEFEAT, free_port, livefeat_env
from tests.support.kafka_proc import KafkaBroker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One broker for the module's tests; each test uses its own topics and group."""
    b = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    yield b
    b.stop()


class Consumer:
    """One `livefeat consume` subprocess; its output in files under `log_dir`."""

    def __init__(
        self, log_dir: Path, args: Sequence[str], env: dict[str, str] | None = None
    ) -> None:
        self.metrics_port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / f"consume-{self.metrics_port}.err"
        cmd = [LIVEFEAT, "consume", "--metrics-port", str(self.metrics_port),
               "--http-host", "127.0.0.1", *args]  # fmt: skip
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         env={**livefeat_env(), **(env or {})})  # fmt: skip
        self.pid = self.proc.pid

    def __repr__(self) -> str:
        return f"<Consumer pid={self.pid} :{self.metrics_port}>"

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2.0)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
            if match is None:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', match[1] or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(match[2])
        return total

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"consume exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"consume not ready after {timeout_s} s:\n{self.log()}")

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM by pid; the exit code (SIGKILL if it has not exited in time)."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def start_consumer(tmp_path: Path) -> Iterator[Callable[..., Consumer]]:
    """Start `livefeat consume` with the given flags (waits until ready); all stopped at teardown."""
    started: list[Consumer] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> Consumer:
        consumer = Consumer(tmp_path / "logs", args, env)
        started.append(consumer)
        if ready:
            consumer.wait_ready()
        return consumer

    yield start
    for consumer in started:
        consumer.terminate()


def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) messages in order (keyed: one key's messages keep their order)."""

    async def main() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        await producer.start()
        try:
            futures = [await producer.send(topic, v, key=k) for k, v in messages]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(main())


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The sum of the group's committed offsets over the topic's partitions (0 where none).

    Compared with the number of messages produced, not with ListOffsets: Tansu 0.x
    answers "latest" with the last batch's base offset, not the end of the log.
    """

    async def main() -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await reader.start()
        try:
            await reader.topics()  # loads the metadata partitions_for_topic reads
            tps = [
                TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())
            ]
            return sum([await reader.committed(tp) or 0 for tp in tps])
        finally:
            await reader.stop()

    return asyncio.run(main())


def read_topic(bootstrap: str, topic: str, count: int, timeout_s: float = 20.0) -> list[Any]:
    """The first `count` records of `topic` (all partitions), without a group."""

    async def main() -> list[Any]:
        from aiokafka import AIOKafkaConsumer

        reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                  enable_auto_commit=False)  # fmt: skip
        await reader.start()
        got: list[Any] = []
        try:
            end = asyncio.get_running_loop().time() + timeout_s
            while len(got) < count and asyncio.get_running_loop().time() < end:
                batch = await reader.getmany(timeout_ms=500)
                for records in batch.values():
                    got += records
            return got
        finally:
            await reader.stop()

    return asyncio.run(main())
