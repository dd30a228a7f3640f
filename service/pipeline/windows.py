"""Column helpers of the feature jobs: point-in-time scans, windowed aggregations, embeddings.

Every window ends at the cut-off T (ms since the epoch) and is half open on the left:
an event counts for "the last w" when T - w < event_time <= T. Nothing after T is ever
read (`events_until`), which is what makes a job point-in-time correct.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
EMBEDDING_DIM = 32
VIEWER_TYPES = ("impression", "join", "leave", "like", "comment", "gift", "share", "follow")


def _date(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


def ts(ms: int) -> Column:
    """A timestamp literal for `ms` (ms since the epoch)."""
    return F.timestamp_millis(F.lit(ms))


def events_until(events: DataFrame, cutoff_ms: int, span_ms: int | None = None) -> DataFrame:
    """The events with event_time <= cutoff_ms (and > cutoff_ms - span_ms if given).

    The same bounds are put on the `date` partition column, so Spark reads only the
    partitions of the window (its plan shows them as PartitionFilters).
    """
    cond = (F.col("date") <= F.lit(_date(cutoff_ms))) & (F.col("event_time") <= ts(cutoff_ms))
    if span_ms is not None:
        lo = cutoff_ms - span_ms
        cond &= (F.col("date") >= F.lit(_date(lo))) & (F.col("event_time") > ts(lo))
    return events.where(cond)


def within(cutoff_ms: int, span_ms: int, column: str = "event_time") -> Column:
    """True for rows whose `column` (a timestamp) is in the last `span_ms` before the cut-off."""
    return F.col(column) > ts(cutoff_ms - span_ms)


def is_type(*types: str) -> Column:
    """True for events of these types."""
    return F.col("event_type").isin(*types)


def count_if(cond: Column) -> Column:
    """How many rows satisfy `cond` (0 if none), as a long."""
    return F.sum(F.when(cond, 1).otherwise(0)).cast("long")


def sum_if(value: Column | str, cond: Column) -> Column:
    """The sum of `value` over the rows satisfying `cond` (0 if none)."""
    column = F.col(value) if isinstance(value, str) else value
    return F.coalesce(F.sum(F.when(cond, column)), F.lit(0))


def ratio(numerator: Column | str, denominator: Column | str) -> Column:
    """numerator / denominator as a double; 0.0 when the denominator is 0 or null."""
    num = F.col(numerator) if isinstance(numerator, str) else numerator
    den = F.col(denominator) if isinstance(denominator, str) else denominator
    return F.when(den > 0, num.cast("double") / den).otherwise(F.lit(0.0))


def last_seen(column: str) -> Column:
    """The non-null value of `column` on the latest event (ties: the greatest value)."""
    pair = F.struct(F.col("event_time").alias("t"), F.col(column).alias("v"))
    return F.max(F.when(F.col(column).isNotNull(), pair)).getField("v")


def age_ms(cutoff_ms: int, column: Column) -> Column:
    """cutoff_ms minus a timestamp column, in ms."""
    return F.lit(cutoff_ms) - F.unix_millis(column)


# ----------------------------------------------------------------------------- embeddings
# A room's embedding is a random projection of its audience: the watch-time-weighted sum
# of its viewers' base vectors, L2-normalised (rooms with similar audiences point the same
# way: a sketch of the room x user co-watch matrix, as a one-pass factorisation would
# give). A user's embedding is the watch-time-weighted average of the embeddings of the
# rooms they watched, normalised: "averaged item vectors". Base vectors need no state and
# no random generator: component j of user u is sin(u * BASE_A * (j + 1) + BASE_B * j),
# the same in every engine (a reference in SQL or numpy recomputes it exactly).
BASE_A = 12.9898
BASE_B = 78.233


def base_vector(user_id: str = "user_id") -> list[Column]:
    """The EMBEDDING_DIM components of each user's base vector, as double columns."""
    u = F.col(user_id).cast("double")
    return [F.sin(u * (BASE_A * (j + 1)) + BASE_B * j) for j in range(EMBEDDING_DIM)]


def _normalised(df: DataFrame, key: str, name: str) -> DataFrame:
    """(key, name): the vector of df's columns s0..s31 divided by its L2 norm, as
    array<float>; zeros if the norm is 0. The norm is a column of its own, computed once
    per row (inlined into every component, the generated code outgrows the JVM's limit)."""
    parts = [F.col(f"s{j}") for j in range(EMBEDDING_DIM)]
    df = df.withColumn("norm", F.sqrt(sum((p * p for p in parts), F.lit(0.0))))
    norm = F.col("norm")
    vector = F.array(*[F.when(norm > 0, p / norm).otherwise(0.0).cast("float") for p in parts])
    return df.select(key, vector.alias(name))


def room_embeddings(watch: DataFrame) -> DataFrame:
    """(room_id, room_embedding) from (user_id, room_id, w): w the watch seconds of the pair."""
    sums = [F.sum(F.col("w") * b).alias(f"s{j}") for j, b in enumerate(base_vector())]
    return _normalised(watch.groupBy("room_id").agg(*sums), "room_id", "room_embedding")


def user_embeddings(watch: DataFrame, rooms: DataFrame) -> DataFrame:
    """(user_id, user_embedding): the rooms' embeddings averaged, weighted by watch seconds."""
    joined = watch.join(rooms, "room_id")
    sums = [F.sum(F.col("w") * F.col("room_embedding")[j].cast("double")).alias(f"s{j}")
            for j in range(EMBEDDING_DIM)]  # fmt: skip
    return _normalised(joined.groupBy("user_id").agg(*sums), "user_id", "user_embedding")


def pair_watch(events30: DataFrame) -> DataFrame:
    """(user_id, room_id, w): watch seconds per pair over the given (30-day) events, w > 0."""
    leaves = events30.where(is_type("leave"))
    watch = leaves.groupBy("user_id", "room_id").agg(F.sum("watch_s").cast("double").alias("w"))
    return watch.where(F.col("w") > 0)


def fill(df: DataFrame, defaults: dict[str, Any]) -> DataFrame:
    """Nulls (entities a left join found nothing for) replaced by `defaults`."""
    return df.fillna(defaults)
