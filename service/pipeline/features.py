"""The feature jobs: user_profile, room_stats and user_room_affinity from raw events, as of T.

Each job reads only events with event_time <= T (the cut-off, ms since the epoch),
pruning the date partitions to the window it needs, and returns one row per entity
with `event_time` = T (the features describe the entity as of T, also when its last
event is older) and every feature of the view, typed as the registry says
(`conform`). docs/pipeline.md lists how each feature is derived.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from service.core.registry import ViewPlan
from service.errors import LoadError
from service.pipeline.windows import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    VIEWER_TYPES,
    age_ms,
    count_if,
    events_until,
    fill,
    is_type,
    last_seen,
    pair_watch,
    ratio,
    room_embeddings,
    sum_if,
    user_embeddings,
    within,
)

SPARK_TYPES = {"int64": "long", "double": "double", "float": "float", "string": "string",
               "bool": "boolean", "float_vector": "array<float>"}  # fmt: skip


def read_events(spark: SparkSession, path: Path | str) -> DataFrame:
    """The event log under `path` as a table partitioned by `date` (Hive-style directories)."""
    return spark.read.option("basePath", str(path)).parquet(str(path))


def user_profile(events: DataFrame, cutoff_ms: int) -> DataFrame:
    """One row per user seen (viewer or host) up to T."""
    every = events_until(events, cutoff_ms)  # follows, first event, country: all history
    ever = every.groupBy("user_id").agg(
        F.min("event_time").alias("first_seen"),
        count_if(is_type("follow")).alias("following_count"),
        last_seen("country").alias("country"),
    )
    hosts = every.where(is_type("room_start")).select("room_id", F.col("user_id").alias("host"))
    followers = (every.where(is_type("follow")).join(hosts.distinct(), "room_id")
                 .groupBy("host").agg(F.count("*").alias("follower_count"))
                 .withColumnRenamed("host", "user_id"))  # fmt: skip
    recent = events_until(events, cutoff_ms, 30 * DAY_MS).where(is_type(*VIEWER_TYPES))
    week = within(cutoff_ms, 7 * DAY_MS)
    leave, gift = is_type("leave"), is_type("gift")
    month = recent.groupBy("user_id").agg(
        sum_if("watch_s", leave & week).alias("watch_s_7d"),
        sum_if("watch_s", leave).alias("watch_s_30d"),
        count_if(leave).alias("leaves_30d"),
        count_if(gift).alias("gifts_sent_30d"),
        sum_if("gift_value", gift).alias("spend_30d"),
        count_if(is_type("comment")).alias("comments_30d"),
        count_if(is_type("join") & week).alias("sessions_7d"),
        count_if(is_type("join")).alias("sessions_30d"),
        count_if(is_type("impression") & week).alias("impressions_7d"),
        count_if(is_type("impression")).alias("impressions_30d"),
        count_if(is_type("follow")).alias("follows_30d"),
    )
    watch = pair_watch(recent)
    embedding = user_embeddings(watch, room_embeddings(watch))
    df = ever.join(followers, "user_id", "left").join(month, "user_id", "left")
    df = fill(df, {"follower_count": 0, "country": ""} | dict.fromkeys(month.columns[1:], 0))
    return df.join(embedding, "user_id", "left").select(
        "user_id",
        "follower_count",
        "following_count",
        F.floor(F.col("watch_s_7d") / 60).alias("watch_minutes_7d"),
        F.floor(F.col("watch_s_30d") / 60).alias("watch_minutes_30d"),
        "gifts_sent_30d",
        "comments_30d",
        "sessions_7d",
        F.floor(age_ms(cutoff_ms, F.col("first_seen")) / DAY_MS).alias("account_age_days"),
        ratio("sessions_7d", "impressions_7d").alias("ctr_7d"),
        ratio("sessions_30d", "impressions_30d").alias("ctr_30d"),
        ratio("gifts_sent_30d", "sessions_30d").alias("gift_rate_30d"),
        F.col("spend_30d"),
        (ratio("watch_s_30d", "leaves_30d") / 60).alias("avg_session_min"),
        ratio("follows_30d", "sessions_30d").alias("follow_rate_30d"),
        "country",
        "user_embedding",
    )


def _concurrency(day: DataFrame, cutoff_ms: int) -> DataFrame:
    """Per room: viewers now, 5 minutes ago, and the peak of the last hour, from the
    sessions that started in the last day (+1 at a join, -1 at its leave; the join of
    a leave is at event_time - watch_s)."""
    lo = cutoff_ms - DAY_MS
    joins = day.where(is_type("join")).select("room_id", "event_time", F.lit(1).alias("delta"))
    started_ms = F.unix_millis("event_time") - F.col("watch_s") * 1000
    leaves = (day.where(is_type("leave") & (started_ms > lo))
              .select("room_id", "event_time", F.lit(-1).alias("delta")))  # fmt: skip
    steps = joins.unionByName(leaves)
    order = Window.partitionBy("room_id").orderBy("event_time", "delta")
    steps = steps.withColumn("running", F.sum("delta").over(order.rowsBetween(
        Window.unboundedPreceding, Window.currentRow)))  # fmt: skip
    hour_ago = F.col("event_time") <= F.timestamp_millis(F.lit(cutoff_ms - HOUR_MS))
    five_ago = F.col("event_time") <= F.timestamp_millis(F.lit(cutoff_ms - 5 * MINUTE_MS))
    return steps.groupBy("room_id").agg(
        F.sum("delta").cast("long").alias("viewer_count"),
        sum_if("delta", five_ago).cast("long").alias("viewers_5m_ago"),
        F.greatest(sum_if("delta", hour_ago), F.max(F.when(~hour_ago, F.col("running"))))
        .cast("long").alias("peak_viewers_1h"),
    )  # fmt: skip


def _retention(day: DataFrame, cutoff_ms: int, after_s: int) -> Column:
    """The share of the sessions joined in (T - 1 h, T - after_s] still watching after_s
    seconds later (0.0 if none joined)."""
    lo, hi = F.lit(cutoff_ms - HOUR_MS), F.lit(cutoff_ms - after_s * 1000)
    joined_ms = F.unix_millis("event_time")
    joined = is_type("join") & (joined_ms > lo) & (joined_ms <= hi)
    started_ms = joined_ms - F.col("watch_s") * 1000
    early = is_type("leave") & (F.col("watch_s") < after_s) & (started_ms > lo) & (started_ms <= hi)
    return F.when(count_if(joined) > 0, 1.0 - ratio(count_if(early), count_if(joined)))


def room_stats(events: DataFrame, cutoff_ms: int) -> DataFrame:
    """One row per room that has streamed up to T."""
    every = events_until(events, cutoff_ms)
    ever = every.groupBy("room_id").agg(
        last_seen("category").alias("category"),
        count_if(is_type("follow")).alias("follower_count"),
        count_if(is_type("room_start")).alias("streams"),
    ).where(F.col("streams") > 0)  # fmt: skip
    day = events_until(events, cutoff_ms, DAY_MS)
    m1, m5 = within(cutoff_ms, MINUTE_MS), within(cutoff_ms, 5 * MINUTE_MS)
    gift = is_type("gift")
    recent = day.groupBy("room_id").agg(
        F.max(F.when(is_type("room_start"), F.col("event_time"))).alias("started"),
        F.max(F.when(is_type("room_end"), F.col("event_time"))).alias("ended"),
        count_if(is_type("like") & m5).alias("likes_5m"),
        count_if(gift & m1).alias("gift_count_1m"),
        count_if(gift & m5).alias("gift_count_5m"),
        count_if(is_type("comment") & m1).alias("comment_count_1m"),
        count_if(is_type("comment") & m5).alias("comment_count_5m"),
        count_if(is_type("share") & m5).alias("share_count_5m"),
        count_if(is_type("follow") & m5).alias("follows_5m"),
        sum_if("gift_value", gift & m1).alias("gift_value_1m"),
        sum_if("gift_value", gift & m5).alias("gift_value_5m"),
        _retention(day, cutoff_ms, 60).alias("retention_1m"),
        _retention(day, cutoff_ms, 300).alias("retention_5m"),
        sum_if("watch_s", is_type("leave")).alias("watch_s_1d"),
        count_if(is_type("leave")).alias("leaves_1d"),
    )
    counts = [c for c in recent.columns if c not in ("room_id", "started", "ended")]
    df = ever.join(recent, "room_id", "left").join(_concurrency(day, cutoff_ms), "room_id", "left")
    df = fill(df, dict.fromkeys([*counts, "viewer_count", "viewers_5m_ago", "peak_viewers_1h"], 0))
    watch = pair_watch(events_until(events, cutoff_ms, 30 * DAY_MS))
    df = df.join(room_embeddings(watch), "room_id", "left")
    per_viewer_min = F.lit(5.0) * F.greatest(F.col("viewer_count"), F.lit(1))

    def rate(column: str) -> Column:  # per viewer and minute, over the last 5 minutes
        return F.col(column) / per_viewer_min

    live = F.col("started").isNotNull() & (
        F.col("ended").isNull() | (F.col("started") > F.col("ended")))  # fmt: skip
    avg_watch = ratio("watch_s_1d", "leaves_1d")
    engagement = rate("likes_5m") + 3 * rate("comment_count_5m") + 20 * rate("gift_count_5m")
    return df.select(
        "room_id", "viewer_count", "likes_5m", "gift_count_1m", "gift_count_5m",
        "comment_count_1m", "comment_count_5m", "share_count_5m", "follower_count",
        F.when(live, F.floor(age_ms(cutoff_ms, F.col("started")) / 1000)).otherwise(0)
        .alias("stream_age_s"),
        "peak_viewers_1h", "gift_value_1m", "gift_value_5m",
        rate("comment_count_5m").alias("comment_rate"),
        rate("likes_5m").alias("like_rate"),
        rate("share_count_5m").alias("share_rate"),
        rate("follows_5m").alias("follow_rate"),
        (1.0 - F.exp(-5.0 * engagement)).alias("engagement_score"),
        "retention_1m", "retention_5m",
        ((F.col("viewer_count") - F.col("viewers_5m_ago"))
         / F.greatest(F.col("viewers_5m_ago"), F.lit(1))).alias("viewer_growth_5m"),
        avg_watch.alias("avg_watch_s"),
        (0.5 * F.col("retention_5m") + 0.5 * avg_watch / (avg_watch + 300.0))
        .alias("quality_score"),
        "category", "room_embedding",
    )  # fmt: skip


def user_room_affinity(events: DataFrame, cutoff_ms: int) -> DataFrame:
    """One row per (user, room) pair with a join in the last 30 days."""
    recent = events_until(events, cutoff_ms, 30 * DAY_MS).where(is_type(*VIEWER_TYPES))
    pairs = recent.groupBy("user_id", "room_id").agg(
        sum_if("watch_s", is_type("leave")).alias("watch_sec_30d"),
        count_if(is_type("gift")).alias("gifts_30d"),
        F.max(F.when(is_type("join"), F.col("event_time"))).alias("last_join"),
    )
    return pairs.where(F.col("last_join").isNotNull()).select(
        "user_id", "room_id", "watch_sec_30d", "gifts_30d",
        F.floor(age_ms(cutoff_ms, F.col("last_join")) / 1000).alias("last_visit_age_s"),
    )  # fmt: skip


JOBS: dict[str, Callable[[DataFrame, int], DataFrame]] = {
    "user_profile": user_profile,
    "room_stats": room_stats,
    "user_room_affinity": user_room_affinity,
}


def conform(df: DataFrame, plan: ViewPlan, cutoff_ms: int) -> DataFrame:
    """The columns `livefeat load` takes for `plan`: keys, event_time (= the cut-off, int64
    ms), then every feature in registry order with its registry type. Raises LoadError
    naming a feature the job does not compute."""
    missing = [f.name for f in plan.codec.features if f.name not in df.columns]
    if missing:
        raise LoadError(f"view {plan.name!r}: the job computes no column {missing[0]!r}")
    columns: list[Any] = [F.col(k).cast("long") for k in plan.key_columns]
    columns.append(F.lit(cutoff_ms).cast("long").alias("event_time"))
    columns += [F.col(f.name).cast(SPARK_TYPES[f.type]).alias(f.name) for f in plan.codec.features]
    return df.select(*columns)


def compute(events: DataFrame, plan: ViewPlan, cutoff_ms: int) -> DataFrame:
    """The view's features as of the cut-off, conformed. Raises LoadError (no job for it)."""
    if plan.name not in JOBS:
        raise LoadError(f"view {plan.name!r}: no feature job (jobs: {sorted(JOBS)})")
    return conform(JOBS[plan.name](events, cutoff_ms), plan, cutoff_ms)


def write_parquet(df: DataFrame, path: Path) -> Path:
    """Write `df` as ONE Parquet file at `path` (what `livefeat load` reads), sorted by key."""
    tmp = path.with_name(path.name + ".spark")
    shutil.rmtree(tmp, ignore_errors=True)
    keys = [c for c in ("user_id", "room_id") if c in df.columns]
    df.orderBy(*keys).coalesce(1).write.mode("overwrite").parquet(str(tmp))
    (part,) = tmp.glob("part-*.parquet")
    part.replace(path)
    shutil.rmtree(tmp)
    return path
