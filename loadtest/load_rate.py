"""Batch load rate: `livefeat load` of the standard workload into RocksDB and Redis together.

    python -m loadtest.load_rate [--repetitions 3] [--out loadtest/results/load-rate.json]

Generates the standard workload's Parquet files once (service.workload.write_parquet),
then, per repetition, loads user_profile, room_stats and user_room_affinity with
`livefeat load VIEW FILE --data-dir D` into a fresh data dir in two modes:

- ``rocksdb+redis``: with ``--redis-url`` of a fresh redis-server of our own (free port),
  the target of docs/benchmark-workload.md (at least 100,000 rows/s into RocksDB and Redis);
- ``rocksdb``: the same loads without Redis, the reference measured in the same run.

The two modes alternate which goes first on each repetition. For every load: the wall
time of the whole command (interpreter start and imports included) and the CLI's own
timer (check, encode, write, sync, close), rows/s from each, the load's own CPU (the
rusage of that child, `os.wait4`), Redis's CPU (`INFO cpu` before and after) and how
busy the whole machine was (`/proc/stat`), since other work on a shared machine slows a
load down. Redis `used_memory` is read on the empty server and after users + rooms
(before the pairs): docs/benchmark-workload.md wants at most 50 MB (10^6 bytes) for those, checked
both as used_memory itself and as its increase over the empty server; a sample of keys is
sized with MEMORY USAGE and STRLEN to show where the bytes go.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest import stats
from loadtest.analysis import measure_and_publish, target_line
from loadtest.prepare import machine_info
from loadtest.servers import livefeat_command

VIEWS = ("user_profile", "room_stats", "user_room_affinity")
MODES = ("rocksdb+redis", "rocksdb")
TARGET_ROWS_S = 100_000
TARGET_REDIS_MB = 50.0
MB = 10**6  # bytes, as docs/benchmark-workload.md's targets are read in loadtest/prepare.py
MEMORY_SAMPLE_KEYS = 200  # keys per view sized with MEMORY USAGE
REDIS_COMMANDS = ("evalsha", "mget", "publish", "get", "set")
RESULTS = Path("loadtest/results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
_CLI_LINE = re.compile(
    r"^(?P<view>\S+): (?P<rows>\d+) rows in (?P<s>[\d.]+) s \((?P<rate>[\d,]+) rows/s\): "
    r"(?P<written>\d+) written, (?P<ignored>\d+) ignored",
    re.MULTILINE,
)


# --------------------------------------------------------------------------- pure helpers


def parse_load_output(text: str) -> dict[str, Any] | None:
    """The figures of `livefeat load`'s summary line, or None if there is none.

    The CLI prints seconds with one decimal but rows/s in full, so the CLI's own time is
    recomputed as rows / (rows/s).
    """
    m = _CLI_LINE.search(text)
    if not m:
        return None
    rows, rate = int(m["rows"]), float(m["rate"].replace(",", ""))
    return {
        "view": m["view"],
        "rows": rows,
        "written": int(m["written"]),
        "ignored": int(m["ignored"]),
        "cli_rows_per_s": rate,
        "cli_s": rows / rate if rate else None,
    }


def cpu_times_busy(stat_line: str) -> tuple[float, float]:
    """(busy, total) seconds from the aggregate `cpu` line of /proc/stat (idle+iowait idle)."""
    ticks = [int(x) for x in stat_line.split()[1:9]]  # user nice system idle iowait irq soft steal
    total = sum(ticks)
    return (total - ticks[3] - ticks[4]) / CLK_TCK, total / CLK_TCK


def rate(rows: float, seconds: float | None) -> float | None:
    """Rows per second, None without a positive duration."""
    return rows / seconds if seconds else None


def totals(views: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole workload from its per-view figures: sums, and rows/s from the sums."""
    rows = sum(v["rows"] for v in views.values())
    wall = sum(v["wall_s"] for v in views.values())
    cli = [v.get("cli_s") for v in views.values()]
    cli_s = sum(c for c in cli if c is not None) if all(c is not None for c in cli) else None
    out: dict[str, Any] = {
        "rows": rows,
        "wall_s": wall,
        "rows_per_s": rate(rows, wall),
        "cli_s": cli_s,
        "cli_rows_per_s": rate(rows, cli_s),
        "load_cpu_s": sum(v["load_cpu_s"] for v in views.values()),
    }
    if all("redis_cpu_s" in v for v in views.values()):
        out["redis_cpu_s"] = sum(v["redis_cpu_s"] for v in views.values())
    if all(v.get("redis_script_us_per_row") is not None for v in views.values()):
        us = sum(v["redis_script_us_per_row"] * v["rows"] for v in views.values())
        out["redis_script_us_per_row"] = us / rows if rows else None
    if all(v.get("machine_busy_cores") is not None for v in views.values()):
        busy = sum(v["machine_busy_cores"] * v["wall_s"] for v in views.values())
        out["machine_busy_cores"] = busy / wall if wall else None
    return out


