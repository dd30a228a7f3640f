"""What the runner prepares before it measures: data, Redis contents, requests, echo bodies.

- Data: the demo data dir (``livefeat demo``), and per Redis-backed livefeat a clone of its
  RocksDB (SST files hard-linked, the rest copied: what a RocksDB checkpoint does), since
  RocksDB allows one process per data dir.
- Redis: filled through livefeat's own write path (``RedisTier.put_many``, the newest-wins
  script) with the rows of the demo RocksDB: every row, or only the rows a request set
  reads (``--quick``: a 1,120,000-row fill takes 10 to 30 s here, too long for a smoke test).
- The Redis memory figure: ``livefeat load`` of the user and room views from the demo
  Parquet files into a fresh redis-server, ``INFO memory`` before and after.
- Requests from the standard workload's generator, pre-encoded per protocol; real
  responses fetched to size the echo bodies; the machine; livefeat's tier counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import pickle
import platform
import re
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from loadtest.servers import HOST, Server, livefeat_command, redis_client, redis_url

BUNDLE_PATH = "/v1/bundle"
BUNDLE = "live_ranker"
N_USERS, N_ROOMS = 100_000, 20_000  # the standard workload (docs/benchmark-workload.md)
SIZING_SAMPLES = 25  # real responses fetched per server and request set
REDIS_MEMORY_TARGET_MB = 50.0  # docs/benchmark-workload.md; MB = 10**6 bytes
Request = tuple[int, list[int]]


# --------------------------------------------------------------------------- data


def ensure_demo(data_dir: Path) -> bool:
    """Run `livefeat demo` into data_dir (it loads only if the data there is missing or
    of another layout); True if it loaded."""
    from service.cli import DEMO_MARKER

    before = (data_dir / DEMO_MARKER).read_text() if (data_dir / DEMO_MARKER).exists() else ""
    print(f"bench: livefeat demo --data-dir {data_dir} (about 15 s if it must load)", flush=True)
    subprocess.run([livefeat_command(), "demo", "--data-dir", str(data_dir)], check=True)
    return (data_dir / DEMO_MARKER).read_text() != before


def clone_rocksdb(src_data_dir: Path, dst_data_dir: Path) -> None:
    """A private copy of a (closed) data dir's RocksDB: SST files linked, the rest copied."""
    src, dst = src_data_dir / "rocksdb", dst_data_dir / "rocksdb"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if not f.is_file() or f.name == "LOCK" or f.name.startswith("LOG"):
            continue
        if f.suffix == ".sst":  # immutable: RocksDB never writes an SST file again
            try:
                os.link(f, dst / f.name)
                continue
            except OSError:  # another file system
                pass
        shutil.copy2(f, dst / f.name)


def fill_redis(data_dir: Path, url: str, requests: Iterable[Request] | None) -> dict[str, Any]:
    """Write the rows of data_dir's RocksDB into Redis with livefeat's RedisTier.put_many.

    Every row of every view, or (``requests`` given) only the rows those requests read.
    data_dir must not be in use.
    """
    started = time.monotonic()
    rows = asyncio.run(_fill_redis(data_dir, url, requests))
    return {
        "rows": rows,
        "scope": "all rows" if requests is None else "rows the request sets read",
        "seconds": round(time.monotonic() - started, 2),
        "how": "RocksDB of the demo data -> livefeat RedisTier.put_many (newest-wins script)",
    }


async def _fill_redis(data_dir: Path, url: str, requests: Iterable[Request] | None) -> int:
    from service.core.registry import load_registry
    from service.settings import Settings
    from service.store.factory import open_tiers

    settings = Settings(data_dir=data_dir, redis_url=url)
    registry = load_registry(settings.registry)
    redis, rocks = open_tiers(settings, registry, for_load=True)
    batch = 10_000
    written = 0
    try:
        if requests is None:
            for view in registry.views.values():
                items: list[tuple[bytes, bytes]] = []
                for item in rocks.scan(view.key_prefix):  # type: ignore[attr-defined]
                    items.append(item)
                    if len(items) == batch:
                        written += sum(await redis.put_many(items))
                        items = []
                if items:
                    written += sum(await redis.put_many(items))
        else:
            plan = registry.bundles[BUNDLE]
            wanted: set[bytes] = set()
            for user, rooms in requests:
                wanted.update(v.key(user) for v in plan.user)
                wanted.update(v.key(r) for v in plan.room for r in rooms)
                wanted.update(v.key(user, r) for v in plan.user_room for r in rooms)
            keys = sorted(wanted)
            for i in range(0, len(keys), batch):
                chunk = keys[i : i + batch]
                values = rocks.get_many_sync(chunk)  # type: ignore[attr-defined]
                found = [(k, v) for k, v in zip(chunk, values, strict=True) if v is not None]
                if found:
                    written += sum(await redis.put_many(found))
    finally:
        await redis.close()
        await rocks.close()
    return written


