"""Locust users for livefeat: rankers over HTTP and gRPC, a stream-job writer, a step-load shape.

    make loadtest        # starts the demo service if needed; see loadtest/README.md ("locust")
    .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 \\
        --grpc-target 127.0.0.1:50051 --headless --csv loadtest/results/locust/livefeat

Users (all in one run by default; name classes on the command line to pick some):

- ``BundleHttpUser``: ``POST /v1/bundle`` (FastHttpUser).
- ``BundleGrpcUser``: ``GetBundle`` on a gevent-friendly sync channel (loadtest/locust_grpc.py).
- ``RoomWriter``: one user (``fixed_count``) pushing ``room_stats`` rows (``POST /v1/push``) at
  ``--push-rps`` pushes per second, ``--push-rows`` rooms each, stamped with the current time.

Reads are the standard workload (docs/benchmark-workload.md): a uniform user, 100 Zipf(1.1) rooms,
bundle ``live_ranker``, pre-generated with ``service.workload.RequestGenerator`` and encoded once
before the test. Each reader either runs a closed loop (``--user-rps 0``) or paces itself to
``--user-rps`` requests per second.

``StepLoadShape`` raises the readers step by step (``--step-users``), after a warm-up at the
first step's load (``--warmup-seconds``), and measures the read p99 of each step after a
settling time; it stops at the first step whose p99 passes ``--p99-budget-ms``
(the knee) or after the last step, and writes the result to ``<csv prefix>_knee.json`` (or
``--knee-file``). Every option also reads its ``LIVEFEAT_*`` environment variable.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any

import grpc
import orjson
from locust import FastHttpUser, LoadTestShape, constant, constant_throughput, events, task
from locust.env import Environment

from loadtest import locust_plan as plan
from loadtest.locust_grpc import GrpcUser

log = logging.getLogger("livefeat.locust")
JSON_HEADERS = {"Content-Type": "application/json"}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("livefeat")
    group.add_argument("--grpc-target", default="127.0.0.1:50051", env_var="LIVEFEAT_GRPC_TARGET",
                       help="host:port of livefeat's gRPC server")  # fmt: skip
    group.add_argument("--requests", type=int, default=5000, env_var="LIVEFEAT_LOCUST_REQUESTS",
                       help="ranker requests pre-generated per process (cycled)")  # fmt: skip
    group.add_argument("--candidates", type=int, default=100, env_var="LIVEFEAT_CANDIDATES",
                       help="candidate rooms per request")  # fmt: skip
    group.add_argument("--workload-seed", type=int, default=0, env_var="LIVEFEAT_LOCUST_SEED",
                       help="seed of the request generator")  # fmt: skip
    group.add_argument("--user-rps", type=float, default=0.0, env_var="LIVEFEAT_USER_RPS",
                       help="requests per second per reader; 0: closed loop, no wait")  # fmt: skip
    group.add_argument("--grpc-timeout-s", type=float, default=1.0,
                       env_var="LIVEFEAT_GRPC_TIMEOUT_S", help="deadline of each gRPC call")  # fmt: skip
    group.add_argument("--push-rps", type=float, default=2.0, env_var="LIVEFEAT_PUSH_RPS",
                       help="pushes per second of the writer; 0: no pushes")  # fmt: skip
    group.add_argument("--push-rows", type=int, default=100, env_var="LIVEFEAT_PUSH_ROWS",
                       help="room rows per push")  # fmt: skip
    group.add_argument("--step-users", default="1,2,4,6,8", env_var="LIVEFEAT_STEP_USERS",
                       help="reader users per step, increasing (writers come on top)")  # fmt: skip
    group.add_argument("--step-seconds", type=float, default=10.0, env_var="LIVEFEAT_STEP_S",
                       help="length of each step")  # fmt: skip
    group.add_argument("--step-settle-seconds", type=float, default=3.0,
                       env_var="LIVEFEAT_STEP_SETTLE_S",
                       help="not measured at the start of each step")  # fmt: skip
    group.add_argument("--warmup-seconds", type=float, default=10.0, env_var="LIVEFEAT_WARMUP_S",
                       help="at the first step's load, not measured, before the first step")  # fmt: skip
    group.add_argument("--p99-budget-ms", type=float, default=50.0,
                       env_var="LIVEFEAT_P99_BUDGET_MS",
                       help="read p99 budget; the first step over it is the knee")  # fmt: skip
    group.add_argument("--knee-file", default="", env_var="LIVEFEAT_KNEE_FILE",
                       help="where to write the knee JSON (default: <csv prefix>_knee.json)")  # fmt: skip


# Encoded once per process, before the test (events.init), shared by all users.
HTTP_BODIES: list[bytes] = []
GRPC_BODIES: list[bytes] = []


@events.init.add_listener
def _pregenerate(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:  # used as a library without the command line
        return
    started = time.perf_counter()
    requests = plan.bundle_requests(opts.requests, opts.workload_seed, opts.candidates)
    HTTP_BODIES[:] = plan.http_bundle_bodies(requests)
    GRPC_BODIES[:] = plan.grpc_bundle_bodies(requests)
    log.info("%d ranker requests (%d candidates) encoded in %.2f s", len(requests),
             opts.candidates, time.perf_counter() - started)  # fmt: skip


def _pace(user: Any) -> float:
    """Wait time of a reader: none (closed loop), or paced to --user-rps."""
    rps = user.environment.parsed_options.user_rps
    if rps <= 0:
        return 0.0
    if not hasattr(user, "_pacer"):
        user._pacer = constant_throughput(rps)
    return float(user._pacer(user))


class _Cycle:
    """Requests in order from a random start, so that users do not move in lockstep."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies, self.i = bodies, random.randrange(len(bodies))

    def next(self) -> bytes:
        self.i = (self.i + 1) % len(self.bodies)
        return self.bodies[self.i]