def check(name: str, value: float | None, limit: float, higher_is_better: bool) -> dict[str, Any]:
    """One target line: the value, the limit and whether it is met (None: not measured)."""
    ok = None if value is None else (value >= limit if higher_is_better else value <= limit)
    return {"target": name, "value": value, "limit": f"{'>=' if higher_is_better else '<='} "
            f"{limit:g}", "ok": ok}  # fmt: skip


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


# --------------------------------------------------------------------------- processes


def machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        return cpu_times_busy(f.readline())


class TimedProcess:
    """A child process timed from start to exit: wall time, its own rusage (`os.wait4` of
    its pid, reaped by a thread the moment it exits), output, and how busy the whole
    machine was meanwhile (cores, from /proc/stat)."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.cmd = list(cmd)
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (closed by wait)
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        self._busy0, _ = machine_busy()
        self.t0_ns = time.perf_counter_ns()
        self.t1_ns = 0
        self.proc = subprocess.Popen(self.cmd, stdout=self._out, stderr=self._err, env=env)
        self.pid = self.proc.pid
        self._done: dict[str, Any] = {}
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        _, status, ru = os.wait4(self.pid, 0)  # this child only: nobody else's rusage
        self.t1_ns = time.perf_counter_ns()
        busy1, _ = machine_busy()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        wall = (self.t1_ns - self.t0_ns) / 1e9
        self._done = {
            "returncode": self.proc.returncode,
            "wall_s": wall,
            "cpu_user_s": ru.ru_utime,
            "cpu_sys_s": ru.ru_stime,
            "max_rss_mb": ru.ru_maxrss / 1024,
            "machine_busy_cores": (busy1 - self._busy0) / wall if wall else None,
        }

    def running(self) -> bool:
        return self._reaper.is_alive()

    def wait(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the exit; the figures and output. RuntimeError if still running."""
        self._reaper.join(timeout_s)
        if self._reaper.is_alive():
            raise RuntimeError(f"{' '.join(self.cmd)} still running after {timeout_s} s")
        out = {"cmd": self.cmd, **self._done}
        for name, f in (("stdout", self._out), ("stderr", self._err)):
            f.seek(0)
            out[name] = f.read().decode(errors="replace")
            f.close()
        return out


def run_timed(cmd: Sequence[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `cmd` to completion (see TimedProcess)."""
    return TimedProcess(cmd, env).wait()


def clean_env() -> dict[str, str]:
    """This environment without LIVEFEAT_* variables: the flags alone configure a load."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LIVEFEAT_")}


def redis_cpu_s(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_commands(client: Any, names: Sequence[str] = REDIS_COMMANDS) -> dict[str, list[int]]:
    """[calls, usec] so far of each command in `names` (INFO commandstats)."""
    got = client.info("commandstats")
    return {
        n: [int(got.get(f"cmdstat_{n}", {}).get(k, 0)) for k in ("calls", "usec")] for n in names
    }


def command_deltas(
    before: dict[str, list[int]], after: dict[str, list[int]]
) -> dict[str, dict[str, float | None]]:
    """Per command: calls, seconds spent executing them, and microseconds per call."""
    out: dict[str, dict[str, float | None]] = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, [0, 0])
        n, us = calls - c0, usec - u0
        if n:
            out[name] = {"calls": n, "seconds": us / 1e6, "usec_per_call": us / n}
    return out


def redis_memory(client: Any) -> dict[str, Any]:
    info = client.info("memory")
    keys = client.dbsize()
    return {
        "used_memory": int(info["used_memory"]),
        "used_memory_dataset": int(info["used_memory_dataset"]),
        "used_memory_overhead": int(info["used_memory_overhead"]),
        "keys": int(keys),
    }


