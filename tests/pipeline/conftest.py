"""Fixtures of the pipeline tests: one local Spark session per test session, on loopback,
and a tiny event log (EventSpec "tiny") generated once.

The session starts in about 10 s (a JVM); every test that needs Spark shares it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.core.registry import Registry, load_registry
from service.pipeline.events import EventSpec, write_events

END_MS = 1_795_000_000_000  # 2026-11-18 09:06:40 UTC: fixed, so the log is the same every run
REGISTRY = Path(__file__).resolve().parents[2] / "service" / "demo_registry.yaml"


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local[2] SparkSession bound to 127.0.0.1; stopped (its JVM too) at the end."""
    from pyspark.errors import PySparkRuntimeError

    from service.pipeline.spark_session import session

    # Two shuffle partitions for two cores: tiny jobs spend their time starting tasks.
    conf = {"spark.sql.shuffle.partitions": "2"}
    try:
        spark = session("local[2]", "livefeat-tests", **conf)
    except PySparkRuntimeError as exc:
        # Once in CI (2026-12-06) the JVM exited before giving its port, on a machine
        # shared with other work, and every Spark test failed with it; alone they passed.
        # Starting the JVM is not what these tests test: one more try, then fail.
        if "JAVA_GATEWAY_EXITED" not in str(exc):
            raise
        time.sleep(2)
        spark = session("local[2]", "livefeat-tests", **conf)
    yield spark
    spark.stop()


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The demo registry."""
    return load_registry(REGISTRY)


@pytest.fixture(scope="session")
def tiny_spec() -> EventSpec:
    return EventSpec.sized("tiny", END_MS)


@pytest.fixture(scope="session")
def events(tiny_spec: EventSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny event log (about 20,000 events over 30 days), written once."""
    out = tmp_path_factory.mktemp("events") / "events"
    write_events(tiny_spec, out)
    return out


@pytest.fixture(scope="session")
def live_cutoff_ms(events: Path) -> int:
    """A cut-off halfway through room 1's last stream (room 1 is the busiest), so that
    the minute windows, viewers and retention have something to count."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    rooms = ds.dataset(events, partitioning="hive").to_table(filter=pc.field("room_id") == 1)
    times = rooms["event_time"].cast("int64")
    started = pc.max(pc.filter(times, pc.equal(rooms["event_type"], "room_start"))).as_py()
    ends = pc.filter(times, pc.equal(rooms["event_type"], "room_end")).to_pylist()
    ended = min([t for t in ends if t > started], default=END_MS)
    return int(started + (ended - started) // 2)
