"""Every Prometheus metric livefeat exports, declared once, here.

Recording happens at the front-end edge (requests) and in the tiered store
(tier calls). Labels never carry an id. See docs/metrics.md for the catalogue.

With several workers (service/workers/) the supervisor sets PROMETHEUS_MULTIPROC_DIR
before any worker imports this: each worker writes its values to files there, and
`scrape` on any worker adds up every worker's (prometheus_client's multiprocess
mode). A gauge says how its workers' values combine (`multiprocess_mode`; "live":
only running workers count); a single process ignores it.

What a request updates goes through tallies (`tally`, below): plain sums kept on the
serving loop, folded into these metrics by `flush`. Every scrape flushes first, and the
server flushes every FLUSH_EVERY_S and when it stops (docs/metrics.md, "Freshness").
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS_S = (
    0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip

REQUEST_SECONDS = Histogram(
    "livefeat_request_duration_seconds",
    "Time to answer a request, by front end, route (or RPC) and status code.",
    ["transport", "route", "code"],
    buckets=_LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
REQUESTS = Counter(
    "livefeat_requests_total",
    "Requests answered, by front end, route (or RPC) and status code.",
    ["transport", "route", "code"],
    registry=REGISTRY,
)
TIER_KEYS = Counter(
    "livefeat_tier_keys_total",
    "Keys asked of a storage tier, by tier and result (hit, miss, error).",
    ["tier", "result"],
    registry=REGISTRY,
)
TIER_SECONDS = Histogram(
    "livefeat_tier_operation_duration_seconds",
    "Time of one batched tier call, by tier and operation (get, put).",
    ["tier", "op"],
    buckets=_LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
TIER_ERRORS = Counter(
    "livefeat_tier_errors_total",
    "Failed tier calls, by tier, operation and error kind.",
    ["tier", "op", "kind"],
    registry=REGISTRY,
)
TIER_CIRCUIT_OPEN = Gauge(
    "livefeat_tier_circuit_open",
    "1 while a tier's circuit breaker is open (calls skipped after repeated failures).",
    ["tier"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
WRITE_BEHIND_QUEUED = Gauge(
    "livefeat_write_behind_queued_rows",
    "Rows waiting to be written in the background into a tier (fills).",
    ["tier"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
WRITE_BEHIND_DROPPED = Counter(
    "livefeat_write_behind_dropped_total",
    "Background fill rows dropped because the tier's queue was full.",
    ["tier"],
    registry=REGISTRY,
)
CHANGE_FEED_CONNECTED = Gauge(
    "livefeat_change_feed_connected",
    "1 while this replica is subscribed to change notifications.",
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
CHANGE_FEED_KEYS = Counter(
    "livefeat_change_feed_keys_total",
    "Keys in change notifications, by direction (published, received).",
    ["direction"],
    registry=REGISTRY,
)
CHANGE_FEED_ACK_TIMEOUTS = Counter(
    "livefeat_change_feed_ack_timeouts_total",
    "Pushes acknowledged before every subscribed replica confirmed it had applied them "
    "(a replica paused or cut off: it may serve the older value until its L1 entry expires).",
    registry=REGISTRY,
)
CHANGE_FEED_DELAY_SECONDS = Histogram(
    "livefeat_change_feed_delay_seconds",
    "From a notification's publication by one replica to its receipt by this one.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
    registry=REGISTRY,
)
L1_ROWS = Gauge(
    "livefeat_l1_rows", "Rows held in the L1 cache (with workers: every worker's, summed).",
    multiprocess_mode="livesum", registry=REGISTRY,
)  # fmt: skip
L1_EVICTIONS = Counter(
    "livefeat_l1_evictions_total", "Rows evicted from L1 to respect its size bound.",
    registry=REGISTRY,
)  # fmt: skip
SERVED_ROWS = Counter(
    "livefeat_served_rows_total",
    "Rows served, by view and status (FOUND, STALE, DEFAULTED, UNAVAILABLE).",
    ["view", "status"],
    registry=REGISTRY,
)
WRITTEN_ROWS = Counter(
    "livefeat_written_rows_total",
    "Rows offered to the write path, by view, source (push, load) and outcome "
    "(written, ignored: older than or as old as what is stored).",
    ["view", "source", "outcome"],
    registry=REGISTRY,
)
VALUE_AGE_SAMPLE_EVERY = 16
VALUE_AGE_SECONDS = Histogram(
    "livefeat_served_value_age_seconds",
    "Age (now - event time) of values served, by view. Sampled: the rows of one "
    f"request in {VALUE_AGE_SAMPLE_EVERY}.",
    ["view"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600, 14400, 86400, 604800),
    registry=REGISTRY,
)
NEWEST_EVENT_SECONDS = Gauge(
    "livefeat_newest_event_timestamp_seconds",
    "Newest event time (Unix seconds) accepted by this process's write path, by view: "
    "time() minus this is how long ago a writer last sent something new.",
    ["view"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "livefeat_request_batch_size",
    "Entities asked for in one request, by route.",
    ["route"],
    buckets=(1, 10, 50, 100, 200, 500, 1000, 2000),
    registry=REGISTRY,
)
# The last `livefeat report` (report.json in LIVEFEAT_REPORT_DIR), re-read when
# scraped if the file changed (service/http/console.py).
REPORT_WORST_PSI = Gauge(
    "livefeat_report_worst_psi",
    "Largest PSI (offline against served values) over a view's features in the last report.",
    ["view"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
REPORT_FLAGGED_FEATURES = Gauge(
    "livefeat_report_flagged_features",
    "Features of a view over a skew threshold (PSI, KS or mismatch) in the last report.",
    ["view"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
REPORT_GENERATED_SECONDS = Gauge(
    "livefeat_report_generated_timestamp_seconds",
    "When the last report was generated (Unix seconds); 0 without a report.",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)

# Kafka ingestion (`livefeat consume`, service/kafka/).
KAFKA_MESSAGES = Counter(
    "livefeat_kafka_messages_total",
    "Kafka messages handled by a consumer, by topic and outcome (consumed: read; written; "
    "ignored: not newer than what is stored or an earlier message of its entity; bad: "
    "refused, see livefeat_kafka_bad_messages_total).",
    ["topic", "outcome"],
    registry=REGISTRY,
)
KAFKA_BAD_MESSAGES = Counter(
    "livefeat_kafka_bad_messages_total",
    "Kafka messages refused, by topic and reason (not_json, bad_key, bad_value, ...).",
    ["topic", "reason"],
    registry=REGISTRY,
)
KAFKA_DEAD_LETTERED = Counter(
    "livefeat_kafka_dead_lettered_total",
    "Refused messages sent to the dead-letter topic, by source topic.",
    ["topic"],
    registry=REGISTRY,
)
KAFKA_LAG = Gauge(
    "livefeat_kafka_consumer_lag_messages",
    "Messages in a partition after the last one this consumer made durable and committed "
    "(high watermark - committed position), by topic and partition; only partitions "
    "this consumer holds.",
    ["topic", "partition"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
KAFKA_BATCH_SECONDS = Histogram(
    "livefeat_kafka_batch_duration_seconds",
    "Time to handle one batch of messages: check, write (after the batch before), dead-letter, commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
KAFKA_BATCH_MESSAGES = Histogram(
    "livefeat_kafka_batch_messages",
    "Messages in one batch.",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000),
    registry=REGISTRY,
)
KAFKA_FAILURES = Counter(
    "livefeat_kafka_failures_total",
    "Failed steps of the consumer loop, by step (write: the store refused a batch, retried; "
    "commit: a commit failed, the batch will be read again; dead_letter: a send failed, retried).",
    ["step"],
    registry=REGISTRY,
)

# Served-feature logging (`livefeat serve --log-served-*`, service/served_log.py).
SERVED_LOG_RECORDS = Counter(
    "livefeat_served_log_records_total",
    "Sampled bundle answers, by outcome (sent: handed to the sink; dropped: the queue was "
    "full, serving did not wait; failed: the sink refused it).",
    ["outcome"],
    registry=REGISTRY,
)
SERVED_LOG_QUEUED = Gauge(
    "livefeat_served_log_queued_records",
    "Sampled bundle answers waiting to be encoded and sent.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
REFUSED = Counter(
    "livefeat_requests_refused_total",
    "Requests refused at once, without any work, because the process had as many "
    "requests in flight as its bound (livefeat_requests_in_flight_limit), by front end.",
    ["transport"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "livefeat_requests_in_flight",
    "Requests (reads and pushes, both front ends) this process is working on.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
IN_FLIGHT_LIMIT = Gauge(
    "livefeat_requests_in_flight_limit",
    "The bound on requests in flight in force now (adaptive: between LIVEFEAT_MIN_IN_FLIGHT "
    "and LIVEFEAT_MAX_IN_FLIGHT; summed over a pod's workers).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
WORKER_RESTARTS = Counter(
    "livefeat_worker_restarts_total",
    "Worker processes started again by the supervisor after one exited (counted by the "
    "new worker at its start).",
    registry=REGISTRY,
)
WORKER_KILLS = Counter(
    "livefeat_worker_kills_total",
    "Workers killed by the RocksDB primary (worker 0) because they did not apply a write "
    "within the bound (they could have served the older value).",
    registry=REGISTRY,
)
WORKER_SYNC_SECONDS = Histogram(
    "livefeat_worker_sync_duration_seconds",
    "Embedded mode with workers: from a write on the primary until every other worker has "
    "caught up and dropped the written keys from L1.",
    buckets=_LATENCY_BUCKETS_S,
    registry=REGISTRY,
)


# --------------------------------------------------------------------------- tallies
# prometheus_client takes a lock for every update: a counter's `inc` cost about 1 us and
# a histogram's `observe` 2-3 us (a Python loop over its buckets) on the 2-core machine,
# and a bundle made a dozen or more, about 5% of its CPU (docs/benchmarks.md). The
# children a request updates are wrapped in tallies instead: the same `inc`, `dec` and
# `observe`, adding to plain numbers, which `flush` adds to the children. A tally is
# updated and flushed on one thread, the serving loop's (or the one thread of a command).

FLUSH_EVERY_S = 1.0
"""How often the server flushes: with workers, another worker's scrape reads what this
one has flushed, so a scrape may miss up to this much of a worker's last updates."""


