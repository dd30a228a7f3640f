"""The features of the demo views recomputed without Spark: duckdb SQL and numpy.

A second implementation written from the definitions in docs/pipeline.md, not from
the Spark code: viewers are counted from sessions paired join-to-leave (not from a
running sum), embeddings with numpy. Returns {key tuple: {feature: value}}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
DIM = 32
VIEWER = "('impression','join','leave','like','comment','gift','share','follow')"


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    rel = con.sql(sql)
    names = rel.columns
    return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]


def _connect(events: Path, cutoff_ms: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.sql(f"""CREATE VIEW e AS SELECT *, epoch_ms(event_time) AS t
        FROM read_parquet('{events}/*/*.parquet', hive_partitioning=true)
        WHERE epoch_ms(event_time) <= {cutoff_ms}""")
    return con


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else np.zeros_like(v)


def embeddings(
    con: duckdb.DuckDBPyConnection, cutoff_ms: int
) -> tuple[dict[int, Any], dict[int, Any]]:
    """(room embeddings, user embeddings) as float32 arrays, from 30 days of watch time."""
    got = con.sql(f"""SELECT user_id, room_id, SUM(watch_s)::DOUBLE AS w FROM e
        WHERE event_type = 'leave' AND t > {cutoff_ms - 30 * DAY}
        GROUP BY ALL HAVING w > 0""").fetchnumpy()
    users, rooms, w = got["user_id"], got["room_id"], got["w"]
    j = np.arange(DIM)
    base = np.sin(users[:, None].astype(np.float64) * (12.9898 * (j + 1)) + 78.233 * j)
    room_vec = {}
    for r in np.unique(rooms):
        sel = rooms == r
        room_vec[int(r)] = _unit((w[sel, None] * base[sel]).sum(axis=0)).astype(np.float32)
    user_vec = {}
    for u in np.unique(users):
        sel = np.flatnonzero(users == u)
        total = sum(w[i] * room_vec[int(rooms[i])].astype(np.float64) for i in sel)
        user_vec[int(u)] = _unit(np.asarray(total)).astype(np.float32)
    return room_vec, user_vec


def user_room_affinity(events: Path, cutoff_ms: int) -> dict[tuple[int, ...], dict[str, Any]]:
    con = _connect(events, cutoff_ms)
    rows = _rows(
        con,
        f"""SELECT user_id, room_id,
        COALESCE(SUM(watch_s) FILTER (WHERE event_type = 'leave'), 0) AS watch_sec_30d,
        COUNT(*) FILTER (WHERE event_type = 'gift') AS gifts_30d,
        ({cutoff_ms} - MAX(t) FILTER (WHERE event_type = 'join')) // 1000 AS last_visit_age_s
        FROM e WHERE t > {cutoff_ms - 30 * DAY} AND event_type IN {VIEWER}
        GROUP BY ALL HAVING MAX(t) FILTER (WHERE event_type = 'join') IS NOT NULL""",
    )
    return {(r.pop("user_id"), r.pop("room_id")): r for r in rows}


def user_profile(events: Path, cutoff_ms: int) -> dict[tuple[int, ...], dict[str, Any]]:
    con = _connect(events, cutoff_ms)
    week, month = cutoff_ms - 7 * DAY, cutoff_ms - 30 * DAY
    rows = _rows(
        con,
        f"""
        WITH hosts AS (SELECT DISTINCT room_id, user_id AS host FROM e WHERE event_type = 'room_start'),
        followers AS (SELECT host AS user_id, COUNT(*) AS n FROM e JOIN hosts USING (room_id)
                      WHERE event_type = 'follow' GROUP BY 1),
        m AS (SELECT user_id,
            SUM(watch_s) FILTER (WHERE event_type = 'leave' AND t > {week}) AS ws7,
            SUM(watch_s) FILTER (WHERE event_type = 'leave') AS ws30,
            COUNT(*) FILTER (WHERE event_type = 'leave') AS leaves,
            COUNT(*) FILTER (WHERE event_type = 'gift') AS gifts,
            SUM(gift_value) FILTER (WHERE event_type = 'gift') AS spend,
            COUNT(*) FILTER (WHERE event_type = 'comment') AS comments,
            COUNT(*) FILTER (WHERE event_type = 'join' AND t > {week}) AS s7,
            COUNT(*) FILTER (WHERE event_type = 'join') AS s30,
            COUNT(*) FILTER (WHERE event_type = 'impression' AND t > {week}) AS i7,
            COUNT(*) FILTER (WHERE event_type = 'impression') AS i30,
            COUNT(*) FILTER (WHERE event_type = 'follow') AS f30
            FROM e WHERE t > {month} AND event_type IN {VIEWER} GROUP BY 1),
        ever AS (SELECT user_id, MIN(t) AS first_ms,
            COUNT(*) FILTER (WHERE event_type = 'follow') AS following_count,
            first(country ORDER BY t DESC, country DESC) FILTER (WHERE country IS NOT NULL)
                AS country
            FROM e GROUP BY user_id)
        SELECT ever.*, followers.n AS followers, m.* EXCLUDE (user_id)
        FROM ever LEFT JOIN followers USING (user_id) LEFT JOIN m USING (user_id)""",
    )
    _, user_vec = embeddings(con, cutoff_ms)
    out = {}
    for r in rows:
        z = {k: (v if v is not None else 0) for k, v in r.items()}
        u = r["user_id"]
        out[(u,)] = {
            "follower_count": z["followers"],
            "following_count": z["following_count"],
            "watch_minutes_7d": z["ws7"] // 60,
            "watch_minutes_30d": z["ws30"] // 60,
            "gifts_sent_30d": z["gifts"],
            "comments_30d": z["comments"],
            "sessions_7d": z["s7"],
            "account_age_days": (cutoff_ms - r["first_ms"]) // DAY,
            "ctr_7d": _ratio(z["s7"], z["i7"]),
            "ctr_30d": _ratio(z["s30"], z["i30"]),
            "gift_rate_30d": _ratio(z["gifts"], z["s30"]),
            "spend_30d": float(z["spend"]),
            "avg_session_min": _ratio(z["ws30"], z["leaves"]) / 60,
            "follow_rate_30d": _ratio(z["f30"], z["s30"]),
            "country": r["country"] or "",
            "user_embedding": user_vec.get(u, np.zeros(DIM, np.float32)),
        }
    return out


def _sessions(con: duckdb.DuckDBPyConnection, cutoff_ms: int) -> dict[int, np.ndarray]:
    """Per room: (start, end) ms of the sessions joined in the last day; end inf if open."""
    got = con.sql(f"""SELECT j.room_id, j.t AS start, COALESCE(l.t, 9e18)::DOUBLE AS stop
        FROM (SELECT * FROM e WHERE event_type = 'join' AND t > {cutoff_ms - DAY}) j
        LEFT JOIN (SELECT * FROM e WHERE event_type = 'leave') l
        ON l.user_id = j.user_id AND l.room_id = j.room_id AND l.t - l.watch_s * 1000 = j.t
        """).fetchnumpy()
    return {int(r): np.stack([got["start"][got["room_id"] == r], got["stop"][got["room_id"] == r]])
            for r in np.unique(got["room_id"])}  # fmt: skip


def _watching(sessions: np.ndarray | None, at_ms: float) -> int:
    if sessions is None:
        return 0
    return int(np.sum((sessions[0] <= at_ms) & (sessions[1] > at_ms)))


def _retention(s: np.ndarray | None, cutoff_ms: int, after_s: int) -> float:
    if s is None:
        return 0.0
    joined = (s[0] > cutoff_ms - HOUR) & (s[0] <= cutoff_ms - after_s * 1000)
    stayed = joined & (s[1] - s[0] >= after_s * 1000)
    return float(stayed.sum() / joined.sum()) if joined.sum() else 0.0


def room_stats(events: Path, cutoff_ms: int) -> dict[tuple[int, ...], dict[str, Any]]:
    con = _connect(events, cutoff_ms)
    m1, m5, d1 = cutoff_ms - MIN, cutoff_ms - 5 * MIN, cutoff_ms - DAY
    rows = _rows(
        con,
        f"""SELECT room_id,
        first(category ORDER BY t DESC, category DESC) FILTER (WHERE category IS NOT NULL) AS category,
        COUNT(*) FILTER (WHERE event_type = 'follow') AS follower_count,
        MAX(t) FILTER (WHERE event_type = 'room_start' AND t > {d1}) AS started,
        MAX(t) FILTER (WHERE event_type = 'room_end' AND t > {d1}) AS ended,
        COUNT(*) FILTER (WHERE event_type = 'like' AND t > {m5}) AS likes_5m,
        COUNT(*) FILTER (WHERE event_type = 'gift' AND t > {m1}) AS gift_count_1m,
        COUNT(*) FILTER (WHERE event_type = 'gift' AND t > {m5}) AS gift_count_5m,
        COUNT(*) FILTER (WHERE event_type = 'comment' AND t > {m1}) AS comment_count_1m,
        COUNT(*) FILTER (WHERE event_type = 'comment' AND t > {m5}) AS comment_count_5m,
        COUNT(*) FILTER (WHERE event_type = 'share' AND t > {m5}) AS share_count_5m,
        COUNT(*) FILTER (WHERE event_type = 'follow' AND t > {m5}) AS follows_5m,
        COALESCE(SUM(gift_value) FILTER (WHERE event_type = 'gift' AND t > {m1}), 0) AS gift_value_1m,
        COALESCE(SUM(gift_value) FILTER (WHERE event_type = 'gift' AND t > {m5}), 0) AS gift_value_5m,
        AVG(watch_s) FILTER (WHERE event_type = 'leave' AND t > {d1}) AS avg_watch_s
        FROM e GROUP BY room_id HAVING COUNT(*) FILTER (WHERE event_type = 'room_start') > 0""",
    )
    sessions = _sessions(con, cutoff_ms)
    room_vec, _ = embeddings(con, cutoff_ms)
    out = {}
    for r in rows:
        room, s = r["room_id"], sessions.get(r["room_id"])
        now, before = _watching(s, cutoff_ms), _watching(s, m5)
        joins = [] if s is None else [t for t in s[0] if t > cutoff_ms - HOUR]
        peak = max([_watching(s, cutoff_ms - HOUR)] + [_watching(s, t) for t in joins])
        per = 5.0 * max(now, 1)
        rates = {k: r[c] / per for k, c in [("comment_rate", "comment_count_5m"),
                 ("like_rate", "likes_5m"), ("share_rate", "share_count_5m"),
                 ("follow_rate", "follows_5m")]}  # fmt: skip
        gift_rate = r["gift_count_5m"] / per
        live = r["started"] is not None and (r["ended"] is None or r["started"] > r["ended"])
        avg_watch = float(r["avg_watch_s"] or 0.0)
        r5 = _retention(s, cutoff_ms, 300)
        out[(room,)] = {
            **{
                k: r[k]
                for k in (
                    "likes_5m",
                    "gift_count_1m",
                    "gift_count_5m",
                    "comment_count_1m",
                    "comment_count_5m",
                    "share_count_5m",
                    "follower_count",
                    "gift_value_1m",
                    "gift_value_5m",
                    "category",
                )
            },
            "viewer_count": now,
            "stream_age_s": (cutoff_ms - r["started"]) // 1000 if live else 0,
            "peak_viewers_1h": peak,
            **rates,
            "engagement_score": 1.0
            - np.exp(-5.0 * (rates["like_rate"] + 3 * rates["comment_rate"] + 20 * gift_rate)),
            "retention_1m": _retention(s, cutoff_ms, 60),
            "retention_5m": r5,
            "viewer_growth_5m": (now - before) / max(before, 1),
            "avg_watch_s": avg_watch,
            "quality_score": 0.5 * r5 + 0.5 * avg_watch / (avg_watch + 300.0),
            "room_embedding": room_vec.get(room, np.zeros(DIM, np.float32)),
        }
    return out


VIEWS = {"user_profile": user_profile, "room_stats": room_stats,
         "user_room_affinity": user_room_affinity}  # fmt: skip
