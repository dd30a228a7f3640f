"""The fault suite's harness: servers, the oracle, checked readers, a checked writer, results.

- `FaultServer`: a real `livefeat serve` with settings of the suite (L1 off by default, so
  that every read goes through Redis and a Redis fault shows at once).
- `Oracle`: the demo data's Parquet files, the source every served value is checked against.
- `Traffic`: background readers (HTTP /v1/bundle and gRPC GetBundle, checked value by value)
  and a writer (pushes whose acknowledged values are checked afterwards), each request
  kept with its start time, latency and outcome, so a scenario can cut the run into phases.
- `wait_recovered`: seconds from the end of a fault until answers are normal again.
- `RESULTS`: what each scenario measured; written to build/faults/results.json at the end.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pyarrow.parquet as pq
import yaml
from prometheus_client.parser import text_string_to_metric_families

from loadtest import stats
from service.client import Bundle, LivefeatClient, ViewData
from service.core.status import Status
from service.settings import DEMO_REGISTRY
from tests.conftest import LIVEFEAT, LiveServer, free_port, livefeat_env

REPO = Path(__file__).resolve().parents[2]
FULL = os.environ.get("LIVEFEAT_FAULTS", "short") == "full"
"""LIVEFEAT_FAULTS=full: the long forms (make faults); otherwise the short ones (make test)."""
RESULTS_PATH = Path(os.environ.get("LIVEFEAT_FAULTS_OUT", REPO / "build/faults/results.json"))
RESULTS: dict[str, Any] = {}
"""scenario name -> its figures; written to RESULTS_PATH by the session fixture."""

REGISTRY: dict[str, Any] = yaml.safe_load(DEMO_REGISTRY.read_text())
VIEWS: dict[str, Any] = REGISTRY["views"]
ROLES = {"user": "user_profile", "rooms": "room_stats", "pairs": "user_room_affinity"}
TYPE_DEFAULTS = {"int64": 0, "double": 0.0, "float": 0.0, "string": "", "bool": False}
NUMERIC = ("int64", "double", "float", "bool")
READ_DEADLINE_S = 1.0
"""Every checked read has this deadline (HTTP client timeout, gRPC deadline)."""
RECOVERY_BOUND_S = 30.0
WRITER_ROOMS = list(range(900_001, 900_011))
"""Rooms the writer overwrites, batch after batch (outside the demo's 1..200)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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


# --------------------------------------------------------------------------- the oracle


def defaults(view: str) -> dict[str, Any]:
    """A missing row's features (unprefixed), per the registry."""
    out: dict[str, Any] = {}
    for name, spec in VIEWS[view]["features"].items():
        if "default" in spec:
            out[name] = spec["default"]
        elif spec["type"] == "float_vector":
            out[name] = [0.0] * spec["dim"]
        else:
            out[name] = TYPE_DEFAULTS[spec["type"]]
    return out


def _same(spec: dict[str, Any], got: Any, want: Any) -> bool:
    """Served JSON value vs source value: exact, vectors compared as the float32 stored."""
    if spec["type"] == "float_vector":
        return bool(np.array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32)))
    if spec["type"] == "float":
        return bool(np.float32(got) == np.float32(want))
    return bool(got == want and type(got) is type(want))


