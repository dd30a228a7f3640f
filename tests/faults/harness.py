"""The fault suite's harness: servers, recovery, one scenario's run, the results file.

- `FaultServer`: a real `livefeat serve` with settings of the suite (L1 off by default, so
  that every read goes through Redis and a Redis fault shows at once).
- `run_fault`: live checked traffic (traffic.py) through a fault; the figures of each
  phase; the suite's assertions.
- `wait_recovered`: seconds from the end of a fault until answers are normal again.
- `RESULTS`: what each scenario measured; written to build/faults/results.json at the end
  (LIVEFEAT_FAULTS_OUT overrides the path).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LIVEFEAT, LiveServer, free_port, livefeat_env
from tests.faults.oracle import VIEWS, Oracle
from tests.faults.traffic import READ_DEADLINE_S, UNDEFINED, Traffic, WriteLog, summarize

__all__ = ["FULL", "VIEWS", "FaultServer", "Oracle", "WriteLog", "metric", "record", "run_fault"]

REPO = Path(__file__).resolve().parents[2]
FULL = os.environ.get("LIVEFEAT_FAULTS", "short") == "full"
"""LIVEFEAT_FAULTS=full: the long forms (make faults); otherwise the short ones (make test)."""
RESULTS_PATH = Path(os.environ.get("LIVEFEAT_FAULTS_OUT", REPO / "build/faults/results.json"))
RESULTS: dict[str, Any] = {}
"""scenario name -> its figures; written to RESULTS_PATH by the session fixture."""
RECOVERY_BOUND_S = 30.0
"""Reads must be normal again within this long after a fault ends."""
PUSH_RECOVERY_BOUND_S = 30.0 if FULL else 10.0
"""Pushes must be acknowledged again within this long (short form: shorter, to keep make
test quick while a fault leaves pushes failing)."""


def git_hash() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    )
    return done.stdout.strip() or "unknown"


# --------------------------------------------------------------------------- servers


class FaultServer(LiveServer):
    """`livefeat serve` over `data_dir` with LIVEFEAT_* `env` (L1 off unless given)."""

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()
        while self.grpc_port == self.port:  # free_port() may give the same port twice
            self.grpc_port = free_port()
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"serve-{self.port}.out"
        self.stderr_path = log_dir / f"serve-{self.port}.err"
        cmd = [LIVEFEAT, "serve", "--data-dir", str(data_dir), "--http-port", str(self.port),
               "--grpc-port", str(self.grpc_port), "--http-host", "127.0.0.1",
               "--drain-delay-s", "0.1", *extra_args]  # fmt: skip
        full_env = {**livefeat_env(), "LIVEFEAT_L1_MAX_ROWS": "0", **(env or {})}
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env
            )
        self.pid = self.proc.pid


def metric(server: LiveServer, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels` (0 if none)."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def redis_hits(server: LiveServer) -> float:
    """Keys Redis has served so far; -1 if /metrics did not answer in time."""
    try:
        return metric(server, "livefeat_tier_keys_total", tier="redis", result="hit")
    except httpx.TransportError:
        return -1.0


def wait_recovered(
    server: LiveServer, oracle: Oracle, since: float, need_redis: bool = True
) -> float | None:
    """Seconds from `since` (the fault's end) until a checked bundle answers with every row
    FOUND and, if `need_redis`, Redis serves keys again (its hit counter grows between two
    probes); None if not within RECOVERY_BOUND_S."""
    rng = random.Random(99)
    hits = redis_hits(server) if need_redis else 0.0
    hits = hits if hits >= 0 else float("inf")
    with httpx.Client(base_url=server.url, timeout=READ_DEADLINE_S) as client:
        while time.monotonic() - since < RECOVERY_BOUND_S:
            user, rooms = oracle.request(rng, 20)
            rooms = [r for r in rooms if (user, r) in oracle.rows["user_room_affinity"]] or rooms
            try:
                r = client.post(
                    "/v1/bundle", json={"bundle": "live_ranker", "user_id": user, "room_ids": rooms}
                )
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if r.status_code == 200:
                body = r.json()
                found = all(
                    s in ("FOUND", "DEFAULTED")
                    for e in [body["user"], *body["rooms"], *body["pairs"]]
                    for s in e["status"].values()
                )
                now_hits = redis_hits(server) if need_redis else 1.0
                if found and now_hits > hits and not oracle.check_http_bundle(user, rooms, body):
                    return round(time.monotonic() - since, 3)
                hits = now_hits if now_hits >= 0 else float("inf")
            time.sleep(0.05)
    return None


def log_errors(server: LiveServer, skip: int = 0) -> dict[str, Any]:
    """Log records at warning level or above in the server's stderr after its first `skip`
    lines, counted by event (numbers replaced by N), with the first traceback of each."""
    counts: Counter[str] = Counter()
    tracebacks: dict[str, str] = {}
    lines = server.stderr().splitlines()
    for line in lines[skip:]:
        try:
            rec = json.loads(line)
        except ValueError:
            counts["(not JSON) " + re.sub(r"\d+", "N", line[:120])] += 1
            continue
        if isinstance(rec, dict) and rec.get("level") in ("warning", "error", "critical"):
            event = str(rec.get("event")).splitlines()[0]
            key = f"{rec.get('level')}: {re.sub(r'[0-9]+', 'N', event)[:160]}"
            counts[key] += 1
            if rec.get("exception") and key not in tracebacks:
                frames = str(rec["exception"]).splitlines()
                ours = [f.strip() for f in frames if "/service/" in f and "site-packages" not in f]
                tracebacks[key] = " | ".join([*ours, frames[-1]])
    return {"lines": len(lines), "counts": dict(sorted(counts.items())), "tracebacks": tracebacks}


def record(name: str, figures: dict[str, Any]) -> None:
    """Keep a scenario's figures for the results file (written at the session's end)."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS[name] = {"form": "full" if FULL else "short", "git": git_hash(), "utc": when, **figures}


