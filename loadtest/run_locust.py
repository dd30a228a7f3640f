"""``make loadtest``: locust, headless, against livefeat; fails on any failed request.

    python -m loadtest.run_locust [--data-dir data/livefeat] [--http-port 8080] [--grpc-port 50051]
                                  [--out loadtest/results/locust] [-- extra locust arguments]

If a livefeat answers ``/readyz`` on the HTTP port, the test runs against it. Otherwise this
starts ``livefeat serve`` on the data dir (the demo data: ``make loadtest`` runs ``make demo``
first), records its pid in ``OUT/livefeat-serve.pid``, waits for ``/readyz``, and at the end
stops that pid (SIGTERM, then SIGKILL after 30 s) and nothing else.

Locust runs ``loadtest/locustfile.py`` (the mixed profile: HTTP and gRPC readers, one writer,
the step shape) with CSV, HTML and knee files in OUT. The locust options of the profile are the
locustfile's defaults, and each can be changed with its ``LIVEFEAT_*`` variable or after ``--``.
The exit code is non-zero if locust failed, if any request failed, or if nothing was measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
PREFIX = "livefeat"

# The profile of `make loadtest`, unless the environment says otherwise: modest, so that the
# two-core machine is not saturated; 10 s of warm-up, then 6 steps of 10 s (about 75 s).
PROFILE = {
    "LIVEFEAT_WARMUP_S": "10",
    "LIVEFEAT_STEP_USERS": "2,4,6,8,10,12",
    "LIVEFEAT_STEP_S": "10",
    "LIVEFEAT_STEP_SETTLE_S": "3",
    "LIVEFEAT_USER_RPS": "10",
    "LIVEFEAT_PUSH_RPS": "2",
    "LIVEFEAT_PUSH_ROWS": "100",
    "LIVEFEAT_P99_BUDGET_MS": "50",
}


def ready(url: str, timeout_s: float = 1.0) -> bool | None:
    """True: /readyz says 200; False: something answers, not ready; None: nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def start_server(args: argparse.Namespace, out: Path) -> subprocess.Popen[bytes]:
    """``livefeat serve`` in the background, its pid recorded; returns once /readyz says 200."""
    cmd = [
        str(Path(sys.executable).parent / "livefeat"), "serve",
        "--data-dir", str(args.data_dir), "--http-host", args.host,
        "--http-port", str(args.http_port), "--grpc-port", str(args.grpc_port),
    ]  # fmt: skip
    log_path = out / "livefeat-serve.log"
    with log_path.open("wb") as log:
        # Stepped to the knee and past it, and any failure fails the run: no admission
        # bound here (a 429 would count as a failure; loadtest/overload.py measures it).
        env = {**os.environ, "LIVEFEAT_MAX_IN_FLIGHT": "0"}
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    (out / "livefeat-serve.pid").write_text(f"{proc.pid}\n")
    print(f"run_locust: started livefeat serve, pid {proc.pid}, log {log_path}", flush=True)
    url = f"http://{args.host}:{args.http_port}/readyz"
    deadline = time.monotonic() + args.ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise SystemExit(
                f"run_locust: livefeat serve exited with {proc.returncode}:\n" + "\n".join(tail)
            )
        if ready(url):
            return proc
        time.sleep(0.25)
    stop(proc, out)
    raise SystemExit(f"run_locust: {url} not ready after {args.ready_timeout_s:g} s")