class Oracle:
    """The source rows of the demo workload (its Parquet files) and each view's defaults."""

    def __init__(self, parquet_dir: Path) -> None:
        self.rows: dict[str, dict[Any, dict[str, Any]]] = {}
        for view, spec in VIEWS.items():
            table = pq.read_table(parquet_dir / f"{view}.parquet").to_pylist()
            keys = ["user_id", "room_id"] if spec["entity"] == "user_room" else None
            rows: dict[Any, dict[str, Any]] = {}
            for rec in table:
                if keys:
                    key: Any = (rec["user_id"], rec["room_id"])
                else:
                    key = rec["user_id" if spec["entity"] == "user" else "room_id"]
                rows[key] = {name: rec[name] for name in spec["features"]}
            self.rows[view] = rows
        self.defaults = {view: defaults(view) for view in VIEWS}
        self.users = sorted(self.rows["user_profile"])
        self.rooms = sorted(self.rows["room_stats"])
        self.pairs_by_user: dict[int, list[int]] = {}
        for u, r in self.rows["user_room_affinity"]:
            self.pairs_by_user.setdefault(u, []).append(r)

    def expected(self, view: str, key: Any, status: str) -> tuple[dict[str, Any] | None, str]:
        """The values allowed for `status`, or (None, why the status itself is wrong)."""
        source = self.rows[view].get(key)
        if status in ("FOUND", "STALE"):
            return (source, "") if source is not None else (None, "found a row never written")
        if status == "DEFAULTED":
            if source is not None:
                return None, "DEFAULTED a stored row"
            return self.defaults[view], ""
        if status == "UNAVAILABLE":
            return self.defaults[view], ""
        return None, f"unknown status {status}"

    def check_http_entity(self, view: str, key: Any, entity: dict[str, Any]) -> list[str]:
        """Problems of one entity of an HTTP answer (empty: every value allowed)."""
        status = entity["status"][view]
        want, why = self.expected(view, key, status)
        if want is None:
            return [f"{view} {key}: {why}"]
        prefix, features = f"{view}.", entity["features"]
        out = []
        for name, spec in VIEWS[view]["features"].items():
            got = features.get(prefix + name)
            if not _same(spec, got, want[name]):
                out.append(f"{view} {key} {status} {name}: served {got!r}, source {want[name]!r}")
        return out

    def check_http_bundle(self, user: int, rooms: list[int], body: dict[str, Any]) -> list[str]:
        out = self.check_http_entity("user_profile", user, body["user"])
        if [r["id"] for r in body["rooms"]] != rooms:
            out.append("rooms out of order")
        for room, entity in zip(rooms, body["rooms"], strict=False):
            out += self.check_http_entity("room_stats", room, entity)
        for room, entity in zip(rooms, body["pairs"], strict=False):
            out += self.check_http_entity("user_room_affinity", (user, room), entity)
        return out

    def check_grpc_view(self, view: str, keys: list[Any], data: ViewData) -> list[str]:
        out = []
        features = VIEWS[view]["features"]
        numeric = [n for n, s in features.items() if s["type"] in NUMERIC]
        if list(data.numeric_names) != numeric or len(data) != len(keys):
            return [f"{view}: shape {data.numeric_names} x {len(data)}"]
        for i, key in enumerate(keys):
            status = Status(int(data.status[i])).name
            want, why = self.expected(view, key, status)
            if want is None:
                out.append(f"{view} {key}: {why}")
                continue
            want_num = np.array([float(want[n]) for n in numeric], np.float32)
            if not np.array_equal(data.numeric[i], want_num):
                out.append(f"{view} {key} {status}: numeric {data.numeric[i]} != {want_num}")
            for name, col in data.strings.items():
                if col[i] != want[name]:
                    out.append(f"{view} {key} {status} {name}: {col[i]!r} != {want[name]!r}")
            for name, mat in data.vectors.items():
                if not np.array_equal(mat[i], np.asarray(want[name], np.float32)):
                    out.append(f"{view} {key} {status} {name}: vector differs")
        return out

    def check_grpc_bundle(self, user: int, rooms: list[int], got: Bundle) -> list[str]:
        return (
            self.check_grpc_view("user_profile", [user], got.user["user_profile"])
            + self.check_grpc_view("room_stats", rooms, got.rooms["room_stats"])
            + self.check_grpc_view(
                "user_room_affinity", [(user, r) for r in rooms], got.pairs["user_room_affinity"]
            )
        )

    def request(self, rng: random.Random, n_rooms: int = 30) -> tuple[int, list[int]]:
        """A user and rooms: half the user's stored pairs (FOUND pairs), half random rooms."""
        user = rng.choice(self.users)
        mine = self.pairs_by_user.get(user, [])[: n_rooms // 2]
        rooms = list(dict.fromkeys(mine + rng.sample(self.rooms, n_rooms)))[:n_rooms]
        return user, rooms


# --------------------------------------------------------------------------- traffic


@dataclass
class Sample:
    """One request: start (monotonic s), latency (s), outcome, statuses seen, problems."""

    kind: str  # "http", "grpc", "push"
    start: float
    latency: float
    outcome: str  # "ok", "http_503", "grpc_UNAVAILABLE", "timeout", "conn_error", "refused..."
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


REFUSED = ("http_429", "grpc_RESOURCE_EXHAUSTED")
UNDEFINED = ("http_500", "grpc_INTERNAL", "grpc_UNKNOWN", "conn_error")
"""Outcomes that are not a defined answer: a crash inside the server, a dropped connection."""


def outcome_of_http(code: int) -> str:
    return "ok" if code == 200 else f"http_{code}"


class Traffic:
    """Background readers (HTTP and gRPC, checked) and one writer, until `stop()`.

    Each loop issues one request at a time with READ_DEADLINE_S, and sleeps `pause_s`
    between requests so that the readers do not saturate a shared 2-core machine.
    """

    def __init__(
        self,
        server: LiveServer,
        oracle: Oracle,
        *,
        readers: Iterable[str] = ("http", "grpc"),
        writer: bool = True,
        pause_s: float = 0.01,
        seed: int = 1,
        writes: WriteLog | None = None,
    ) -> None:
        self.server, self.oracle, self.pause_s = server, oracle, pause_s
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.writes = writes if writes is not None else WriteLog()
        self.threads = [
            threading.Thread(target=self._guard, args=(self._read_http, seed), daemon=True)
            if kind == "http"
            else threading.Thread(target=self._guard, args=(self._read_grpc, seed + 1), daemon=True)
            for kind in readers
        ]
        if writer:
            self.threads.append(threading.Thread(target=self._guard, args=(self._write, 0)))
        self.crashes: list[str] = []
        self.examples: dict[str, str] = {}
        """outcome -> the first answer body seen with it (error kinds, for the report)."""

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(30)

    def _guard(self, loop: Callable[[int], None], seed: int) -> None:
        try:
            loop(seed)
        except BaseException as exc:  # a harness bug must fail the test, not vanish
            self.crashes.append(f"{loop.__name__}: {type(exc).__name__}: {exc}")

    def _add(self, sample: Sample, body: str = "") -> None:
        with self.lock:
            self.samples.append(sample)
            if sample.outcome != "ok" and sample.outcome not in self.examples:
                self.examples[f"{sample.kind} {sample.outcome}"] = body[:300]

    def _read_http(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.server.url, timeout=READ_DEADLINE_S) as client:
            while not self.stopping.is_set():
                user, rooms = self.oracle.request(rng)
                payload = {"bundle": "live_ranker", "user_id": user, "room_ids": rooms}
                start = time.monotonic()
                try:
                    r = client.post("/v1/bundle", json=payload)
                except httpx.TimeoutException:
                    self._add(Sample("http", start, time.monotonic() - start, "timeout"))
                    continue
                except httpx.TransportError:
                    self._add(Sample("http", start, time.monotonic() - start, "conn_error"))
                    time.sleep(0.05)
                    continue
                sample = Sample(
                    "http", start, time.monotonic() - start, outcome_of_http(r.status_code)
                )
                if r.status_code == 200:
                    body = r.json()
                    sample.problems = self.oracle.check_http_bundle(user, rooms, body)
                    for entity in [body["user"], *body["rooms"], *body["pairs"]]:
                        sample.statuses.update(entity["status"].values())
                elif not _json_error_body(r):
                    sample.problems = [f"HTTP {r.status_code} without a JSON error body"]
                self._add(sample, r.text)
                time.sleep(self.pause_s)

    def _read_grpc(self, seed: int) -> None:
        rng = random.Random(seed)
        with LivefeatClient(self.server.grpc_target) as client:
            while not self.stopping.is_set():
                user, rooms = self.oracle.request(rng)
                start = time.monotonic()
                try:
                    got = client.get_bundle(user, rooms, timeout=READ_DEADLINE_S)
                except grpc.RpcError as exc:
                    code = exc.code()  # type: ignore[attr-defined]
                    outcome = "timeout" if code == grpc.StatusCode.DEADLINE_EXCEEDED else code.name
                    sample = Sample("grpc", start, time.monotonic() - start, f"grpc_{outcome}")
                    self._add(sample, str(exc.details()))  # type: ignore[attr-defined]
                    time.sleep(self.pause_s)
                    continue
                sample = Sample("grpc", start, time.monotonic() - start, "ok")
                sample.problems = self.oracle.check_grpc_bundle(user, rooms, got)
                for role in (got.user, got.rooms, got.pairs):
                    for data in role.values():
                        sample.statuses.update(Status(int(s)).name for s in data.status)
                self._add(sample)
                time.sleep(self.pause_s)

    def _write(self, _: int) -> None:
        """Push all WRITER_ROOMS at once, seq after seq; after an ack, read them back."""
        base = self.writes.base_ms
        with httpx.Client(base_url=self.server.url, timeout=5.0) as client:
            while not self.stopping.is_set():
                seq = (self.writes.attempted[-1] if self.writes.attempted else 0) + 1
                rows = [
                    {"id": room, "event_time_ms": base + seq, "values": writer_values(room, seq)}
                    for room in WRITER_ROOMS
                ]
                start = time.monotonic()
                self.writes.attempted.append(seq)
                try:
                    r = client.post("/v1/push", json={"view": "room_stats", "rows": rows})
                except httpx.TimeoutException:
                    self._add(Sample("push", start, time.monotonic() - start, "timeout"))
                    continue
                except httpx.TransportError:
                    self._add(Sample("push", start, time.monotonic() - start, "conn_error"))
                    time.sleep(0.05)
                    continue
                sample = Sample(
                    "push", start, time.monotonic() - start, outcome_of_http(r.status_code)
                )
                if r.status_code == 200:
                    self.writes.acked.append(seq)
                    # Read your write: nothing older than the acknowledged seq may be served.
                    sample.problems = self.writes.check(self._served(client), after_ack=True)
                elif not _json_error_body(r):
                    sample.problems = [f"push HTTP {r.status_code} without a JSON error body"]
                else:
                    self.writes.refused.append(seq)
                self._add(sample, r.text)
                time.sleep(0.05)

    def _served(self, client: httpx.Client) -> dict[int, tuple[str, dict[str, Any]]]:
        try:
            r = client.post("/v1/features", json={"view": "room_stats", "ids": WRITER_ROOMS})
        except httpx.TransportError:
            return {}
        if r.status_code != 200:
            return {}
        rows = r.json()["rows"]
        return {row["id"]: (row["status"]["room_stats"], row["features"]) for row in rows}

    def final_write_check(self) -> list[str]:
        """After recovery: every acknowledged write is there, no batch is half there."""
        with httpx.Client(base_url=self.server.url, timeout=5.0) as client:
            served = self._served(client)
        if not served:
            return ["could not read the writer's rooms back"]
        return self.writes.check(served, after_ack=False)

    # ---- figures

    def window(self, t0: float, t1: float, kinds: Iterable[str] = ("http", "grpc")) -> list[Sample]:
        kinds = set(kinds)
        with self.lock:
            return [s for s in self.samples if s.kind in kinds and t0 <= s.start < t1]

    def problems(self) -> list[str]:
        with self.lock:
            return [p for s in self.samples for p in s.problems] + self.crashes


def writer_values(room: int, seq: int) -> dict[str, Any]:
    """Every int feature of room_stats derived from (room, seq): a half-written row shows."""
    return {
        "viewer_count": seq,
        "likes_5m": room,
        "gift_count_1m": seq * 7 + room % 1000,
        "category": f"w{seq}",
    }


def seq_of(features: dict[str, Any]) -> int | None:
    """The writer's seq a served row carries, or None if the row is not all of one push."""
    seq = features.get("room_stats.viewer_count")
    if not isinstance(seq, int):
        return None
    room = features.get("room_stats.likes_5m")
    if not isinstance(room, int):
        return None
    if features.get("room_stats.gift_count_1m") != seq * 7 + room % 1000:
        return None
    if features.get("room_stats.category") != f"w{seq}":
        return None
    return seq


@dataclass
class WriteLog:
    """The writer's pushes: attempted, acknowledged (200), refused (an error with a JSON body).

    Seq n is pushed with event time base_ms + n; one log may span several `Traffic`s.
    """

    base_ms: int = field(default_factory=now_ms)
    refused_served: list[int] = field(default_factory=list)
    """Refused seqs (an error answered) served at the end: written although refused."""
    attempted: list[int] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)

    def check(self, served: dict[int, tuple[str, dict[str, Any]]], after_ack: bool) -> list[str]:
        """Problems of the writer's rooms as served now.

        The newest acknowledged seq must be served (or a newer attempted one: a push
        that timed out may have been written); every room must show the same seq
        (all rows of a batch, or none); a row must be all of one push.
        """
        if not served:
            return []  # the read-back failed: counted as an error by its own request
        last_ack = self.acked[-1] if self.acked else 0
        attempted = set(self.attempted)
        out, seqs = [], set()
        for room in WRITER_ROOMS:
            status, features = served[room]
            if status == "UNAVAILABLE":
                if not after_ack:
                    out.append(f"room {room}: UNAVAILABLE after recovery")
                continue  # allowed during a fault, and served defaults: nothing stale
            if status == "DEFAULTED":
                if last_ack:
                    out.append(f"room {room}: DEFAULTED after seq {last_ack} was acknowledged")
                continue
            seq = seq_of(features)
            if seq is None:
                out.append(f"room {room}: a row mixing pushes: {features}")
                continue
            seqs.add(seq)
            if seq < last_ack:
                out.append(f"room {room}: seq {seq} served after seq {last_ack} was acknowledged")
            elif seq not in attempted:
                out.append(f"room {room}: seq {seq} never pushed")
        if not after_ack and len(seqs) > 1:
            out.append(f"half a batch: the writer's rooms show seqs {sorted(seqs)}")
        if not after_ack:
            self.refused_served = sorted(seqs & set(self.refused))
        return out