def write_results() -> None:
    if not RESULTS:
        return
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    old: dict[str, Any] = {}
    if RESULTS_PATH.exists():
        try:
            old = json.loads(RESULTS_PATH.read_text()).get("scenarios", {})
        except ValueError:
            old = {}
    doc = {
        "git": git_hash(),
        "form": "full" if FULL else "short",
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "read_deadline_s": READ_DEADLINE_S,
        "scenarios": {**old, **RESULTS},
    }
    RESULTS_PATH.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- one scenario


def run_fault(
    name: str,
    server: LiveServer,
    oracle: Oracle,
    start_fault: Callable[[], None],
    end_fault: Callable[[], None],
    hold_s: float,
    *,
    baseline_s: float = 2.0 if FULL else 0.5,
    need_redis: bool = True,
    traffic: dict[str, Any] | None = None,
    extra: Callable[[], dict[str, Any]] | None = None,
    writes: WriteLog | None = None,
) -> dict[str, Any]:
    """Live reads and writes; `start_fault`, `hold_s`, `end_fault`; wait for recovery; record.

    Then assert what the suite guarantees: no harness crash, 0 wrong values, 0
    acknowledged writes lost (nor half a batch), reads never answered with a server
    crash (HTTP 500, gRPC INTERNAL/UNKNOWN) or a dropped connection (a deadline missed,
    HTTP 503 or gRPC UNAVAILABLE are defined outcomes: counted, not failed), and
    recovery within RECOVERY_BOUND_S.
    """
    writes = writes if writes is not None else WriteLog()
    log_skip = len(server.stderr().splitlines())
    acked_before = len(writes.acked)
    attempted_before = len(writes.attempted)
    refused_before = len(writes.refused)
    refused_written_before = len(writes.refused_written)
    with Traffic(server, oracle, writes=writes, **(traffic or {})) as live:
        time.sleep(baseline_s)
        t0 = time.monotonic()
        try:
            start_fault()
            time.sleep(hold_s)
        finally:
            end_fault()
        t1 = time.monotonic()
        recovered_s = wait_recovered(server, oracle, t1, need_redis)
        while live.writes.attempted and time.monotonic() - t1 < PUSH_RECOVERY_BOUND_S:
            if any(s.outcome == "ok" for s in live.window(t1, time.monotonic(), ["push"])):
                break  # pushes are acknowledged again
            time.sleep(0.1)
        t2 = time.monotonic()
        time.sleep(0.5)
        live.stop()
    write_problems = live.final_write_check() if live.writes.attempted else []
    end = time.monotonic()
    acks_after = [
        s.start + s.latency - t1 for s in live.window(t1, end, ["push"]) if s.outcome == "ok"
    ]
    figures: dict[str, Any] = {
        "fault_s": round(t1 - t0, 3),
        "recovery_s": recovered_s,
        "push_recovery_s": round(max(0.0, min(acks_after)), 3) if acks_after else None,
        "reads": {
            "baseline": summarize(live.window(0, t0)),
            "fault": summarize(live.window(t0, t1)),
            "recovery": summarize(live.window(t1, t2)),
            "after": summarize(live.window(t2, end)),
            "all": summarize(live.window(0, end)),
        },
        "pushes": {
            **summarize(live.window(0, end, ["push"]), deadline_s=5.0),
            "fault": summarize(live.window(t0, t1, ["push"]), deadline_s=5.0),
            "attempted": len(live.writes.attempted) - attempted_before,
            "acknowledged": len(live.writes.acked) - acked_before,
            "refused_with_json": len(live.writes.refused) - refused_before,
            "refused_but_written": len(writes.refused_written) - refused_written_before,
            "acknowledged_lost_or_half": len(write_problems),
            "reads_went_back_in_time": live.went_back,
        },
        "wrong_values": len(live.problems()),
        "error_examples": dict(sorted(live.examples.items())),
        "server_log": log_errors(server, log_skip),
    }
    figures["pushes"]["refused_but_served_at_end"] = writes.refused_served
    if extra is not None:
        figures.update(extra())
    record(name, figures)
    assert not live.crashes, live.crashes
    problems = live.problems()
    assert not problems, f"{len(problems)} wrong values, e.g. {problems[:5]}"
    assert not write_problems, write_problems
    broken = {k: v for k, v in figures["reads"]["all"]["errors"].items() if k in UNDEFINED}
    broken |= {
        k: v for k, v in figures["pushes"]["errors"].items() if k in UNDEFINED or k == "http_500"
    }
    assert not broken, f"answers that are not a defined outcome: {broken} {live.examples}"
    assert recovered_s is not None, f"reads not recovered within {RECOVERY_BOUND_S} s"
    if live.writes.attempted[attempted_before:]:
        assert acks_after, f"no push acknowledged within {PUSH_RECOVERY_BOUND_S} s of the fault"
    return figures
