"""The benchmark's server subprocesses: livefeat, the echo baselines and redis-server.

Each is started by the runner, recorded by pid and port, waited for with a probe of its
own protocol, and stopped by SIGTERM to its own pid (SIGKILL to that pid if it has not
exited in time). Nothing is ever signalled by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SYSTEM_REDIS_PORT = 6379  # the machine's own Redis: never used


def free_port() -> int:
    """A TCP port on HOST that nothing listens on now (never the system Redis's)."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if port != SYSTEM_REDIS_PORT:
            return port


def livefeat_command() -> str:
    """The `livefeat` script of this interpreter's environment (else the one on PATH)."""
    local = Path(sys.executable).parent / "livefeat"
    found = str(local) if local.exists() else shutil.which("livefeat")
    if not found:
        raise RuntimeError("no `livefeat` command: install the project (make install)")
    return found


# --------------------------------------------------------------------------- probes


def http_ready(server: Server) -> bool:
    """GET /readyz answers 200."""
    url = f"http://{HOST}:{server.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def grpc_ready(server: Server) -> bool:
    """A GetBundle call (of empty request bytes) answers."""
    import grpc

    from loadtest.clients import GET_BUNDLE

    with grpc.insecure_channel(f"{HOST}:{server.port}") as channel:
        channel.unary_unary(GET_BUNDLE)(b"", timeout=2)
    return True


def redis_ready(server: Server) -> bool:
    """PING answers."""
    return bool(redis_client(server.port).ping())


def redis_client(port: int) -> Any:
    import redis

    return redis.Redis(host=HOST, port=port, socket_timeout=10)


@dataclass
class Server:
    """A server subprocess: started, probed until ready, stopped by signals to its own pid."""

    name: str
    cmd: list[str]
    port: int
    log: Path
    probe: Callable[[Server], bool] = http_ready
    """True once the server answers (exceptions count as not yet); default GET /readyz."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to (or overriding) this process's environment."""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0
    ready_s: float | None = None
    log_offset: int = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
        self.started_at = time.monotonic()

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"{self.name} exited (code {code}); its log:\n{self.log_tail()}")

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Probe until it answers; returns (and keeps) the seconds from start() to ready."""
        if self.ready_s is not None:
            return self.ready_s
        while True:
            self.check_alive()
            with contextlib.suppress(Exception):
                if self.probe(self):
                    self.ready_s = time.monotonic() - self.started_at
                    return self.ready_s
            if time.monotonic() - self.started_at > timeout_s:
                raise RuntimeError(f"{self.name} not ready after {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def wait_log(self, *texts: str, timeout_s: float = 120.0) -> tuple[str, float]:
        """Wait until one of `texts` appears in the log (read from where the current process
        started writing); returns it and the seconds since start()."""
        while True:
            self.check_alive()
            with contextlib.suppress(OSError), self.log.open("rb") as f:
                f.seek(self.log_offset)
                log = f.read().decode(errors="replace")
                for text in texts:
                    if text in log:
                        return text, time.monotonic() - self.started_at
            if time.monotonic() - self.started_at > timeout_s:
                raise RuntimeError(f"{self.name}: none of {texts} after {timeout_s} s")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM to this pid, then SIGKILL to this pid if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def port_for(self, transport: str) -> int:
        """The port a client of `transport` ("http" or "grpc") connects to."""
        return self.port

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": self.pid, "port": self.port, "cmd": self.cmd}
        if self.env:
            out["env"] = dict(self.env)
        if self.ready_s is not None:
            out["ready_s"] = round(self.ready_s, 2)
        return out

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class LivefeatServer(Server):
    """`livefeat serve`: HTTP on `port`, gRPC on `grpc_port`."""

    grpc_port: int = 0

    def port_for(self, transport: str) -> int:
        return self.grpc_port if transport == "grpc" else self.port

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "grpc_port": self.grpc_port}


# --------------------------------------------------------------------------- constructors


def livefeat_server(
    name: str,
    data_dir: Path,
    log: Path,
    redis_url: str | None,
    env: Mapping[str, str],
    workers: int = 1,
) -> Server:
    """`livefeat serve` on HOST, free HTTP and gRPC ports (its gRPC port: `.grpc_port`),
    as `workers` processes (one unless asked: the protocol measures one process)."""
    # The benchmarks measure latency against concurrency (up to 32 per process): no
    # admission bound unless the caller sets one (loadtest/overload.py does).
    env = {"LIVEFEAT_MAX_IN_FLIGHT": "0", **env}
    server = LivefeatServer(name, [], free_port(), log, http_ready, env=env)
    server.grpc_port = free_port()
    server.cmd = [
        livefeat_command(),
        "serve",
        "--data-dir",
        str(data_dir),
        "--http-host",
        HOST,
        "--http-port",
        str(server.port),
        "--grpc-port",
        str(server.grpc_port),
        "--workers",
        str(workers),
    ]
    if redis_url:
        server.cmd += ["--redis-url", redis_url]
    return server


def echo_server(
    transport: str, name: str, body_file: Path, log: Path, burn_us: float = 0.0
) -> Server:
    """The bare echo baseline of a transport, answering with the bytes of `body_file`;
    gRPC's after spinning `burn_us` microseconds in each call (loadtest/echo_grpc.py)."""
    port = free_port()
    module, probe = (
        ("loadtest.echo_http", http_ready)
        if transport == "http"
        else ("loadtest.echo_grpc", grpc_ready)
    )
    cmd = [sys.executable, "-m", module, "--host", HOST, "--port", str(port)]
    if burn_us:
        if transport == "http":
            raise ValueError("burn_us: only the gRPC echo spins")
        cmd += ["--burn-us", f"{burn_us:g}"]
    return Server(name, [*cmd, "--body-file", str(body_file)], port, log, probe)


def redis_server(name: str, workdir: Path) -> Server:
    """A redis-server of our own on a free port: no RDB snapshots, no AOF, an empty dir."""
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("no redis-server: run scripts/system-deps.sh redis")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        exe,
        "--bind",
        HOST,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--dbfilename",
        "never-saved.rdb",
        "--daemonize",
        "no",
    ]
    return Server(name, cmd, port, workdir.with_suffix(".log"), redis_ready)


def redis_url(server: Server) -> str:
    return f"redis://{HOST}:{server.port}/0"
