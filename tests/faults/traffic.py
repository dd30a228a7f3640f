"""Live traffic of the fault suite: checked readers and a checked writer, every request kept.

- Readers (HTTP /v1/bundle, gRPC GetBundle) send one request at a time with
  READ_DEADLINE_S; every answer is checked value by value by the `Oracle`.
- The writer pushes all of WRITER_ROOMS in one batch, seq after seq (every feature it
  writes derives from (room, seq), so a row mixing two pushes shows), reads an
  acknowledged batch back at once (nothing older may be served), and after the run
  checks that the newest acknowledged batch is there, whole (`WriteLog`).
- `summarize` turns a window of requests into the figures of the results file.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx

from loadtest import stats
from service.client import LivefeatClient
from service.core.status import Status
from tests.conftest import LiveServer
from tests.faults.oracle import Oracle

READ_DEADLINE_S = 1.0
"""Every checked read has this deadline (HTTP client timeout, gRPC deadline)."""
WRITER_ROOMS = list(range(900_001, 900_011))
"""Rooms the writer overwrites, batch after batch (outside the demo's 1..200)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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
            self.threads.append(
                threading.Thread(target=self._guard, args=(self._read_written, 0), daemon=True)
            )
        self.crashes: list[str] = []
        self.went_back = 0
        """Reads of the writer's rooms that served an older seq than an earlier read did."""
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
                    self.writes.acked_at.append((time.monotonic(), seq))
                    # Read your write: nothing older than the acknowledged seq may be served.
                    sample.problems = self.writes.check(self._served(client), after_ack=True)
                elif not _json_error_body(r):
                    sample.problems = [f"push HTTP {r.status_code} without a JSON error body"]
                else:
                    self.writes.refused.append(seq)
                    # A refused push may still have reached a tier (RocksDB while Redis failed).
                    served = self._served(client)
                    if any(seq_of(f) == seq for _, f in served.values()):
                        self.writes.refused_written.append(seq)
                self._add(sample, r.text)
                time.sleep(0.05)

    def _read_written(self, _: int) -> None:
        """Read the writer's rooms over and over: a read that starts after a push was
        acknowledged must not serve anything older (nor a row mixing two pushes)."""
        newest_seen = 0  # the newest seq a completed read of this loop served
        with httpx.Client(base_url=self.server.url, timeout=READ_DEADLINE_S) as client:
            while not self.stopping.is_set():
                acked = self.writes.acked_at
                required = acked[-1][1] if acked else 0  # acknowledged before this read
                start = time.monotonic()
                payload = {"view": "room_stats", "ids": WRITER_ROOMS}
                try:
                    r = client.post("/v1/features", json=payload)
                except httpx.TimeoutException:
                    self._add(Sample("features", start, time.monotonic() - start, "timeout"))
                    continue
                except httpx.TransportError:
                    self._add(Sample("features", start, time.monotonic() - start, "conn_error"))
                    time.sleep(0.05)
                    continue
                outcome = outcome_of_http(r.status_code)
                sample = Sample("features", start, time.monotonic() - start, outcome)
                if r.status_code == 200:
                    rows = r.json()["rows"]
                    sample.statuses.update(row["status"]["room_stats"] for row in rows)
                    sample.problems = self.writes.check_read(rows, required)
                    seqs = [seq_of(row["features"]) or 0 for row in rows]
                    if any(0 < q < newest_seen for q in seqs):
                        self.went_back += 1  # allowed (not acknowledged), but worth a figure
                    newest_seen = max([newest_seen, *seqs])
                elif not _json_error_body(r):
                    sample.problems = [f"HTTP {r.status_code} without a JSON error body"]
                self._add(sample, r.text)
                time.sleep(self.pause_s)

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

    def window(
        self, t0: float, t1: float, kinds: Iterable[str] = ("http", "grpc", "features")
    ) -> list[Sample]:
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
    acked_at: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic time the acknowledgement arrived, seq), in order."""
    refused_written: list[int] = field(default_factory=list)
    """Refused seqs served right after their refusal: written (to some tier) although refused."""
    refused_served: list[int] = field(default_factory=list)
    """Refused seqs (an error answered) served at the end: written although refused."""
    attempted: list[int] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)

    def check_read(self, rows: list[dict[str, Any]], required: int) -> list[str]:
        """Problems of one read of the writer's rooms that started after seq `required`
        was acknowledged: nothing older, nothing never pushed, no row mixing pushes."""
        attempted = set(self.attempted)
        out = []
        for row in rows:
            status = row["status"]["room_stats"]
            if status == "UNAVAILABLE":
                continue  # defaults, allowed during a fault
            if status == "DEFAULTED":
                if required:
                    out.append(f"room {row['id']}: DEFAULTED after seq {required} was acknowledged")
                continue
            seq = seq_of(row["features"])
            if seq is None:
                out.append(f"room {row['id']}: a row mixing pushes: {row['features']}")
            elif seq < required:
                out.append(
                    f"room {row['id']}: stale: seq {seq} read after seq {required} was acknowledged"
                )
            elif seq not in attempted:
                out.append(f"room {row['id']}: seq {seq} never pushed")
        return out

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
