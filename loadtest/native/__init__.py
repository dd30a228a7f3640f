"""The compiled load generator (loadgen.cc): the Python clients' runs at less client CPU.

On a 2-core machine the load generator shares the cores with the servers it measures:
every millisecond of CPU it spends per request is taken from them. The Python clients
of loadtest/clients.py cost about 0.05 ms (HTTP) and 0.2 ms (gRPC) per request; this
one does the same closed-loop runs (same request files, same warm-up and window, the
same CPU marks at the window's edges) in C++ with epoll (HTTP/1.1), grpc++'s generic
stub (gRPC, `native-grpc`) or gRPC's HTTP/2 frames written with nghttp2 in the same
epoll loop (`native-grpc-h2`: no threads of its own), and its samples go through the
same `Recorder.result`.

It is built on first use into build/loadgen (again when loadgen.cc is newer) with g++
and the headers of grpc++ and nghttp2: `scripts/system-deps.sh loadgen` installs them.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtest.clients import RunSpec

SOURCE = Path(__file__).with_name("loadgen.cc")
BINARY = Path(__file__).resolve().parents[2] / "build" / "loadgen"
PROTOCOLS = {"native-http1": "http1", "native-grpc": "grpc", "native-grpc-h2": "grpc-h2"}
"""Client kinds (as in clients.CLIENTS) -> the binary's protocol argument."""


def build() -> Path:
    """The binary, compiled first if it is missing or older than its source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    try:
        flags = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "grpc++", "libnghttp2"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(
            "the native load generator needs g++, pkg-config and the headers of grpc++ "
            f"and nghttp2 (run scripts/system-deps.sh loadgen): {exc}"
        ) from exc
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    tmp = BINARY.with_suffix(".tmp")
    cmd = ["g++", "-O2", "-std=c++17", str(SOURCE), *shlex.split(flags), "-o", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the native load generator failed:\n{done.stderr[-4000:]}")
    tmp.replace(BINARY)  # atomic: a concurrent user sees the old binary or the new one
    return BINARY


def write_requests(requests: Sequence[bytes], path: Path) -> None:
    """Requests as (u32 little-endian length, bytes) records, as loadgen.cc reads them."""
    with open(path, "wb") as f:
        for r in requests:
            f.write(len(r).to_bytes(4, "little"))
            f.write(r)


def run(kind: str, spec: RunSpec, requests: Sequence[bytes]) -> dict[str, Any]:
    """One run of the binary; the result dict of `clients.Recorder.result`."""
    from loadtest.clients import Recorder

    if spec.refused_pause_s:
        raise ValueError("refused_pause_s: the native load generator does not pause after refusals")
    binary = build()
    with tempfile.TemporaryDirectory(prefix="livefeat-loadgen-") as tmp:
        req_file, samples_file = Path(tmp) / "requests.bin", Path(tmp) / "samples.bin"
        write_requests(requests, req_file)
        argv = [str(binary), PROTOCOLS[kind], spec.host, str(spec.port), str(req_file),
                str(spec.concurrency), str(spec.warmup_s), str(spec.duration_s),
                str(spec.drain_timeout_s), spec.grpc_channels, str(spec.grpc_deadline_s or 0),
                str(samples_file), *(f"{role}:{pid}" for role, pid in spec.pids)]  # fmt: skip
        limit = spec.warmup_s + spec.duration_s + spec.drain_timeout_s + 30
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
        if done.returncode != 0:
            raise RuntimeError(f"native load generator failed: {done.stderr.strip()[-2000:]}")
        got = json.loads(done.stdout)
        samples = array("q")
        samples.frombytes(samples_file.read_bytes())
    rec = Recorder(spec, requests, None)
    rec.latencies = samples[0::3]
    rec.done_ns = samples[1::3]
    rec.ok_latencies = array(
        "q", (lat for lat, ok in zip(rec.latencies, samples[2::3], strict=True) if ok)
    )
    rec.statuses = Counter(got["statuses"])
    rec.protocol_errors = Counter(got["protocol_errors"])
    rec.body_bytes = got["body_bytes"]
    rec.warmup_completed = got["warmup_completed"]
    rec.marks = {k: v for k, v in got.items() if k.startswith("t0_") or k.startswith("t1_")}
    return rec.result("200" if PROTOCOLS[kind] == "http1" else "OK", got["timeouts"])