def sample_key_sizes(client: Any, prefix: bytes, n_ids: int) -> dict[str, Any]:
    """MEMORY USAGE (key, value, object, dict entry) and STRLEN of evenly spaced keys."""
    step = max(n_ids // MEMORY_SAMPLE_KEYS, 1)
    keys = [prefix + b"%d" % i for i in range(1, n_ids + 1, step)][:MEMORY_SAMPLE_KEYS]
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.execute_command("MEMORY", "USAGE", k, "SAMPLES", "0")
        pipe.strlen(k)
    got = pipe.execute()
    usage = [u for u in got[0::2] if u is not None]
    lengths = [n for n, u in zip(got[1::2], got[0::2], strict=True) if u is not None]
    if not usage:
        return {"sampled": 0}
    return {
        "sampled": len(usage),
        "mean_key_bytes": sum(len(k) for k in keys) / len(keys),
        "mean_value_bytes": sum(lengths) / len(lengths),
        "mean_memory_usage_bytes": sum(usage) / len(usage),
    }


# --------------------------------------------------------------------------- the run


def generate(parquet_dir: Path) -> tuple[dict[str, Path], float, int]:
    from service.workload import WorkloadSpec, write_parquet

    event_time_ms = time.time_ns() // 1_000_000
    t = time.perf_counter()
    files = write_parquet(WorkloadSpec(), parquet_dir, event_time_ms)
    return files, time.perf_counter() - t, event_time_ms


def load_one(
    view: str, path: Path, data_dir: Path, redis_url: str | None, batch_rows: int | None
) -> dict[str, Any]:
    cmd = [livefeat_command(), "load", view, str(path), "--data-dir", str(data_dir)]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    if batch_rows:
        cmd += ["--batch-rows", str(batch_rows)]
    done = run_timed(cmd, clean_env())
    if done["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done['returncode']}):\n{done['stderr']}")
    parsed = parse_load_output(done["stdout"])
    if parsed is None:
        raise RuntimeError(f"no summary line in the output of {' '.join(cmd)}:\n{done['stdout']}")
    cpu = done["cpu_user_s"] + done["cpu_sys_s"]
    return {
        "rows": parsed["rows"],
        "written": parsed["written"],
        "ignored": parsed["ignored"],
        "wall_s": done["wall_s"],
        "rows_per_s": rate(parsed["rows"], done["wall_s"]),
        "cli_s": parsed["cli_s"],
        "cli_rows_per_s": parsed["cli_rows_per_s"],
        "load_cpu_s": cpu,
        "load_cpu_user_s": done["cpu_user_s"],
        "load_cpu_sys_s": done["cpu_sys_s"],
        "load_cpu_pct": stats.cpu_percent(cpu, done["wall_s"]),
        "load_max_rss_mb": done["max_rss_mb"],
        "machine_busy_cores": done["machine_busy_cores"],
        "cli_output": done["stdout"].strip(),
    }


def run_mode(
    mode: str, files: dict[str, Path], work: Path, rep: int, batch_rows: int | None
) -> dict[str, Any]:
    """Load the three views into a fresh data dir (and a fresh Redis for rocksdb+redis)."""
    from service.core.registry import load_registry
    from service.settings import DEMO_REGISTRY
    from tests.support.redis_proc import RedisServer

    data_dir = work / f"rep{rep}-{mode.replace('+', '-')}"
    redis = RedisServer(work) if mode == "rocksdb+redis" else None
    plans = load_registry(DEMO_REGISTRY).views
    out: dict[str, Any] = {"mode": mode, "repetition": rep, "views": {}}
    memory: dict[str, Any] = {}
    try:
        client = redis.client() if redis else None
        if client is not None:
            out["redis"] = {"pid": redis.pid, "port": redis.port}  # type: ignore[union-attr]
            memory["empty"] = redis_memory(client)
        for view in VIEWS:
            before = redis_cpu_s(client) if client is not None else 0.0
            commands = redis_commands(client) if client is not None else {}
            fig = load_one(view, files[view], data_dir, redis.url if redis else None, batch_rows)
            if client is not None:
                fig["redis_cpu_s"] = redis_cpu_s(client) - before
                fig["redis_commands"] = command_deltas(commands, redis_commands(client))
                script = fig["redis_commands"].get("evalsha", {}).get("seconds")
                fig["redis_script_us_per_row"] = 1e6 * script / fig["rows"] if script else None
                fig["redis_cpu_pct"] = stats.cpu_percent(fig["redis_cpu_s"], fig["wall_s"])
                fig["others_cpu_s"] = max(
                    fig["machine_busy_cores"] * fig["wall_s"] - fig["load_cpu_s"]
                    - fig["redis_cpu_s"], 0.0)  # fmt: skip
                memory[f"after_{view}"] = redis_memory(client)
                if view == "room_stats":  # users and rooms in, pairs not yet
                    memory["users_rooms_mb"] = (
                        memory["after_room_stats"]["used_memory"] - memory["empty"]["used_memory"]
                    ) / MB
                    memory["users_rooms_used_memory_mb"] = (
                        memory["after_room_stats"]["used_memory"] / MB
                    )
                    n = {"user_profile": 100_000, "room_stats": 20_000}
                    memory["sample"] = {
                        v: sample_key_sizes(client, plans[v].key_prefix, n[v]) for v in n
                    }
            else:
                fig["others_cpu_s"] = max(
                    fig["machine_busy_cores"] * fig["wall_s"] - fig["load_cpu_s"], 0.0
                )
            out["views"][view] = fig
            print(
                f"  rep {rep + 1} {mode:<14} {view:<19} {fig['rows']:>9,} rows "
                f"{fig['wall_s']:>6.2f} s {fig['rows_per_s']:>9,.0f} rows/s "
                f"(CLI timer {fig['cli_rows_per_s']:>9,.0f})  load CPU {fig['load_cpu_s']:.1f} s"
                + (f"  Redis CPU {fig['redis_cpu_s']:.1f} s" if client is not None else ""),
                flush=True,
            )
        out["total"] = totals(out["views"])
        if client is not None:
            out["redis_memory"] = memory
            client.close()
    finally:
        if redis is not None:
            redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    """A run's numeric figures only (for medians)."""
    figures: dict[str, Any] = {"views": {}, "total": run["total"]}
    for view, fig in run["views"].items():
        figures["views"][view] = {k: v for k, v in fig.items() if k != "cli_output"}
    if "redis_memory" in run:
        figures["redis_memory"] = run["redis_memory"]
    return figures


def measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {"schema": "livefeat-load-rate/1", "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="livefeat-load-rate-") as tmp:
        work = Path(tmp)
        parquet_dir = args.parquet_dir or work / "parquet"
        files, gen_s, event_time_ms = generate(parquet_dir)
        print(f"load_rate: workload generated in {gen_s:.1f} s into {parquet_dir}", flush=True)
        report["setup"] = {
            "parquet_dir": str(parquet_dir),
            "generation_s": round(gen_s, 2),
            "event_time_ms": event_time_ms,
            "files_mb": {v: round(p.stat().st_size / MB, 1) for v, p in files.items()},
            "batch_rows": args.batch_rows or "CLI default",
            "livefeat": livefeat_command(),
        }
        runs: list[dict[str, Any]] = []
        for rep in range(args.repetitions):
            for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                runs.append(run_mode(mode, files, work, rep, args.batch_rows))
    report["protocol"] = {
        "repetitions": args.repetitions,
        "order": "per repetition, both modes, alternating which goes first",
        "wall_s": "the whole `livefeat load` process, interpreter start and imports included",
        "cli_s": "the CLI's own timer: check, encode, write, sync, close (rows / printed rows/s)",
        "cpu": "load: rusage of the load process (os.wait4); Redis: INFO cpu user+sys delta; "
        "machine_busy_cores: every process on the machine, from /proc/stat",
        "redis_memory": "used_memory after users+rooms minus used_memory of the empty server",
        "median": "per figure, over repetitions",
    }
    report["runs"] = runs
    medians = {
        mode: stats.median_of_runs([_strip(r) for r in runs if r["mode"] == mode]) for mode in MODES
    }
    report["median"] = medians
    both, ref = medians["rocksdb+redis"]["total"], medians["rocksdb"]["total"]
    report["ratios"] = {
        "redis_over_rocksdb_rows_per_s": stats.ratio(both["rows_per_s"], ref["rows_per_s"]),
        "redis_over_rocksdb_cli_rows_per_s": stats.ratio(
            both["cli_rows_per_s"], ref["cli_rows_per_s"]
        ),
    }
    mem = medians["rocksdb+redis"].get("redis_memory", {})
    report["targets"] = [
        check("rows/s into RocksDB and Redis, whole workload, end to end (3 commands)",
              both["rows_per_s"], TARGET_ROWS_S, True),
        check("rows/s into RocksDB and Redis, whole workload, CLI timer (no start-up)",
              both["cli_rows_per_s"], TARGET_ROWS_S, True),
        check("Redis used_memory holding users + rooms, MB",
              mem.get("users_rooms_used_memory_mb"), TARGET_REDIS_MB, False),
        check("Redis used_memory for users + rooms, MB over the empty server",
              mem.get("users_rooms_mb"), TARGET_REDIS_MB, False),
    ]  # fmt: skip
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


def summary_table(report: dict[str, Any]) -> str:
    med = report["median"]
    head = (f"{'mode':<14} {'view':<19} {'rows':>9} {'wall s':>7} {'rows/s':>9} "
            f"{'CLI rows/s':>10} {'load CPU s':>10} {'Redis CPU s':>11} {'script':>7} "
            f"{'machine':>7}")  # fmt: skip
    lines = [head, f"{'':<14} {'':<19} {'':>9} {'':>7} {'':>9} {'':>10} {'':>10} {'':>11} "
             f"{'us/row':>7} {'cores':>7}", "-" * len(head)]  # fmt: skip
    for mode in MODES:
        for view, f in [*med[mode]["views"].items(), ("total", med[mode]["total"])]:
            lines.append(
                f"{mode:<14} {view:<19} {f['rows']:>9,.0f} {f['wall_s']:>7.2f} "
                f"{fmt(f['rows_per_s'], ',.0f'):>9} {fmt(f['cli_rows_per_s'], ',.0f'):>10} "
                f"{f['load_cpu_s']:>10.1f} {fmt(f.get('redis_cpu_s'), '.1f'):>11} "
                f"{fmt(f.get('redis_script_us_per_row'), '.1f'):>7} "
                f"{fmt(f.get('machine_busy_cores'), '.2f'):>7}"
            )
    mem = med["rocksdb+redis"].get("redis_memory", {})
    r = report["ratios"]
    lines += [
        "",
        f"RocksDB+Redis / RocksDB only, rows/s: end to end "
        f"{fmt(r['redis_over_rocksdb_rows_per_s'], '.2f')}, "
        f"CLI timer {fmt(r['redis_over_rocksdb_cli_rows_per_s'], '.2f')}",
        f"Redis used_memory (MB = 10^6 B): empty "
        f"{fmt(mem.get('empty', {}).get('used_memory', 0) / MB, '.2f')} MB, users+rooms "
        f"{fmt(mem.get('users_rooms_used_memory_mb'), '.2f')} MB "
        f"(+{fmt(mem.get('users_rooms_mb'), '.2f')} MB), after pairs "
        f"{fmt(mem.get('after_user_room_affinity', {}).get('used_memory', 0) / MB, '.1f')} MB",
    ]
    for view, s in mem.get("sample", {}).items():
        if s.get("sampled"):
            lines.append(
                f"  {view}: key {s['mean_key_bytes']:.0f} B, value {s['mean_value_bytes']:.0f} B, "
                f"MEMORY USAGE {s['mean_memory_usage_bytes']:.0f} B per key "
                f"({s['sampled']} sampled)"
            )
    lines += ["", "targets (docs/benchmark-workload.md)"]
    lines += [target_line(t, fmt(t["value"], ",.2f")) for t in report["targets"]]
    reps = report["protocol"]["repetitions"]
    lines.append(f"\nmedians of {reps} repetition{'s' * (reps > 1)}; script us/row: time Redis "
                 "spent in the write scripts per row; machine cores: busy cores of the whole "
                 "machine during the load (every process)")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure, print the table, write the JSON report."""
    p = argparse.ArgumentParser(prog="python -m loadtest.load_rate",
                                description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "load-rate.json")
    p.add_argument("--repetitions", type=int, default=3, help="runs of each mode (3)")
    p.add_argument("--parquet-dir", type=Path,
                   help="write the workload's Parquet here (kept); default: a temp dir")  # fmt: skip
    p.add_argument("--batch-rows", type=int, help="passed to livefeat load (its default: 50,000)")
    args = p.parse_args(argv)
    return measure_and_publish("load_rate", measure, summary_table, args)


if __name__ == "__main__":
    raise SystemExit(main())
