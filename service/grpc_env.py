"""grpc's settings that a serving process must choose before grpc is first imported.

grpc reads GRPC_EXPERIMENTS once, when it is imported. In grpcio 1.85 a server's
connections are served by the EventEngine listener: a thread pool of its own reads
and writes the sockets and hands each completion on to grpc.aio's poller thread, which
wakes the event loop. With the experiment `event_engine_listener` off, the poller
thread does the reads and writes itself: one thread and one hand-off per completion
fewer. Measured on the development machine against the gRPC echo (docs/benchmarks.md,
thirteenth session): 0.16 ms of CPU per call against 0.20, grpc's threads beside the
event loop 27% of a core against 45%.

`livefeat serve` chooses this (`choose_serving_experiments`) before it imports the
server, and its workers inherit the variable. An operator who sets GRPC_EXPERIMENTS
(even to the empty string, grpc's own defaults) keeps their choice
(docs/operations.md, "gRPC's runtime").
"""

from __future__ import annotations

import os
import sys

SERVING_EXPERIMENTS = "-event_engine_listener"
"""GRPC_EXPERIMENTS of a serving process, unless the environment names its own."""


def choose_serving_experiments() -> bool:
    """Set GRPC_EXPERIMENTS to SERVING_EXPERIMENTS, unless the environment already sets
    it or grpc is already imported (too late: grpc would not read it). Returns whether
    it was set."""
    if "GRPC_EXPERIMENTS" in os.environ or "grpc" in sys.modules:
        return False
    os.environ["GRPC_EXPERIMENTS"] = SERVING_EXPERIMENTS
    return True
