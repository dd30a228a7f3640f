"""loadtest.workers --threads: per-thread CPU read from /proc, by thread name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loadtest.workers import ThreadSampler, thread_cpu_s

# A process of its own (so that nothing else of the test process's counts): a thread
# that burns CPU, and a main thread that only sleeps.
BUSY = """
import threading, time
def burn():
    while True:
        pass
threading.Thread(target=burn, daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


def test_a_busy_thread_shows_under_its_name_and_the_main_thread_apart() -> None:
    with subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            name = Path(f"/proc/{proc.pid}/comm").read_text().strip()
            assert set(thread_cpu_s(proc.pid)) == {"event loop", name}
            got = ThreadSampler([proc.pid], 0.05, 0.5).result()[str(proc.pid)]
        finally:
            proc.kill()  # this pid only
    # The busy thread ran through the window (on a shared machine, not all of it): it
    # is counted under the process's name, and the main thread, which slept, is not
    # charged with it.
    assert got.get(name, 0.0) > 10.0, got
    assert got.get("event loop", 0.0) < 10.0, got