class CounterTally:
    """`inc` of a Counter (or Gauge) child, summed until `flush`."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending: float = 0

    def inc(self, amount: float = 1) -> None:
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0
            self.child.inc(amount)


class GaugeTally(CounterTally):
    """`inc` and `dec` of a Gauge child, summed until `flush`; `set` at once."""

    __slots__ = ()

    def dec(self, amount: float = 1) -> None:
        self.pending -= amount

    def set(self, value: float) -> None:
        self.pending = 0
        self.child.set(value)


class HistogramTally:
    """`observe` of a Histogram child: counts per bucket and a sum, until `flush`."""

    __slots__ = ("bounds", "child", "counts", "observed", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        # prometheus_client's own bounds (ending with +Inf) and, in `flush`, its bucket
        # and sum values: it has no public call that adds many observations at once.
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.observed = False

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is >= amount: where prometheus_client counts it.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount
        self.observed = True

    def flush(self) -> None:
        if not self.observed:
            return
        counts, self.counts = self.counts, [0] * len(self.bounds)
        total, self.total, self.observed = self.total, 0.0, False
        buckets = self.child._buckets
        for i, count in enumerate(counts):
            if count:
                buckets[i].inc(count)
        self.child._sum.inc(total)


Tally = CounterTally | HistogramTally
_TALLIES: dict[int, Tally] = {}  # id(child) -> its tally (the child is kept alive by it)


def tally(child: Any) -> Any:
    """The tally of a metric child (`Metric.labels(...)`, or a metric without labels):
    one per child, however often asked."""
    found = _TALLIES.get(id(child))
    if found is None:
        if isinstance(child, Histogram):
            found = HistogramTally(child)
        elif isinstance(child, Gauge):
            found = GaugeTally(child)
        elif isinstance(child, Counter):
            found = CounterTally(child)
        else:
            raise TypeError(f"no tally for {child!r}")
        _TALLIES[id(child)] = found
    return found


def flush() -> None:
    """Add every tally's updates since the last flush to its metric."""
    for t in list(_TALLIES.values()):
        t.flush()


async def flush_every(interval_s: float = FLUSH_EVERY_S) -> None:
    """`flush` every `interval_s`, and once more when cancelled."""
    try:
        while True:
            await asyncio.sleep(interval_s)
            flush()
    finally:
        flush()


def scrape() -> bytes:
    """The Prometheus text of this process, or of every worker of the pod (multiprocess)."""
    flush()
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return generate_latest(REGISTRY)
    pod = CollectorRegistry()
    MultiProcessCollector(pod, path)
    return generate_latest(pod)
