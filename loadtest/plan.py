"""What the runner measures: cases (transport x store x candidates), their echo baselines,
durations, repetitions and concurrencies, and the order of the runs."""

from __future__ import annotations

import argparse
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from loadtest import prepare

TRANSPORTS = {"http": "http1", "grpc": "grpc"}  # transport -> client protocol
STORES = ("embedded", "redis", "cold", "python")
"""embedded: L1 + RocksDB, no Redis; redis: Redis + L1 (warm); cold: Redis, L1 off;
python: embedded with the per-row loops in Python (LIVEFEAT_PURE_PYTHON=1, service/native.py),
the baseline of the compiled hot path."""
CASE_CHOICES = [f"{t}-{s}-{n}" for t in TRANSPORTS for s in STORES for n in (100, 500)]
FULL_CASES = [
    "grpc-embedded-100",
    "grpc-redis-100",
    "grpc-cold-100",
    "http-embedded-100",
    "http-embedded-500",
]
QUICK_CASES = ["grpc-embedded-100", "grpc-cold-100", "http-embedded-100"]


@dataclass(frozen=True)
class Case:
    """A target server, a pre-encoded request list and a client protocol."""

    name: str
    kind: str  # "livefeat" or "echo"
    transport: str  # "http" or "grpc"
    store: str | None  # one of STORES; None for an echo server
    candidates: int
    server: str
    requests: str
    client: str
    baseline: str | None = None
    """The echo case this one is compared with; None for an echo case."""


def livefeat_case(spec: str) -> Case:
    """A livefeat case from "transport-store-candidates", e.g. "grpc-cold-100"."""
    transport, store, n = spec.split("-")
    if transport not in TRANSPORTS or store not in STORES or n not in ("100", "500"):
        raise ValueError(f"not a case: {spec!r} (transport-store-candidates)")
    return Case(
        f"livefeat-{spec}",
        "livefeat",
        transport,
        store,
        int(n),
        f"livefeat-{store}",
        f"bundle-{n}",
        TRANSPORTS[transport],
        baseline=f"echo-{transport}-{n}",
    )


def echo_case(transport: str, n: int) -> Case:
    """The bare echo baseline of a transport, sized for n candidates."""
    name = f"echo-{transport}-{n}"
    return Case(name, "echo", transport, None, n, name, f"bundle-{n}", TRANSPORTS[transport])


@dataclass
class Plan:
    """What to run: durations, repetitions, concurrencies, cases; the request sets."""

    quick: bool = False
    duration_s: float = 20.0
    warmup_s: float = 3.0
    repetitions: int = 3
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    n_requests: int = 5000
    grpc_channels: str = "per-slot"
    grpc_deadline_s: float | None = 1.0
    redis_rows: str = "all"
    redis_memory: bool = True
    cases: dict[str, Case] = field(default_factory=dict)
    _requests: dict[int, list[prepare.Request]] = field(default_factory=dict, repr=False)

    def add(self, case: Case) -> None:
        """Add a livefeat case and (first, once) its echo baseline."""
        if case.baseline and case.baseline not in self.cases:
            self.cases[case.baseline] = echo_case(case.transport, case.candidates)
        self.cases[case.name] = case

    @property
    def stores(self) -> list[str]:
        return [s for s in STORES if any(c.store == s for c in self.cases.values())]

    def candidates(self, stores: Collection[str | None] | None = None) -> list[int]:
        """Candidate counts of the cases (only livefeat cases of `stores`, if given)."""
        cases = self.cases.values()
        return sorted({c.candidates for c in cases if stores is None or c.store in stores})

    def requests(self, n_candidates: int) -> list[prepare.Request]:
        """The request set of n candidates (generated once; seed = n)."""
        if n_candidates not in self._requests:
            self._requests[n_candidates] = prepare.make_requests(
                n_candidates, seed=n_candidates, count=self.n_requests
            )
        return self._requests[n_candidates]

    def groups(self) -> list[list[Case]]:
        """Each baseline with the cases compared with it."""
        return [
            [base, *(c for c in self.cases.values() if c.baseline == base.name)]
            for base in self.cases.values()
            if base.kind == "echo"
        ]

    def schedule(self) -> Iterator[tuple[int, int, Case]]:
        """(repetition, concurrency, case): each group together, its order rotating."""
        for rep in range(self.repetitions):
            for conc in self.concurrency:
                for group in self.groups():
                    k = rep % len(group)
                    for case in group[k:] + group[:k]:
                        yield rep, conc, case

    def describe(self) -> dict[str, Any]:
        """The plan as run, for the report."""
        return {
            "quick": self.quick,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "repetitions": self.repetitions,
            "concurrency": self.concurrency,
            "requests_per_set": self.n_requests,
            "request_sets": {
                f"bundle-{n}": {"candidates": n, "seed": n} for n in self.candidates()
            },
            "workload": {
                "n_users": prepare.N_USERS,
                "n_rooms": prepare.N_ROOMS,
                "bundle": prepare.BUNDLE,
            },
            "grpc_client": {
                "channels": self.grpc_channels,
                "deadline_s": self.grpc_deadline_s,
                "serialization": "none: pre-serialized requests, response bytes",
            },
            "redis_rows": self.redis_rows,
            "percentiles": "nearest rank, in ms, over every request completed in the window",
            "median": "per figure, over repetitions",
            "order": "per repetition and concurrency: each baseline with its cases, the order "
            "rotating by one each repetition",
        }


def plan_from(args: argparse.Namespace) -> Plan:
    """The plan of the command line's flags (see loadtest.bench)."""
    quick = args.quick
    plan = Plan(
        quick=quick,
        duration_s=args.duration or (3.0 if quick else 20.0),
        # The same warm-up as a full run: a window then starts on a warm L1 in both.
        warmup_s=args.warmup if args.warmup is not None else 3.0,
        repetitions=args.repetitions or (1 if quick else 3),
        concurrency=args.concurrency or ([1, 8] if quick else [1, 8, 32]),
        n_requests=args.requests or (2000 if quick else 5000),
        grpc_channels=args.grpc_channels,
        grpc_deadline_s=args.grpc_deadline or None,
        redis_rows=args.redis_rows or ("requested" if quick else "all"),
        redis_memory=args.redis_memory if args.redis_memory is not None else not quick,
    )
    for spec in args.cases or (QUICK_CASES if quick else FULL_CASES):
        case = livefeat_case(spec)
        if not args.candidates or case.candidates in args.candidates:
            plan.add(case)
    if not plan.cases:
        raise SystemExit("bench: no case left to run (see --cases and --candidates)")
    return plan
