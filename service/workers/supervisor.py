"""The supervisor of `livefeat serve --workers N` (N > 1): starts N workers, starts a
worker that exits again (with backoff), and on SIGTERM or SIGINT drains them all.

It imports no serving code and runs no event loop: a loop that wakes every
`poll_s` reaps workers and starts them again when due. Its files live in one
control dir made at start and removed at exit: `metrics/` (PROMETHEUS_MULTIPROC_DIR
of every worker, set before they import anything), `worker-<i>.pid` (read by
worker 0 to kill a worker that did not apply a write, peers.py) and the workers'
local sockets (channel.py).

Drain: SIGTERM to every worker (each drains itself: service/server.py), then wait
until all have exited; those still running after `grace_s` get SIGKILL. A second
signal is forwarded too (a worker's second signal cuts its waits short). Exit
code: 0 if every worker exited with 0 after the signal (or was ended by that
SIGTERM while still starting, before it could serve), else 1.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from service.errors import LivefeatError
from service.workers.peers import pid_path

log = logging.getLogger("livefeat.supervisor")
# Seconds before starting a worker again: doubled for each exit within STABLE_S
# of its start, from FIRST_BACKOFF_S up to MAX_BACKOFF_S.
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 10.0
STABLE_S = 30.0


class Backoff:
    """When to start a worker again, from how long its last run lasted."""

    def __init__(self, first_s: float = FIRST_BACKOFF_S, max_s: float = MAX_BACKOFF_S,
                 stable_s: float = STABLE_S) -> None:  # fmt: skip
        self._first_s, self._max_s, self._stable_s = first_s, max_s, stable_s
        self._quick_exits = 0

    def __repr__(self) -> str:
        return f"<Backoff {self._quick_exits} quick exits>"

    def after_exit(self, ran_s: float) -> float:
        """Seconds to wait before the next start of a worker that ran `ran_s`."""
        self._quick_exits = self._quick_exits + 1 if ran_s < self._stable_s else 1
        return min(self._first_s * 2 ** (self._quick_exits - 1), self._max_s)


class _Worker:
    """One worker slot: its process (None while waiting to start again) and backoff."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.due = 0.0  # when to start it (again)
        self.starts = 0
        self.backoff = Backoff()


class Supervisor:
    """Runs `command` (a `livefeat serve` argv) as N workers; `command + worker args`.

    `grace_s`: how long a drain may take before SIGKILL.
    """

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        grace_s: float,
        *,
        poll_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._command = list(command)
        self._workers = [_Worker(i) for i in range(count)]
        self._grace_s = grace_s
        self._poll_s = poll_s
        self._clock = clock
        self._signals: list[signal.Signals] = []
        self._dir = Path(tempfile.mkdtemp(prefix="livefeat-"))
        self._metrics = self._dir / "metrics"
        self._metrics.mkdir()

    def __repr__(self) -> str:
        alive = sum(w.proc is not None and w.proc.poll() is None for w in self._workers)
        return f"<Supervisor {alive}/{len(self._workers)} workers, {self._dir}>"

    def run(self) -> int:
        """Start the workers, keep them running until a signal, drain; the exit code."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info("supervising %d workers (control dir %s)", len(self._workers), self._dir)
            while not self._signals:
                self._tend()
                time.sleep(self._poll_s)
            return self._drain()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(self._dir, ignore_errors=True)

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        self._signals.append(signal.Signals(signum))
        for worker in self._workers:  # forwarded at once, also a second signal
            if worker.proc is not None and worker.proc.poll() is None:
                os.kill(worker.proc.pid, signal.SIGTERM)

    def _tend(self) -> None:
        now = self._clock()
        for worker in self._workers:
            if worker.proc is not None and worker.proc.poll() is not None:
                self._reap(worker, now)
            if worker.proc is None and now >= worker.due:
                self._start(worker, now)

    def _reap(self, worker: _Worker, now: float) -> None:
        assert worker.proc is not None
        code, pid = worker.proc.returncode, worker.proc.pid
        pid_path(self._dir, worker.index).unlink(missing_ok=True)
        mark_process_dead(pid, str(self._metrics))  # its live gauges no longer count
        worker.proc = None
        delay = worker.backoff.after_exit(now - worker.started)
        worker.due = now + delay
        log.warning("worker %d (pid %d) exited with %s; starting it again in %.2f s",
                    worker.index, pid, code, delay)  # fmt: skip

    def _start(self, worker: _Worker, now: float) -> None:
        args = ["--workers", str(len(self._workers)), "--worker-index", str(worker.index),
                "--control-dir", str(self._dir)]  # fmt: skip
        if worker.starts:
            args.append("--worker-restarted")
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self._metrics)}
        # Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which
        # forwards one SIGTERM (two signals would cut the worker's drain short).
        worker.proc = subprocess.Popen([*self._command, *args], env=env,
                                       stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip
        pid_path(self._dir, worker.index).write_text(str(worker.proc.pid))
        worker.started = now
        worker.starts += 1
        if worker.starts > 1:
            log.warning("worker %d started again (pid %d)", worker.index, worker.proc.pid)

    def _drain(self) -> int:
        log.info("%s: draining %d workers", self._signals[0].name, len(self._workers))
        deadline = self._clock() + self._grace_s
        codes: list[int] = []
        for worker in self._workers:
            if worker.proc is None:
                continue
            try:
                codes.append(worker.proc.wait(max(deadline - self._clock(), 0)))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) still running after %.0f s: SIGKILL",
                          worker.index, worker.proc.pid, self._grace_s)  # fmt: skip
                os.kill(worker.proc.pid, signal.SIGKILL)
                codes.append(worker.proc.wait())
        log.info("every worker has exited (%s)", codes)
        return 0 if all(c in (0, -signal.SIGTERM) for c in codes) else 1


def worker_command(argv: Sequence[str]) -> list[str]:
    """The command line of a worker: this Python, livefeat's CLI, the same arguments."""
    return [sys.executable, "-m", "service.cli", *argv]


def check_ports(host: str, ports: Sequence[int]) -> None:
    """Refuse to start workers on port 0 or on a port another process listens on
    (SO_REUSEPORT would otherwise let them share it). Raises LivefeatError."""
    for port in ports:
        if port == 0:
            raise LivefeatError("with more than one worker, give the ports (0 picks one each)")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), port))
            except OSError as exc:
                raise LivefeatError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
