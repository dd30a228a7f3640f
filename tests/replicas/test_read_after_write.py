"""Property: a read that starts after an acknowledged push never returns an older event.

Three real `livefeat serve` replicas share one real redis-server. Hypothesis
draws sequences of pushes and reads (which replica, which room), run by three
client threads at once, so that pushes and reads interleave at random. Push
number k writes `viewer_count = k` with event time T + k, so that the value a
read returns says which event it saw; k grows with every push (newest event
wins, so the stored value is the largest k written). For every read, the
pushes acknowledged before it started give the smallest k it may return.

Reads go through HTTP and gRPC alike: a gRPC read brings rows into L1 without their
JSON (ViewCodec.bare), and an HTTP read renders them in place (docs/design.md).

`same replica`: reads of the replica that acknowledged the push.
`any replica`: reads of any replica (needs the change notification to have
dropped the other replicas' L1 copy before the ack, or their L1 not to hold it).
A read answered UNAVAILABLE (no tier in time: defaults, marked so) saw no event
and is left out.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.client import LivefeatClient, ViewData
from service.core.status import Status
from tests.conftest import LiveServer
from tests.replicas.support import replicas_of
from tests.support.redis_proc import RedisServer

pytestmark = pytest.mark.process

VIEW = "room_stats"
ROOMS = [761_000 + i for i in range(3)]
T0 = time.time_ns() // 1_000_000
THREADS = 3


@pytest.fixture(scope="module")
def replicas(
    demo_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LiveServer]]:
    root = tmp_path_factory.mktemp("raw-replicas")
    redis = RedisServer(root / "redis")
    try:
        with replicas_of(demo_template, root, redis.url) as out:
            yield out
    finally:
        redis.stop()


@dataclass(frozen=True)
class Done:
    """One finished operation: what, where, which room, the k pushed or read, when."""

    kind: str
    replica: int
    room: int
    k: int
    started: float
    ended: float


OPS = st.lists(
    st.tuples(st.sampled_from(["push", "read", "grpc"]), st.integers(0, 2), st.sampled_from(ROOMS)),
    min_size=6, max_size=24,
)  # fmt: skip


class Cluster:
    """Clients of the replicas and the push counter shared by every example."""

    def __init__(self, replicas: list[LiveServer]) -> None:
        self.clients = [httpx.Client(base_url=s.url, timeout=10) for s in replicas]
        self.rankers = [LivefeatClient(s.grpc_target) for s in replicas]
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    @staticmethod
    def post(client: httpx.Client, path: str, body: dict) -> tuple[float, httpx.Response]:
        """The answer, and when the request that got it started. A refusal (429: the
        admission bound, docs/operations.md) did nothing, so the request is sent again;
        its start is the answered attempt's, the strictest for the check."""
        while True:
            started = time.monotonic()
            r = client.post(path, json=body)
            if r.status_code != 429:
                return started, r
            time.sleep(0.01)

    @staticmethod
    def grpc_read(ranker: LivefeatClient, room: int) -> tuple[float, ViewData]:
        """`post` for a gRPC GetFeatures of one room (RESOURCE_EXHAUSTED: sent again)."""
        while True:
            started = time.monotonic()
            try:
                return started, ranker.get_features(VIEW, [room], timeout=10)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
            time.sleep(0.01)

    def run(self, kind: str, replica: int, room: int) -> Done:
        client = self.clients[replica]
        if kind == "push":
            with self.lock:
                k = next(self.counter)
            row = {"id": room, "event_time_ms": T0 + k, "values": {"viewer_count": k}}
            started, r = self.post(client, "/v1/push", {"view": VIEW, "rows": [row]})
            assert r.status_code == 200, r.text
        elif kind == "grpc":
            started, got = self.grpc_read(self.rankers[replica], room)
            if got.status[0] == Status.UNAVAILABLE:
                return Done("unavailable", replica, room, -1, started, time.monotonic())
            k = int(got.column("viewer_count")[0])  # float32: exact up to 2**24
            kind = "read"
        else:
            started, r = self.post(client, "/v1/features", {"view": VIEW, "ids": [room]})
            assert r.status_code == 200, r.text
            got = r.json()["rows"][0]
            # UNAVAILABLE (no tier answered in time) serves defaults, marked: not an event.
            if got["status"][VIEW] == "UNAVAILABLE":
                return Done("unavailable", replica, room, -1, started, time.monotonic())
            k = int(got["features"][f"{VIEW}.viewer_count"])
        return Done(kind, replica, room, k, started, time.monotonic())


def violations(done: list[Done], same_replica: bool) -> list[str]:
    """Reads that returned an event older than one acknowledged before they started."""
    out = []
    pushes = [d for d in done if d.kind == "push"]
    for read in (d for d in done if d.kind == "read"):
        acked = [p.k for p in pushes if p.room == read.room and p.ended < read.started
                 and (not same_replica or p.replica == read.replica)]  # fmt: skip
        if acked and read.k < max(acked):
            out.append(f"read of room {read.room} at replica {read.replica} gave push "
                       f"{read.k}, after push {max(acked)} was acknowledged")  # fmt: skip
    return out


def interleave(cluster: Cluster, ops: list[tuple[str, int, int]]) -> list[Done]:
    """Run `ops` split over THREADS client threads (each in order), all at once."""
    parts = [ops[i::THREADS] for i in range(THREADS)]
    with ThreadPoolExecutor(THREADS) as pool:
        results = pool.map(lambda part: [cluster.run(*op) for op in part], parts)
        return [d for part in results for d in part]


@pytest.mark.parametrize("same_replica", [True, False], ids=["same-replica", "any-replica"])
def test_no_read_after_an_acknowledged_push_returns_an_older_event(
    replicas: list[LiveServer], same_replica: bool
) -> None:
    cluster = Cluster(replicas)

    @settings(max_examples=25, suppress_health_check=list(HealthCheck))
    @given(OPS)
    def check(ops: list[tuple[str, int, int]]) -> None:
        bad = violations(interleave(cluster, ops), same_replica)
        assert not bad, bad

    try:
        check()
    finally:
        for client in cluster.clients:
            client.close()
        for ranker in cluster.rankers:
            ranker.close()