def measure_redis_memory(redis: Server, parquet_dir: Path, scratch: Path) -> dict[str, Any]:
    """`livefeat load` the user and room views into a fresh Redis: used_memory added."""
    from service.core.registry import load_registry
    from service.settings import Settings

    registry = load_registry(Settings().registry)
    views = [v.name for v in registry.views.values() if len(v.key_columns) == 1]
    client = redis_client(redis.port)
    before = client.info("memory")
    if client.dbsize():
        raise RuntimeError(f"{redis.name} is not empty")
    outputs = []
    for view in views:
        cmd = [
            livefeat_command(),
            "load",
            view,
            str(parquet_dir / f"{view}.parquet"),
            "--data-dir",
            str(scratch),
            "--redis-url",
            redis_url(redis),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
        outputs.append(done.stdout.strip().splitlines()[-1])
    after = client.info("memory")
    keys = int(client.dbsize())
    used = int(after["used_memory"]) - int(before["used_memory"])
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "views": views,
        "keys": keys,
        "used_memory_empty": before["used_memory"],
        "used_memory_loaded": after["used_memory"],
        "used_memory_bytes": used,
        "used_memory_mb": used / 1e6,
        "dataset_bytes": int(after["used_memory_dataset"]) - int(before["used_memory_dataset"]),
        "bytes_per_key": used / keys if keys else None,
        "target_mb": REDIS_MEMORY_TARGET_MB,
        "allocator": after.get("mem_allocator"),
        "redis_version": client.info("server").get("redis_version"),
        "load_output": outputs,
        "note": "MB = 10**6 bytes; used_memory after the load minus the empty server's",
    }


# --------------------------------------------------------------------------- requests


def make_requests(n_candidates: int, seed: int, count: int) -> list[Request]:
    from service.workload import RequestGenerator

    return RequestGenerator(N_USERS, N_ROOMS, n_candidates, seed=seed).requests(count)


def bundle_json(user: int, rooms: list[int]) -> bytes:
    import orjson

    return orjson.dumps({"bundle": BUNDLE, "user_id": user, "room_ids": rooms})