def _json_error_body(r: httpx.Response) -> bool:
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body)


# --------------------------------------------------------------------------- figures


def summarize(samples: list[Sample], deadline_s: float = READ_DEADLINE_S) -> dict[str, Any]:
    """Requests, outcomes by kind, within-deadline share, statuses, p50/p99 (ms)."""
    outcomes = Counter(s.outcome for s in samples)
    refused = sum(outcomes[k] for k in REFUSED)
    lat = sorted(s.latency * 1000 for s in samples)
    statuses: Counter[str] = Counter()
    for s in samples:
        statuses.update(s.statuses)
    answered = sum(1 for s in samples if s.outcome == "ok" and s.latency <= deadline_s)
    return {
        "requests": len(samples),
        "ok": outcomes["ok"],
        "refused": refused,
        "errors": {k: v for k, v in sorted(outcomes.items()) if k != "ok" and k not in REFUSED},
        "answered_within_deadline": answered,
        "answered_within_deadline_pct": round(100 * answered / len(samples), 2)
        if samples
        else None,
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": round(stats.percentile(lat, 50, is_sorted=True), 2) if lat else None,
        "p99_ms": round(stats.percentile(lat, 99, is_sorted=True), 2) if lat else None,
        "max_ms": round(lat[-1], 2) if lat else None,
        "wrong_values": sum(len(s.problems) for s in samples),
    }


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
    RESULTS[name] = {"form": "full" if FULL else "short", **figures}


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
    baseline_s: float = 1.0,
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
        while live.writes.attempted and time.monotonic() - t1 < RECOVERY_BOUND_S:
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
            "acknowledged_lost_or_half": len(write_problems),
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
        assert acks_after, "no push acknowledged after the fault ended"
    return figures
