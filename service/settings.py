"""Settings: one frozen model, read once at start from flags and LIVEFEAT_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_REGISTRY = Path(__file__).parent / "demo_registry.yaml"
# L1's TTL where LIVEFEAT_L1_TTL_S is not set. With Redis it is the longest a replica
# serves an older value when a change notification is lost. Embedded, no
# notification can be lost: every write reaches every worker's L1 before it is
# acknowledged (service/workers/peers.py), and a restarted worker 0 clears them all;
# there the TTL only bounds what an unknown bug could cost, and a longer one spares
# re-reading each row from RocksDB every few seconds (docs/benchmarks.md, tenth session:
# 14-19% more HTTP throughput, 10-22% more gRPC).
L1_TTL_S_REDIS = 5.0
L1_TTL_S_EMBEDDED = 60.0


class Settings(BaseSettings):
    """Every setting of a livefeat process; units in the names."""

    model_config = SettingsConfigDict(env_prefix="LIVEFEAT_", frozen=True, extra="forbid")

    registry: Path = DEMO_REGISTRY
    data_dir: Path = Path("data/livefeat")
    redis_url: str | None = None  # redis://host:port/db, or redis+cluster://host:port
    redis_socket_timeout_s: float = Field(default=0.1, gt=0)  # reads: fail over to RocksDB fast
    redis_write_timeout_s: float = Field(default=1.0, gt=0)  # pushes wait longer
    redis_connect_timeout_s: float = Field(default=0.2, gt=0)
    redis_pool_size: int = Field(default=32, ge=1)
    # A push waits at most this long for every replica to confirm it has dropped the
    # pushed keys from its L1 (service/store/feed.py, Acks).
    change_ack_timeout_s: float = Field(default=0.25, ge=0)
    # Worker processes of `livefeat serve` (service/workers/); None: the CPUs this
    # process may use (cgroup quota and affinity, service/workers/cpus.py).
    workers: int | None = Field(default=None, ge=1, le=256)
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    l1_max_rows: int = Field(default=500_000, ge=0)
    # How long an L1 entry lives (docs/design.md, "Freshness: what a read may return");
    # None: the mode's default, `l1_ttl`.
    l1_ttl_s: float | None = Field(default=None, gt=0)
    # Keys expected in the user x room views; 0 turns the presence filter off.
    presence_capacity: int = Field(default=2_000_000, ge=0)
    rocksdb_block_cache_mb: int = Field(default=256, ge=8)
    rocksdb_threads: int = Field(default=2, ge=1, le=64)
    max_ids: int = Field(default=2000, ge=1)
    max_push_rows: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=8 << 20, ge=1024)
    # FastAPI's own OpenTelemetry spans, metrics and logs per HTTP request, where an
    # OpenTelemetry SDK is configured. Off: its per-request check alone costs about
    # 3.5 us (docs/operations.md, "Observe"); livefeat's metrics are Prometheus.
    http_telemetry: bool = False
    # HTTP read budget per request (X-Livefeat-Timeout-Ms overrides it; 0: none). Above
    # the Redis socket timeout, so a stalled Redis still leaves time to read RocksDB.
    http_timeout_s: float = Field(default=0.25, ge=0)
    # Requests one process works on at once (both front ends); more are refused at
    # once (HTTP 429, gRPC RESOURCE_EXHAUSTED). 0: no bound. docs/operations.md.
    max_in_flight: int = Field(default=16, ge=0)
    # "adaptive": the bound follows the latency of admitted requests, between
    # min_in_flight (or max_in_flight if lower) and max_in_flight; "fixed": always
    # max_in_flight. docs/operations.md, "Overload".
    admission: Literal["adaptive", "fixed"] = "adaptive"
    min_in_flight: int = Field(default=2, ge=1)
    overload_retry_after_s: float = Field(default=1.0, gt=0)
    # `livefeat load` into Redis: at most this many rows/s (0: no limit). Unset: no
    # limit unless serving replicas subscribe to this Redis's change feed, then
    # load_serving_rows_per_s, so that a load does not hurt their latency.
    load_max_rows_per_s: float | None = Field(default=None, ge=0)
    load_serving_rows_per_s: float = Field(default=10_000, gt=0)
    log_level: str = "info"
    # `serve`: the directory `livefeat report --out` writes; shown at /ui/report, and
    # its report.json's worst skew exported as metrics. None: no report served.
    report_dir: Path | None = None
    # Kafka (`livefeat consume`, and `serve` publishing served features): HOST:PORT[,...].
    kafka: str | None = None
    kafka_group: str = "livefeat"
    kafka_dead_letter_topic: str | None = None
    # Event times further ahead of the wall clock are refused (dead-lettered): under
    # newest-event-wins one such row would hide every later update of its entity.
    kafka_max_future_s: float = Field(default=300.0, ge=0)
    kafka_batch_max_messages: int = Field(default=20_000, ge=1)
    # A consumer that vanished (SIGKILL, a lost node) holds its partitions this long.
    kafka_session_timeout_s: float = Field(default=10.0, ge=1, le=300)
    metrics_port: int = Field(default=9108, ge=0, le=65535)  # consume: /healthz, /readyz, /metrics
    # Served-feature log (`serve`): a sampled fraction of bundle answers, to a Kafka
    # topic and/or JSON Lines files, through a bounded queue (full: dropped, counted).
    log_served_topic: str | None = None
    log_served_dir: Path | None = None
    log_served_fraction: float = Field(default=0.01, ge=0, le=1)
    log_served_queue: int = Field(default=10_000, ge=1)

    def l1_ttl(self) -> float:
        """L1's TTL: `l1_ttl_s` if set, else the default of the mode (above)."""
        if self.l1_ttl_s is not None:
            return self.l1_ttl_s
        return L1_TTL_S_REDIS if self.redis_url else L1_TTL_S_EMBEDDED
