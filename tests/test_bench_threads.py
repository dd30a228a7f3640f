"""loadtest.workers --threads: per-thread CPU read from /proc, by thread name."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from loadtest.workers import ThreadSampler, thread_cpu_s


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_busy_thread_shows_under_its_name_and_the_main_thread_apart() -> None:
    own_name = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    before = thread_cpu_s(os.getpid())
    assert "event loop" in before  # the main thread
    busy = threading.Thread(target=_burn, args=(0.8,))  # alive at both readings
    busy.start()
    sampler = ThreadSampler([os.getpid()], 0.05, 0.4)
    got = sampler.result()[str(os.getpid())]
    busy.join()
    # The busy thread ran through the 0.4 s window (on a shared machine, not all of
    # it): it is counted under the process's name, and the main thread, which only
    # waited, is not charged with it.
    assert got.get(own_name, 0.0) > 20.0
    assert got.get("event loop", 0.0) < 20.0
