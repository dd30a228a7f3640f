"""The command line: `livefeat serve`, `load`, `demo`, `get`, `consume`, `snapshot`, `restore`,
`report`.

Every flag also reads from its LIVEFEAT_* environment variable (settings.py);
a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from service import logs
from service.core.codec import Row
from service.core.registry import Registry, load_registry
from service.errors import LivefeatError
from service.settings import Settings
from service.store.l1 import L1Cache
from service.store.tiered import TieredStore

DEMO_MARKER = "DEMO_LOADED"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, help="registry YAML (LIVEFEAT_REGISTRY)")
    p.add_argument("--data-dir", type=Path, help="RocksDB and demo files (LIVEFEAT_DATA_DIR)")
    p.add_argument("--redis-url", help="Redis URL; none: embedded mode (LIVEFEAT_REDIS_URL)")


def parser() -> argparse.ArgumentParser:
    """The argument parser of `livefeat`."""
    top = argparse.ArgumentParser(prog="livefeat", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve HTTP (and gRPC) from the data dir")
    _common(serve)
    serve.add_argument("--http-host", help="(LIVEFEAT_HTTP_HOST, default 0.0.0.0)")
    serve.add_argument("--http-port", type=int, help="(LIVEFEAT_HTTP_PORT, default 8080)")
    serve.add_argument("--grpc-port", type=int, help="(LIVEFEAT_GRPC_PORT, default 50051)")
    serve.add_argument("--report-dir", type=Path,
                       help="serve DIR/report.html at /ui/report (LIVEFEAT_REPORT_DIR)")  # fmt: skip
    serve.add_argument("--drain-delay-s", type=float, default=1.0,
                       help="on SIGTERM, seconds between readiness false and closing the ports")  # fmt: skip
    serve.add_argument(
        "--kafka", metavar="HOST:PORT", help="Kafka bootstrap servers (LIVEFEAT_KAFKA)"
    )
    serve.add_argument("--log-served-topic", metavar="TOPIC",
                       help="publish sampled bundle answers to this topic (needs --kafka)")  # fmt: skip
    serve.add_argument("--log-served-dir", type=Path, metavar="DIR",
                       help="write sampled bundle answers as JSON Lines files into DIR")  # fmt: skip
    serve.add_argument("--log-served-fraction", type=float, metavar="F",
                       help="fraction of bundle answers logged (default 0.01)")  # fmt: skip
    consume = sub.add_parser("consume", help="write Kafka topics into views until SIGTERM")
    _common(consume)
    consume.add_argument("--kafka", metavar="HOST:PORT", help="bootstrap servers (LIVEFEAT_KAFKA)")
    consume.add_argument("--topic", action="append", dest="topics", default=[],
                         help="a topic to read; repeat --topic/--view in pairs")  # fmt: skip
    consume.add_argument("--view", action="append", dest="views", default=[],
                         help="the view the --topic before it is written into")  # fmt: skip
    consume.add_argument("--group", dest="kafka_group", help="consumer group (default livefeat)")
    consume.add_argument("--dead-letter-topic", dest="kafka_dead_letter_topic", metavar="TOPIC",
                         help="where bad messages go (default: logged and counted only)")  # fmt: skip
    consume.add_argument("--metrics-port", type=int,
                         help="/healthz, /readyz and /metrics (default 9108)")  # fmt: skip
    consume.add_argument("--http-host", help="the metrics port's address (default 0.0.0.0)")
    serve.add_argument("--workers", type=int,
                       help="worker processes sharing the ports (LIVEFEAT_WORKERS, default: the "
                            "CPUs this process may use, cgroup quota included)")  # fmt: skip
    # Set by the supervisor on the command lines of its workers (service/workers/).
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--control-dir", type=Path, help=argparse.SUPPRESS)
    serve.add_argument("--worker-restarted", action="store_true", help=argparse.SUPPRESS)
    load = sub.add_parser("load", help="load a Parquet file into one view")
    load.add_argument("view")
    load.add_argument("file", type=Path)
    _common(load)
    load.add_argument("--batch-rows", type=int,
                      help="rows per write batch (50,000; with --server 1,000 per message)")  # fmt: skip
    load.add_argument("--server", metavar="HOST:PORT",
                      help="stream the rows through a running service's gRPC port")  # fmt: skip
    load.add_argument("--max-rows-per-s", type=float, dest="load_max_rows_per_s",
                      help="at most this many rows/s, 0 for no limit (LIVEFEAT_LOAD_MAX_ROWS_PER_S;"
                           " default: no limit, but LIVEFEAT_LOAD_SERVING_ROWS_PER_S (10,000) "
                           "while serving replicas subscribe to the Redis being loaded)")  # fmt: skip
    demo = sub.add_parser("demo", help="generate the standard workload and load it")
    _common(demo)
    demo.add_argument("--force", action="store_true", help="generate and load again")
    demo.add_argument("--small", action="store_true", help="a small workload (tests)")
    get = sub.add_parser("get", help="call GetBundle on a running service, print the reply")
    get.add_argument("user_id", type=int)
    get.add_argument("room_ids", type=int, nargs="+", metavar="room_id")
    get.add_argument("--server", default="localhost:50051", metavar="HOST:PORT")
    get.add_argument("--bundle", default="live_ranker")
    get.add_argument("--timeout-s", type=float, default=5.0, help="the call's deadline")
    snap = sub.add_parser("snapshot", help="write the data dir's RocksDB as SST files (live ok)")
    snap.add_argument("out", type=Path, help="a new, empty directory")
    snap.add_argument("--data-dir", type=Path, help="(LIVEFEAT_DATA_DIR)")
    _report_parser(sub)
    rest = sub.add_parser("restore", help="fill a data dir (no service on it) from a snapshot")
    rest.add_argument("snapshot", type=Path)
    rest.add_argument("--data-dir", type=Path, help="(LIVEFEAT_DATA_DIR)")
    return top


def _report_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="feature quality and skew: OUT/report.{html,json}")
    _common(report)
    report.add_argument("--out", type=Path, required=True, help="directory for the report")
    report.add_argument("--offline", action="append", metavar="VIEW=FILE.parquet",
                        help="training data of a view (the load format); repeatable")  # fmt: skip
    report.add_argument("--served", action="append", type=Path, metavar="FILE_OR_DIR",
                        help="served-feature log (*.jsonl files); repeatable")  # fmt: skip
    report.add_argument("--sample", type=int, default=10_000, help="ids per view (10,000)")
    report.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    report.add_argument("--fail-on-skew", action="store_true",
                        help="exit 1 when a feature is flagged (CI gates)")  # fmt: skip


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from service.report.options import ReportOptions, parse_offline

    offline = parse_offline(args.offline, load_registry(settings.registry))
    options = ReportOptions(args.out, offline, args.served or [], args.sample, args.seed)
    from service.report.build import write_report  # numpy, matplotlib, the serving stack

    started = time.perf_counter()
    doc = asyncio.run(write_report(settings, options))
    flagged = [f"{v}.{f}" for v, view in doc["views"].items() for f in view["flagged"]]
    print(f"report: {len(doc['views'])} views in {time.perf_counter() - started:.1f} s -> "
          f"{args.out / 'report.html'}, {args.out / 'report.json'}; "
          f"flagged: {', '.join(flagged) or 'none'}")  # fmt: skip
    return 1 if flagged and args.fail_on_skew else 0


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    names = set(Settings.model_fields)
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return Settings(**given)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `livefeat`; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        settings = settings_from(args)
        logs.setup(settings.log_level)
        if args.command == "serve":
            return _serve(settings, args, sys.argv[1:] if argv is None else argv)
        if args.command == "consume":
            _consume(settings, args.topics, args.views)
        elif args.command == "load" and args.server:
            print(_load_remote(settings, args.view, args.file, args.server, args.batch_rows))
        elif args.command == "load":
            batch_rows = args.batch_rows or 50_000
            print(asyncio.run(_load(settings, args.view, args.file, batch_rows)))
        elif args.command == "get":
            print(_get(args.server, args.user_id, args.room_ids, args.bundle, args.timeout_s))
        elif args.command == "report":
            return _report(settings, args)
        elif args.command in ("snapshot", "restore"):
            print(_snapshot_or_restore(settings, args))
        else:
            _demo(settings, args.force, args.small)
    except (LivefeatError, ValidationError) as exc:
        print(f"livefeat {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _consume(settings: Settings, topics: list[str], views: list[str]) -> None:
    import uvloop

    from service.kafka.run import consume, routes_of

    routes = routes_of(topics, views, load_registry(settings.registry))
    # RocksDB only when a data dir is given (flag or LIVEFEAT_DATA_DIR): the usual
    # consumer writes the Redis that serving replicas read, and keeps no disk.
    rocksdb = "data_dir" in settings.model_fields_set
    uvloop.run(consume(settings, routes, rocksdb))


def _serve(settings: Settings, args: argparse.Namespace, argv: list[str]) -> int:
    """One process, a worker of a supervisor, or the supervisor of N workers."""
    from service.grpc_env import choose_serving_experiments

    choose_serving_experiments()  # before grpc is imported (by the server, the supervisor)
    from service.served_log import check_served_log
    from service.workers.cpus import available_cpus

    check_served_log(settings.kafka, settings.log_served_topic)  # before any worker starts

    workers = settings.workers or available_cpus()
    if args.worker_index is not None:
        from service.server import run
        from service.workers.worker import WorkerRole

        role = WorkerRole(args.worker_index, workers, args.control_dir, args.worker_restarted)
        run(settings, args.drain_delay_s, role)
    elif workers == 1:
        from service.server import run

        run(settings, args.drain_delay_s)
    else:
        from service.server import GRACE_S
        from service.workers.supervisor import Supervisor, check_ports, worker_command

        check_ports(settings.http_host, [settings.http_port, settings.grpc_port])
        grace_s = args.drain_delay_s + GRACE_S + 5.0  # a worker's own drain, and closing
        return Supervisor(worker_command(argv), workers, grace_s).run()
    return 0


def _snapshot_or_restore(settings: Settings, args: argparse.Namespace) -> str:
    from service import snapshot

    db = Path(settings.data_dir) / "rocksdb"
    started = time.perf_counter()
    with tqdm(unit="rows", unit_scale=True, desc=args.command, disable=None) as bar:
        if args.command == "snapshot":
            result = snapshot.snapshot(db, args.out, progress=bar.update)
        else:
            result = snapshot.restore(args.snapshot, db, progress=bar.update)
    return f"{args.command}: {result} in {time.perf_counter() - started:.1f} s"


def _open_store(settings: Settings, registry: Registry) -> TieredStore[Row]:
    from service.store.factory import open_store

    return open_store(settings, registry, L1Cache(0, 1.0), for_load=True)


async def _load(settings: Settings, view: str, path: Path, batch_rows: int) -> str:

    registry = load_registry(settings.registry)
    if view not in registry.views:
        raise LivefeatError(f"no view {view!r} in {settings.registry}")
    store = _open_store(settings, registry)
    checkpoints = Path(settings.data_dir) / "loads"
    return await _load_into(store, registry.views[view], path, batch_rows, checkpoints, settings)


def _load_remote(
    settings: Settings, view: str, path: Path, server: str, batch_rows: int | None
) -> str:
    from service.grpc import remote

    registry = load_registry(settings.registry)
    if view not in registry.views:
        raise LivefeatError(f"no view {view!r} in {settings.registry}")
    started = time.perf_counter()
    with tqdm(unit="rows", unit_scale=True, desc=view, disable=None) as bar:
        got = remote.load(server, registry.views[view], path, batch_rows or 1_000, bar.update)
    seconds = time.perf_counter() - started
    return (f"{view}: {got.written + got.ignored} rows in {got.batches} batches to {server} "
            f"in {seconds:.1f} s: {got.written} written, {got.ignored} ignored as not newer")  # fmt: skip


def _get(server: str, user_id: int, room_ids: list[int], bundle: str, timeout_s: float) -> str:
    import orjson

    from service.grpc import remote

    got = remote.get_bundle(server, user_id, room_ids, bundle, timeout_s)
    return orjson.dumps(got, option=orjson.OPT_INDENT_2).decode()


async def _load_into(
    store: TieredStore[Any],
    plan: Any,
    path: Path,
    batch_rows: int,
    checkpoints: Path,
    settings: Settings,
) -> str:
    from service.load import Checkpoint, Pacer, check_file, load_file

    started = time.perf_counter()
    count_replicas = store.subscribers if store.publishes else None
    pacer = Pacer(settings.load_max_rows_per_s, settings.load_serving_rows_per_s, count_replicas)
    try:
        total = check_file(plan, path).metadata.num_rows
        checkpoint = Checkpoint(checkpoints, plan.name, path, batch_rows)
        with tqdm(total=total, unit="rows", unit_scale=True, desc=plan.name, disable=None) as bar:
            result = await load_file(plan, path, store, batch_rows, bar.update, checkpoint, pacer)
        await store.sync()
    finally:
        await store.close()
    seconds = time.perf_counter() - started
    loaded = result.rows - result.resumed
    resumed = f", {result.resumed} done by an earlier run" if result.resumed else ""
    return (f"{plan.name}: {loaded} rows in {seconds:.1f} s ({loaded / seconds:,.0f} rows/s): "
            f"{result.written} written, {result.ignored} ignored as not newer{resumed}"
            f"{pacer.describe()}")  # fmt: skip


def _demo(settings: Settings, force: bool, small: bool) -> None:
    from service.workload import WorkloadSpec, write_parquet

    data_dir = Path(settings.data_dir)
    marker = data_dir / DEMO_MARKER
    registry = load_registry(settings.registry)
    # The keys carry each view's layout: data loaded under another layout (an
    # older livefeat, another registry) is not what would be served. Load again.
    layouts = ",".join(sorted(v.key_prefix.decode() for v in registry.views.values()))
    spec = WorkloadSpec.small() if small else WorkloadSpec()
    done = marker.read_text() if marker.exists() else ""
    if done.startswith(f"{spec}, layouts={layouts},") and not force:
        print(f"demo data already loaded in {data_dir} ({done.strip()}); --force loads it again")
        return
    out = data_dir / "demo-parquet"
    out.mkdir(parents=True, exist_ok=True)
    now_ms = time.time_ns() // 1_000_000
    total = spec.n_users + spec.n_rooms + spec.n_pairs
    with tqdm(total=total, unit="rows", unit_scale=True, desc="generate", disable=None) as bar:
        files = write_parquet(spec, out, now_ms, bar.update)
    for view, path in files.items():
        if view not in registry.views:
            raise LivefeatError(f"the registry {settings.registry} has no view {view!r}")
        store = _open_store(settings, registry)
        print(
            asyncio.run(
                _load_into(store, registry.views[view], path, 50_000, data_dir / "loads", settings)
            )
        )
    marker.write_text(f"{spec}, layouts={layouts}, event_time_ms={now_ms}\n")


if __name__ == "__main__":  # the supervisor starts its workers as `python -m service.cli`
    sys.exit(main())
