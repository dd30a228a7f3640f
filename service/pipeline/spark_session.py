"""The Spark session of the pipeline's jobs and tests: local, on loopback, quiet.

Left alone, Spark binds its driver to whatever interface the host name resolves to
(on a machine with two, the other one) and starts a web UI on port 4040: every
setting here keeps a local session on 127.0.0.1 with nothing listening elsewhere.
A `spark-submit` to a cluster builds its own session (the master and addresses
come from spark-submit): `session()` then only adds the application's settings.
"""

from __future__ import annotations

import os
import sys
from typing import Any

LOOPBACK = "127.0.0.1"


def session(master: str | None = "local[*]", app: str = "livefeat-pipeline", **conf: Any) -> Any:
    """A SparkSession (this process's active one, unchanged, if there is one). `master` None: the one spark-submit
    gives. Extra `conf` are Spark settings (dots as in Spark: pass a dict with **)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:  # one session per process: keep its settings
        return active
    builder = SparkSession.builder.appName(app)
    settings: dict[str, Any] = {
        "spark.sql.session.timeZone": "UTC",  # dates of partitions and windows are UTC
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Small jobs: 200 shuffle partitions cost more in task start-up than they save.
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
    }
    if master is not None:
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
        # Local workers run this interpreter (this venv's packages), not the first python3.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(master)
        settings |= {
            "spark.driver.host": LOOPBACK,
            "spark.driver.bindAddress": LOOPBACK,
        }
    for key, value in (settings | conf).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
