"""Real redis-server processes for tests: started on free ports, stopped by pid.

Never touches a server it did not start (the machine's shared Redis on 6379
included): every server here is a child process of the test run.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    """A TCP port free on 127.0.0.1 (and its cluster bus port, +10000, too)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no free port pair found")


class RedisServer:
    """One redis-server child on a free port, persistence off."""

    def __init__(self, workdir: Path, *, cluster: bool = False, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/system-deps.sh redis)")
        self.port = port or free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--logfile", "redis.log"]  # fmt: skip
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "2000"]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._wait_ready()

    def __repr__(self) -> str:
        return f"<RedisServer :{self.port} pid {self.pid} {'up' if self.alive else 'down'}>"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def _wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"redis-server on {self.port} exited: {self.log()}")
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not answer: {self.log()}")

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop this server (SIGTERM to its pid, SIGKILL after 5 s)."""
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-run."""
        if self.alive:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        """Start again on the same port (data is gone: persistence is off)."""
        self.stop()
        self.__init__(self.dir.parent, port=self.port)  # type: ignore[misc]


class RedisCluster:
    """Three redis-server children in cluster mode, joined by `redis-cli --cluster create`."""

    def __init__(self, workdir: Path, nodes: int = 3) -> None:
        self.nodes = [RedisServer(workdir, cluster=True) for _ in range(nodes)]
        cli = shutil.which("redis-cli")
        if cli is None:
            self.stop()
            raise RuntimeError("redis-cli is not installed (scripts/system-deps.sh redis)")
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run([cli, "--cluster", "create", *addrs, "--cluster-replicas", "0",
                               "--cluster-yes"], capture_output=True, text=True, timeout=60)  # fmt: skip
        if done.returncode:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}"
        try:
            self._wait_ok()
        except BaseException:
            self.stop()  # never leave servers behind
            raise

    def _wait_ok(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            infos = [n.client().cluster("INFO") for n in self.nodes]
            if all(i.get("cluster_state") == "ok" for i in infos):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
