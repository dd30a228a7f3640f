"""Loading with Spark's executors against one `livefeat load` process: rows/s, same data, same Redis.

    python -m loadtest.spark_load_rate [--view user_room_affinity] [--repetitions 2]
        [--master local[2]] [--out loadtest/results/spark-load-rate.json]

The standard workload's Parquet file of the view (service.workload; 1,000,000 pairs for
user_room_affinity) is generated once. A redis-server of our own (free port, persistence
off) is emptied (FLUSHALL) before each load, and the two loaders alternate which goes
first on each repetition:

- ``livefeat-load``: `livefeat load VIEW FILE --redis-url URL --data-dir D --max-rows-per-s 0`,
  one process writing RocksDB and Redis together (its own rows/s: the CLI's timer, check
  included; and the wall time of the whole command);
- ``spark``: service.pipeline.writer.write_view on `--master` (default local[2]: two
  executor threads, each with its Python worker), the DataFrame read from the same file;
  timed from the call to its return (checks as Spark aggregations included); the
  session is started once, before, and its start-up reported apart.

Both publish change notifications and write the same bytes. Differences that matter
when reading the figure: `livefeat load` also writes RocksDB (and syncs it), the Spark
writer writes Redis only. The ratio spark / livefeat-load is computed per repetition.
Nobody subscribes to the Redis, so `livefeat load` is unpaced.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.servers import livefeat_command, redis_client, redis_server, redis_url
from service.core.registry import load_registry
from service.workload import WorkloadSpec, write_parquet

REGISTRY = Path(__file__).resolve().parents[1] / "service" / "demo_registry.yaml"
_RATE = re.compile(r": (?P<rows>\d+) rows in [\d.]+ s \((?P<rate>[\d,]+) rows/s\)")


def livefeat_load(view: str, path: Path, url: str, data_dir: Path) -> dict[str, Any]:
    """One `livefeat load` run: its own rows/s and the command's wall time."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEFEAT_")}
    cmd = [livefeat_command(), "load", view, str(path), "--redis-url", url,
           "--data-dir", str(data_dir), "--max-rows-per-s", "0"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"livefeat load failed ({done.returncode}): {done.stderr[-2000:]}")
    m = _RATE.search(done.stdout)
    if not m:
        raise RuntimeError(f"no summary line in: {done.stdout[-500:]}")
    rows = int(m["rows"])
    return {"rows": rows, "rows_per_s": float(m["rate"].replace(",", "")), "wall_s": wall,
            "wall_rows_per_s": rows / wall}  # fmt: skip


def spark_write(spark: Any, view: str, path: Path, url: str) -> dict[str, Any]:
    """One Spark write of the file: rows/s from the call to its return."""
    from service.pipeline.writer import write_view

    registry = load_registry(REGISTRY)
    started = time.perf_counter()
    got = write_view(spark.read.parquet(str(path)), registry.views[view], REGISTRY.read_text(), url)
    seconds = time.perf_counter() - started
    return {
        "rows": got.rows,
        "written": got.written,
        "s": seconds,
        "rows_per_s": got.rows / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print and save the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--view", default="user_room_affinity",
                    choices=["user_profile", "room_stats", "user_room_affinity"])  # fmt: skip
    ap.add_argument("--repetitions", type=int, default=2)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out", type=Path, default=Path("loadtest/results/spark-load-rate.json"))
    args = ap.parse_args(argv)
    from service.pipeline.spark_session import session

    with tempfile.TemporaryDirectory(prefix="spark-load-rate-") as tmp:
        work = Path(tmp)
        path = write_parquet(WorkloadSpec(), work / "parquet", time.time_ns() // 1_000_000)[
            args.view
        ]
        redis = redis_server("redis", work / "redis")
        redis.start()
        redis.wait_ready()
        url = redis_url(redis)
        started = time.perf_counter()
        spark = session(args.master, "livefeat-spark-load-rate")
        spark_start_s = time.perf_counter() - started
        runs: list[dict[str, Any]] = []
        try:
            client = redis_client(redis.port)
            for rep in range(args.repetitions):
                order = ["livefeat-load", "spark"] if rep % 2 == 0 else ["spark", "livefeat-load"]
                run: dict[str, Any] = {"repetition": rep, "order": order}
                for loader in order:
                    client.flushall()
                    if loader == "spark":
                        run[loader] = spark_write(spark, args.view, path, url)
                    else:
                        run[loader] = livefeat_load(args.view, path, url, work / f"data-{rep}")
                    run[loader]["keys_in_redis"] = client.dbsize()
                    print(
                        f"rep {rep} {loader}: {run[loader]['rows_per_s']:,.0f} rows/s", flush=True
                    )
                run["ratio"] = run["spark"]["rows_per_s"] / run["livefeat-load"]["rows_per_s"]
                runs.append(run)
        finally:
            spark.stop()
            redis.stop()
    report = {
        "view": args.view, "master": args.master, "cpus": os.cpu_count(),
        "spark_session_start_s": spark_start_s, "runs": runs,
        "median": {
            "livefeat_load_rows_per_s": statistics.median(r["livefeat-load"]["rows_per_s"] for r in runs),
            "spark_rows_per_s": statistics.median(r["spark"]["rows_per_s"] for r in runs),
            "ratio": statistics.median(r["ratio"] for r in runs),
        },
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    med = report["median"]
    print(f"{args.view}: livefeat load {med['livefeat_load_rows_per_s']:,.0f} rows/s, "
          f"Spark {args.master} {med['spark_rows_per_s']:,.0f} rows/s, ratio {med['ratio']:.2f} "
          f"(median of {len(runs)}; Spark session start {spark_start_s:.1f} s apart) -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
