"""Settings: one frozen model, read once at start from flags and LIVEFEAT_* variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_REGISTRY = Path(__file__).parent / "demo_registry.yaml"


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
    l1_ttl_s: float = Field(default=5.0, gt=0)
    # Keys expected in the user x room views; 0 turns the presence filter off.
    presence_capacity: int = Field(default=2_000_000, ge=0)
    rocksdb_block_cache_mb: int = Field(default=256, ge=8)
    rocksdb_threads: int = Field(default=2, ge=1, le=64)
    max_ids: int = Field(default=2000, ge=1)
    max_push_rows: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=8 << 20, ge=1024)
    # `livefeat load` into Redis: at most this many rows/s (0: no limit). Unset: no
    # limit unless serving replicas subscribe to this Redis's change feed, then
    # load_serving_rows_per_s, so that a load does not hurt their latency.
    load_max_rows_per_s: float | None = Field(default=None, ge=0)
    load_serving_rows_per_s: float = Field(default=10_000, gt=0)
    log_level: str = "info"
