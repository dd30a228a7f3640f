"""`python -m service.pipeline`: events -> Spark features -> Redis, step by step or at once.

    python -m service.pipeline events OUT [--size small] [--end now]
    python -m service.pipeline features EVENTS OUT_DIR [--cutoff END] [--redis-url URL]
    python -m service.pipeline write FEATURES_DIR --redis-url URL
    python -m service.pipeline run OUT [--size small] [--redis-url URL]   (events + features)

Spark runs on `--master` (local[*] by default); under spark-submit the session is the
one spark-submit made (its --master). Exit code 2 and one line on stderr on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from service.core.registry import Registry, load_registry
from service.errors import LivefeatError

DEFAULT_REGISTRY = Path(__file__).resolve().parents[1] / "demo_registry.yaml"
VIEWS = ("user_profile", "room_stats", "user_room_affinity")


def parse_time(text: str) -> int:
    """ms since the epoch from "now", an integer of ms, or ISO 8601 (UTC if no zone).
    Raises ValueError."""
    if text == "now":
        return time.time_ns() // 1_000_000
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not 'now', integer ms or ISO 8601 (2026-11-29T12:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _show(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m service.pipeline`."""
    top = argparse.ArgumentParser(
        prog="python -m service.pipeline", description=__doc__.split("\n")[0]
    )
    sub = top.add_subparsers(dest="command", required=True)

    def spark_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--master", default="local[*]", help="Spark master (default local[*])")
        p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, help="registry YAML")
        p.add_argument("--views", nargs="+", default=list(VIEWS), choices=VIEWS, metavar="VIEW")

    def event_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--size", default="small", help="tiny, small (default) or standard")
        p.add_argument("--end", default="now", help="the log's last instant (default now)")
        p.add_argument("--seed", type=int, default=42)

    ev = sub.add_parser("events", help="generate a raw event log (Parquet, by date)")
    ev.add_argument("out", type=Path)
    event_flags(ev)
    ft = sub.add_parser("features", help="compute the views' features as of a cut-off")
    ft.add_argument("events", type=Path)
    ft.add_argument("out", type=Path, help="directory for VIEW.parquet files")
    ft.add_argument("--cutoff", help="as of when (default: the log's end, from its _spec.json)")
    ft.add_argument("--redis-url", help="also write them into this Redis, from the executors")
    spark_flags(ft)
    wr = sub.add_parser("write", help="write VIEW.parquet files into Redis from the executors")
    wr.add_argument("features", type=Path, help="directory of VIEW.parquet files")
    wr.add_argument("--redis-url", required=True)
    spark_flags(wr)
    run = sub.add_parser("run", help="events, then features (and Redis with --redis-url)")
    run.add_argument("out", type=Path, help="OUT/events and OUT/features are written")
    event_flags(run)
    run.add_argument("--redis-url")
    spark_flags(run)
    return top


def _events(out: Path, size: str, end: str, seed: int) -> Path:
    from service.pipeline.events import EventSpec, write_events

    spec = EventSpec.sized(size, parse_time(end), seed)
    started = time.perf_counter()
    with tqdm(total=spec.days, unit="day", desc="events", disable=None) as bar:
        total = write_events(spec, out, lambda _n: bar.update())
    print(f"events: {total:,} events of {spec.n_users:,} users in {spec.n_rooms:,} rooms, "
          f"{_show(spec.start_ms)} .. {_show(spec.end_ms)}, in {time.perf_counter() - started:.1f} s"
          f" -> {out}")  # fmt: skip
    return out


def _session(master: str) -> Any:
    from service.pipeline.spark_session import session

    # spark-submit starts this process with a gateway to its JVM: use its session.
    return session(None if "PYSPARK_GATEWAY_PORT" in os.environ else master)


def _write(spark: Any, registry: Registry, view: str, df: Any, url: str) -> None:
    from service.pipeline.writer import write_view

    started = time.perf_counter()
    got = write_view(df, registry.views[view], Path(registry.path).read_text(), url)
    seconds = time.perf_counter() - started
    print(f"{view}: {got.rows:,} rows into Redis in {seconds:.1f} s ({got.rows / seconds:,.0f} "
          f"rows/s, checks included): {got.written:,} written, {got.ignored:,} ignored as not newer")  # fmt: skip


def _features(args: argparse.Namespace, events: Path, out: Path, cutoff: str | None) -> None:
    from service.pipeline import features
    from service.pipeline.events import read_spec

    registry = load_registry(args.registry)
    cutoff_ms = parse_time(cutoff) if cutoff else read_spec(events).end_ms
    spark = _session(args.master)
    log = features.read_events(spark, events)
    out.mkdir(parents=True, exist_ok=True)
    for view in args.views:
        started = time.perf_counter()
        path = features.write_parquet(features.compute(log, registry.views[view], cutoff_ms),
                                      out / f"{view}.parquet")  # fmt: skip
        df = spark.read.parquet(str(path))
        print(f"{view}: {df.count():,} rows as of {_show(cutoff_ms)} in "
              f"{time.perf_counter() - started:.1f} s -> {path}")  # fmt: skip
        if args.redis_url:
            _write(spark, registry, view, df, args.redis_url)


def _write_dir(args: argparse.Namespace) -> None:
    registry = load_registry(args.registry)
    spark = _session(args.master)
    for view in args.views:
        path = args.features / f"{view}.parquet"
        if not path.exists():
            raise LivefeatError(f"features: no {path} (run the features step first)")
        _write(spark, registry, view, spark.read.parquet(str(path)), args.redis_url)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        if args.command == "events":
            _events(args.out, args.size, args.end, args.seed)
        elif args.command == "features":
            _features(args, args.events, args.out, args.cutoff)
        elif args.command == "write":
            _write_dir(args)
        else:
            events = _events(args.out / "events", args.size, args.end, args.seed)
            _features(args, events, args.out / "features", None)
    except (LivefeatError, ValueError) as exc:
        print(f"pipeline {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