class BundleHttpUser(FastHttpUser):
    """A ranker calling ``POST /v1/bundle``."""

    weight = 1
    wait_time = _pace
    network_timeout = 5.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        self.bodies = _Cycle(HTTP_BODIES)

    @task
    def bundle(self) -> None:
        body: Any = self.bodies.next()  # bytes are sent as is (the stub says str | dict)
        self.client.post(plan.BUNDLE_PATH, data=body, headers=JSON_HEADERS, name=plan.BUNDLE_PATH)


class BundleGrpcUser(GrpcUser):
    """A ranker calling ``GetBundle``."""

    weight = 1
    wait_time = _pace

    def grpc_target(self) -> str:
        return str(self.environment.parsed_options.grpc_target)

    def on_start(self) -> None:
        self.bodies = _Cycle(GRPC_BODIES)
        self.get_bundle = self.unary(plan.GRPC_GET_BUNDLE)
        self.timeout_s = self.environment.parsed_options.grpc_timeout_s

    @task
    def bundle(self) -> None:
        with contextlib.suppress(grpc.RpcError):  # the interceptor reported it as a failure
            self.get_bundle(self.bodies.next(), timeout=self.timeout_s)


class RoomWriter(FastHttpUser):
    """A stream job pushing room updates at ``--push-rps`` (``POST /v1/push``)."""

    fixed_count = 1
    network_timeout = 10.0
    connection_timeout = 5.0

    def wait_time(self) -> float:
        rps = self.environment.parsed_options.push_rps
        if rps <= 0:
            return float(constant(3600)(self))
        if not hasattr(self, "_pacer"):
            self._pacer = constant_throughput(rps)
        return float(self._pacer(self))

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.updates = plan.RoomUpdates(opts.push_rows, seed=random.randrange(1 << 30))

    @task
    def push(self) -> None:
        if self.environment.parsed_options.push_rps <= 0:
            return
        body: Any = self.updates.body(time.time_ns() // 1_000_000)
        with self.client.post(
            plan.PUSH_PATH, data=body, headers=JSON_HEADERS, name=plan.PUSH_PATH,
            catch_response=True,
        ) as response:  # fmt: skip
            if response.status_code == 200:
                got = orjson.loads(response.content or b"{}")
                if got.get("written", 0) + got.get("ignored", 0) != self.updates.rows:
                    response.failure(f"push answered {got}, expected {self.updates.rows} rows")


# --------------------------------------------------------------------------- the step shape


def snapshot(environment: Environment) -> plan.Snapshot:
    """Locust's cumulative counters now (the master's, with --processes)."""
    stats = environment.stats
    reads = [e for e in stats.entries.values() if e.name in plan.READ_NAMES]
    return plan.Snapshot(
        t=time.monotonic(),
        read_times=plan.merge_histograms(e.response_times for e in reads),
        reads=sum(e.num_requests for e in reads),
        requests=stats.total.num_requests,
        failures=stats.total.num_failures,
    )


class StepLoadShape(LoadTestShape):
    """Readers step up until the read p99 passes the budget (the knee), then the test stops."""

    def __init__(self) -> None:
        super().__init__()
        self.search: plan.KneeSearch | None = None
        self.knee_file: Path | None = None
        self._written = 0

    def _start(self) -> plan.KneeSearch:
        assert self.runner is not None
        env = self.runner.environment
        opts: Any = env.parsed_options
        writers = sum(getattr(c, "fixed_count", 0) for c in env.user_classes)
        step_plan = plan.StepPlan(
            users=plan.parse_steps(opts.step_users),
            step_s=opts.step_seconds,
            settle_s=opts.step_settle_seconds,
            fixed_users=writers,
            warmup_s=opts.warmup_seconds,
        )
        if opts.knee_file:
            self.knee_file = Path(opts.knee_file)
        elif opts.csv_prefix:
            self.knee_file = Path(f"{opts.csv_prefix}_knee.json")
        log.info("step load: %g s warm-up, then readers %s (+%d fixed), %g s per step, "
                 "p99 budget %g ms, knee -> %s", step_plan.warmup_s, list(step_plan.users),
                 writers, step_plan.step_s, opts.p99_budget_ms, self.knee_file)  # fmt: skip
        return plan.KneeSearch(step_plan, budget_ms=opts.p99_budget_ms)

    def tick(self) -> tuple[int, float] | None:
        if self.search is None:
            self.search = self._start()
        assert self.runner is not None
        target = self.search.tick(self.get_run_time(), snapshot(self.runner.environment))
        if len(self.search.results) != self._written or target is None:
            self._record()
        return target

    def finish(self) -> None:
        """At quitting: measure a step cut short, record and print the result."""
        if self.search is None or self.runner is None:
            return
        self.search.finish(snapshot(self.runner.environment))
        self._record()
        print(f"livefeat step load: {self.search.summary()}", flush=True)

    def _record(self) -> None:
        assert self.search is not None
        new, self._written = self.search.results[self._written :], len(self.search.results)
        for r in new:
            log.info("step %d: %d readers, %.0f req/s (reads %.0f/s), read p50 %s ms, p99 %s ms%s",
                     r.step, r.users, r.rps, r.read_rps, r.p50_ms, r.p99_ms,
                     " OVER BUDGET" if r.over_budget else "")  # fmt: skip
        if self.knee_file is not None:
            self.knee_file.parent.mkdir(parents=True, exist_ok=True)
            self.knee_file.write_bytes(
                orjson.dumps(self.search.report(), option=orjson.OPT_INDENT_2) + b"\n"
            )


@events.quitting.add_listener
def _knee_at_exit(environment: Environment, **_: Any) -> None:
    shape = environment.shape_class
    if isinstance(shape, StepLoadShape):
        shape.finish()