def stop(proc: subprocess.Popen[bytes], out: Path, grace_s: float = 30.0) -> None:
    """SIGTERM to the server we started (its pid only), SIGKILL if it is still there."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # uvicorn re-raises the SIGTERM it handled: -15 is a clean exit
    print(f"run_locust: livefeat serve (pid {proc.pid}) stopped, exit {proc.returncode}")
    (out / "livefeat-serve.pid").unlink(missing_ok=True)


def run_locust(args: argparse.Namespace, out: Path, extra: Sequence[str]) -> int:
    """Locust, headless, in its own process; killed (by pid) if it overruns. Its exit code."""
    prefix = out / PREFIX
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", f"http://{args.host}:{args.http_port}",
        "--grpc-target", f"{args.host}:{args.grpc_port}",
        "--csv", str(prefix), "--html", f"{prefix}_report.html",
        "--only-summary", "--stop-timeout", "5", "--exit-code-on-error", "1",
        *extra,
    ]  # fmt: skip
    env = {**PROFILE, **os.environ}
    print("run_locust: " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    try:
        return proc.wait(args.max_seconds)
    except subprocess.TimeoutExpired:
        print(f"run_locust: locust still running after {args.max_seconds:g} s, stopping it")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 124
    finally:
        if proc.poll() is None:  # KeyboardInterrupt
            proc.kill()
            proc.wait()


def read_stats(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of locust's ``*_stats.csv`` by "Type Name" ("Aggregated" for the total)."""
    rows: dict[str, dict[str, Any]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            key = row["Name"] if row["Name"] == "Aggregated" else f"{row['Type']} {row['Name']}"
            rows[key] = row
    return rows


def summarize(out: Path) -> tuple[list[str], int, int]:
    """Printable lines, the number of requests and of failures (from the stats CSV)."""
    stats_path = out / f"{PREFIX}_stats.csv"
    if not stats_path.exists():
        return [f"run_locust: no {stats_path}"], 0, 0
    rows = read_stats(stats_path)
    lines = [f"{'request':48} {'count':>7} {'fails':>5} {'req/s':>7} {'p50':>5} {'p99':>5} ms"]
    for key, row in rows.items():
        lines.append(
            f"{key:48} {row['Request Count']:>7} {row['Failure Count']:>5} "
            f"{float(row['Requests/s']):7.1f} {row['50%']:>5} {row['99%']:>5}"
        )
    total = rows.get("Aggregated", {})
    requests, failures = int(total.get("Request Count", 0)), int(total.get("Failure Count", 0))
    knee_path = out / f"{PREFIX}_knee.json"
    if knee_path.exists():
        knee = json.loads(knee_path.read_text())
        lines.append(f"knee ({knee_path.name}): stopped by {knee['stopped_by']}; budget p99 "
                     f"{knee['budget_ms']:g} ms")  # fmt: skip
        for label in ("knee", "last_within_budget"):
            step = knee.get(label)
            if step:
                lines.append(f"  {label}: {step['users']} readers, {step['rps']:.0f} req/s, "
                             f"read p50 {step['p50_ms']} ms, p99 {step['p99_ms']} ms")  # fmt: skip
            else:
                lines.append(f"  {label}: none")
    else:
        lines.append(f"run_locust: no {knee_path}")
    return lines, requests, failures


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data-dir", type=Path, default=Path("data/livefeat"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--grpc-port", type=int, default=50051)
    p.add_argument("--out", type=Path, default=Path("loadtest/results/locust"))
    p.add_argument("--ready-timeout-s", type=float, default=120.0)
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="locust is stopped after this long, whatever its shape says")  # fmt: skip
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{PREFIX}_*"):  # no stale figures from an earlier run
        old.unlink()

    url = f"http://{args.host}:{args.http_port}/readyz"
    state = ready(url)
    server: subprocess.Popen[bytes] | None = None
    if state:
        print(f"run_locust: using the livefeat already serving {url}")
    elif state is False:
        print(f"run_locust: {url} answers but is not ready; not starting another server")
        return 1
    try:
        if server is None and not state:
            server = start_server(args, out)
        code = run_locust(args, out, extra)
    finally:
        if server is not None:
            stop(server, out)

    lines, requests, failures = summarize(out)
    print("\n".join(lines))
    print(f"run_locust: CSV and HTML report in {out}/")
    if code != 0:
        print(f"run_locust: FAILED: locust exit code {code}")
        return code
    if failures or not requests:
        print(f"run_locust: FAILED: {failures} failed of {requests} requests")
        return 1
    print(f"run_locust: OK, {requests} requests, 0 failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