def encode_http1(path: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 POST request (keep-alive is the HTTP/1.1 default)."""
    return (
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), HOST.encode(), len(body), body)
    )


def encode_grpc(user: int, rooms: list[int]) -> bytes:
    """A serialized GetBundleRequest (the client sends these bytes as they are)."""
    from service._gen.livefeat.v1 import livefeat_pb2 as pb

    return pb.GetBundleRequest(bundle=BUNDLE, user_id=user, room_ids=rooms).SerializeToString()


ENCODERS: dict[str, Callable[[int, list[int]], bytes]] = {
    "http1": lambda user, rooms: encode_http1(BUNDLE_PATH, bundle_json(user, rooms)),
    "grpc": encode_grpc,
}
"""Client protocols: how one (user_id, room_ids) request is pre-encoded on the wire."""


# --------------------------------------------------------------------------- sizing


def fetch_http(port: int, user: int, rooms: list[int]) -> tuple[bytes, list[str]]:
    """A real /v1/bundle response and the status of each of its rows."""
    import orjson

    req = urllib.request.Request(
        f"http://{HOST}:{port}{BUNDLE_PATH}",
        data=bundle_json(user, rooms),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200:
            raise RuntimeError(f"/v1/bundle answered {r.status}")
        body: bytes = r.read()
    doc = orjson.loads(body)
    if len(doc["rooms"]) != len(rooms):
        raise RuntimeError(f"asked for {len(rooms)} rooms, got {len(doc['rooms'])}")
    statuses = [
        f"{part}:{s}"
        for part, entities in (
            ("user", [doc["user"]]),
            ("rooms", doc["rooms"]),
            ("pairs", doc["pairs"]),
        )
        for e in entities
        for s in e["status"].values()
    ]
    return body, statuses


def fetch_grpc(call: Any, user: int, rooms: list[int]) -> tuple[bytes, list[str]]:
    """A real GetBundle response (serialized) and the status of each of its rows."""
    from service._gen.livefeat.v1 import livefeat_pb2 as pb

    body: bytes = call(encode_grpc(user, rooms), timeout=30)
    reply = pb.GetBundleResponse.FromString(body)
    if len(reply.room_ids) != len(rooms):
        raise RuntimeError(f"asked for {len(rooms)} rooms, got {len(reply.room_ids)}")
    statuses = [
        f"{part}:{pb.Status.Name(s)}"
        for part, blocks in (("user", reply.user), ("rooms", reply.rooms), ("pairs", reply.pairs))
        for b in blocks
        for s in b.status
    ]
    return body, statuses


def size_responses(
    transport: str, port: int, requests: list[Request]
) -> tuple[bytes, dict[str, Any]]:
    """Real responses to the first requests: the median-sized one, and a summary."""
    import grpc

    from loadtest.clients import GET_BUNDLE

    bodies: list[bytes] = []
    statuses: dict[str, Counter[str]] = {"user": Counter(), "rooms": Counter(), "pairs": Counter()}
    with contextlib.ExitStack() as stack:
        if transport == "grpc":
            channel = stack.enter_context(grpc.insecure_channel(f"{HOST}:{port}"))
            call = channel.unary_unary(GET_BUNDLE)  # bytes in, bytes out
        for user, rooms in requests[:SIZING_SAMPLES]:
            if transport == "grpc":
                body, got = fetch_grpc(call, user, rooms)
            else:
                body, got = fetch_http(port, user, rooms)
            bodies.append(body)
            for s in got:
                part, name = s.split(":", 1)
                statuses[part][name] += 1
    sizes = sorted(len(b) for b in bodies)
    median = sizes[len(sizes) // 2]
    chosen = min(bodies, key=lambda b: (abs(len(b) - median), len(b)))
    return chosen, {
        "samples": len(bodies),
        "bytes_min": sizes[0],
        "bytes_median": median,
        "bytes_max": sizes[-1],
        "echo_body_bytes": len(chosen),
        "served_status": {k: dict(v) for k, v in statuses.items()},
    }


# --------------------------------------------------------------------------- observation

_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def tier_counters(port: int) -> dict[str, Any]:
    """livefeat's /metrics: keys asked of each tier by result, tier calls by operation."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
        return parse_tier_counters(r.read().decode())


def parse_tier_counters(text: str) -> dict[str, Any]:
    """The tier counters of a Prometheus text exposition (see `tier_counters`)."""
    keys: dict[str, dict[str, float]] = {}
    calls: dict[str, float] = {}
    dropped: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), dict(_LABEL.findall(m.group(2))), float(m.group(3))
        if name == "livefeat_tier_keys_total":
            keys.setdefault(labels["tier"], {})[labels["result"]] = value
        elif name == "livefeat_tier_operation_duration_seconds_count":
            calls[f"{labels['tier']} {labels['op']}"] = value
        elif name == "livefeat_write_behind_dropped_total":
            dropped[labels["tier"]] = value
    return {"keys": keys, "calls": calls, "write_behind_dropped": dropped}


def parse_requests(text: str) -> dict[str, float]:
    """Requests answered per "route code" (both front ends summed) in a Prometheus text
    exposition of livefeat's /metrics."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == "livefeat_requests_total":
            labels = dict(_LABEL.findall(m.group(2)))
            route = f"{labels['route']} {labels['code']}"
            out[route] = out.get(route, 0.0) + float(m.group(3))
    return out


def duration_totals(text: str, transport: str, route: str, code: str) -> tuple[float, float]:
    """(_sum, _count) of livefeat_request_duration_seconds for one transport, route and
    code in a /metrics exposition ((0, 0) before its first request)."""
    parts = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) in ("livefeat_request_duration_seconds_sum",
                                "livefeat_request_duration_seconds_count"):  # fmt: skip
            labels = dict(_LABEL.findall(m.group(2)))
            if (labels.get("transport"), labels.get("route"), labels.get("code")) == (
                transport, route, code,
            ):  # fmt: skip
                parts[m.group(1).rsplit("_", 1)[1]] = float(m.group(3))
    return parts["sum"], parts["count"]


def write_request_files(
    work: Path, requests: list[Request], transports: Iterable[str]
) -> dict[str, Path]:
    """Each transport's pre-encoded requests, pickled in `work` for the client process."""
    from loadtest.plan import TRANSPORTS

    files = {}
    for transport in transports:
        client = TRANSPORTS[transport]
        files[transport] = work / f"requests.{client}.pickle"
        encode = ENCODERS[client]
        files[transport].write_bytes(pickle.dumps([encode(u, r) for u, r in requests]))
    return files


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    git: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        root = Path(__file__).resolve().parents[1]

        def run(*a: str) -> str:
            return subprocess.run(
                ["git", "-C", str(root), *a], capture_output=True, text=True, check=True
            ).stdout.strip()

        git = {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git,
        "livefeat_env": {k: v for k, v in os.environ.items() if k.startswith("LIVEFEAT_")},
    }
