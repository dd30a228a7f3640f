"""The standard workload of ``docs/benchmark-workload.md``: Parquet feature data, ranker requests.

Everything is deterministic from a seed. Room popularity is Zipf(s) over *rank*, and the rank of a
room **is** its room id: room 1 is the most popular, room ``n_rooms`` the least. The pair view and
the request generator share this mapping, so some requested (user, room) pairs exist in the pair
view (mostly those of the hottest rooms) and most do not.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["CHUNK_ROWS", "EMBEDDING_DIM", "RequestGenerator", "WorkloadSpec", "write_parquet"]

CHUNK_ROWS = 100_000
"""At most this many rows are generated, held in memory and written (as one row group) at once."""
EMBEDDING_DIM = 32
ZIPF_S = 1.1

_COUNTRIES = ["US", "BR", "IN", "ID", "MX", "PH", "VN", "TR", "DE", "GB", "JP", "KR"]
_COUNTRY_P = [0.22, 0.14, 0.12, 0.1, 0.08, 0.07, 0.06, 0.05, 0.05, 0.04, 0.04, 0.03]
_CATEGORIES = "gaming music chat dance sports education cooking travel fitness art outdoor shopping"
_CATEGORY_P = [0.24, 0.16, 0.15, 0.1, 0.07, 0.05, 0.05, 0.045, 0.04, 0.035, 0.03, 0.025]


@dataclass(frozen=True)
class WorkloadSpec:
    """Sizes and seed of a workload; the defaults are the standard workload."""

    n_users: int = 100_000
    n_rooms: int = 20_000
    n_pairs: int = 1_000_000
    seed: int = 42

    @classmethod
    def small(cls, seed: int = 42) -> WorkloadSpec:
        """A small workload for tests: 1,000 users, 200 rooms, 5,000 pairs."""
        return cls(n_users=1_000, n_rooms=200, n_pairs=5_000, seed=seed)


def zipf_cdf(n: int, s: float = ZIPF_S) -> np.ndarray:
    """Cumulative Zipf(s) probabilities over ranks 1..n (rank r has weight 1/r**s)."""
    cdf: np.ndarray = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -s)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def _sample_ranks(rng: np.random.Generator, cdf: np.ndarray, m: int) -> np.ndarray:
    """Draw ``m`` ranks (1-based, with replacement) from a cumulative distribution."""
    idx = np.searchsorted(cdf, rng.random(m), side="right")
    return np.minimum(idx, cdf.size - 1).astype(np.int64) + 1


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream): seeds 42 and 43 share no stream."""
    return np.random.default_rng((seed, stream))


def _counts(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.floor(x).astype(np.int64)
    return out


def _strings(rng: np.random.Generator, values: list[str], p: list[float], n: int) -> pa.Array:
    idx = rng.choice(len(values), size=n, p=np.asarray(p) / sum(p))
    return pa.array(values, pa.string()).take(pa.array(idx))


def _embeddings(rng: np.random.Generator, n: int) -> pa.Array:
    """Unit-norm float32 vectors as a fixed-size list column."""
    v = rng.standard_normal((n, EMBEDDING_DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), EMBEDDING_DIM)


_Columns = Callable[[np.random.Generator, np.ndarray], dict[str, Any]]
"""Makes the feature columns, in registry order, of the rows of a chunk of entity ids."""


def _user_columns(rng: np.random.Generator, ids: np.ndarray) -> dict[str, Any]:
    n = ids.size
    active = rng.random(n) < 0.8  # a fifth of the users did not watch this week
    sessions_7d = np.where(active, 1 + rng.poisson(6.0, n), 0)
    watch_7d = np.where(active, _counts(rng.lognormal(4.0, 1.3, n)), 0)
    gifts = rng.negative_binomial(0.2, 0.2 / (0.2 + 3.0), n)  # mean 3, mostly 0
    return {
        "follower_count": _counts(rng.lognormal(3.0, 2.0, n)),
        "following_count": _counts(rng.lognormal(4.0, 1.2, n)),
        "watch_minutes_7d": watch_7d,
        "watch_minutes_30d": watch_7d + _counts(rng.lognormal(5.0, 1.5, n)),
        "gifts_sent_30d": gifts,
        "comments_30d": rng.negative_binomial(0.5, 0.5 / (0.5 + 20.0), n),
        "sessions_7d": sessions_7d,
        "account_age_days": rng.integers(1, 3_651, n),
        "ctr_7d": rng.beta(2.0, 30.0, n),
        "ctr_30d": rng.beta(2.5, 35.0, n),
        "gift_rate_30d": rng.beta(0.3, 20.0, n),
        "spend_30d": np.round(gifts * rng.lognormal(1.5, 1.0, n), 2),
        "avg_session_min": watch_7d / np.maximum(sessions_7d, 1),
        "follow_rate_30d": rng.beta(1.0, 50.0, n),
        "country": _strings(rng, _COUNTRIES, _COUNTRY_P, n),
        "user_embedding": _embeddings(rng, n),
    }


def _room_columns(rng: np.random.Generator, ids: np.ndarray) -> dict[str, Any]:
    n = ids.size  # popularity follows the request Zipf: room id == popularity rank
    popularity = 50_000 * ids.astype(np.float64) ** -ZIPF_S
    viewers = _counts(popularity * rng.lognormal(0.0, 0.5, n)) + rng.poisson(3.0, n)
    like_rate = rng.beta(2.0, 20.0, n)  # per viewer per minute
    gift_rate = rng.beta(1.0, 300.0, n)
    comment_rate = rng.beta(2.0, 40.0, n)
    share_rate = rng.beta(1.0, 500.0, n)
    follow_rate = rng.beta(1.0, 200.0, n)
    gifts_1m = rng.poisson(viewers * gift_rate)
    gifts_5m = gifts_1m + rng.poisson(4 * viewers * gift_rate)
    comments_1m = rng.poisson(viewers * comment_rate)
    retention_1m = rng.beta(8.0, 2.0, n)
    return {
        "viewer_count": viewers,
        "likes_5m": rng.poisson(5 * viewers * like_rate),
        "gift_count_1m": gifts_1m,
        "gift_count_5m": gifts_5m,
        "comment_count_1m": comments_1m,
        "comment_count_5m": comments_1m + rng.poisson(4 * viewers * comment_rate),
        "share_count_5m": rng.poisson(5 * viewers * share_rate),
        "follower_count": _counts(viewers * rng.lognormal(3.0, 1.0, n)),
        "stream_age_s": _counts(rng.exponential(3_600.0, n)) + 1,
        "peak_viewers_1h": _counts(viewers * (1.0 + rng.exponential(0.3, n))),
        "gift_value_1m": np.round(gifts_1m * rng.lognormal(1.0, 1.0, n), 2),
        "gift_value_5m": np.round(gifts_5m * rng.lognormal(1.0, 1.0, n), 2),
        "comment_rate": comment_rate,
        "like_rate": like_rate,
        "share_rate": share_rate,
        "follow_rate": follow_rate,
        "engagement_score": 1.0 - np.exp(-5.0 * (like_rate + 3 * comment_rate + 20 * gift_rate)),
        "retention_1m": retention_1m,
        "retention_5m": retention_1m * rng.beta(6.0, 3.0, n),
        "viewer_growth_5m": rng.normal(0.0, 0.1, n),
        "avg_watch_s": rng.lognormal(5.0, 0.8, n),
        "quality_score": rng.beta(5.0, 2.0, n),
        "category": _strings(rng, _CATEGORIES.split(), _CATEGORY_P, n),
        "room_embedding": _embeddings(rng, n),
    }


def _pair_columns(rng: np.random.Generator, ids: np.ndarray) -> dict[str, Any]:
    n = ids.size
    return {
        "watch_sec_30d": _counts(rng.lognormal(5.0, 1.5, n)),
        "gifts_30d": rng.negative_binomial(0.3, 0.3 / (0.3 + 1.0), n),
        "last_visit_age_s": rng.integers(0, 30 * 86_400, n),
    }


def draw_pairs(spec: WorkloadSpec, s: float = ZIPF_S) -> tuple[np.ndarray, np.ndarray]:
    """``spec.n_pairs`` distinct (user_id, room_id) pairs sorted by (user, room).

    Users are uniform over 1..n_users, rooms Zipf(s) by room id. Duplicates are dropped and
    topped up with fresh draws; the pairs kept are the first ``n_pairs`` distinct ones drawn.
    """
    if spec.n_pairs > spec.n_users * spec.n_rooms // 2:
        raise ValueError("n_pairs must be at most half of n_users * n_rooms")
    rng, cdf = _rng(spec.seed, 3), zipf_cdf(spec.n_rooms, s)
    drawn = uniq = first = np.empty(0, dtype=np.int64)
    while uniq.size < spec.n_pairs:
        m = max((spec.n_pairs - uniq.size) * 5 // 4, 1_024)
        users = rng.integers(0, spec.n_users, m, dtype=np.int64)
        drawn = np.concatenate([drawn, users * spec.n_rooms + _sample_ranks(rng, cdf, m) - 1])
        uniq, first = np.unique(drawn, return_index=True)
    keys = np.sort(uniq[np.argsort(first, kind="stable")[: spec.n_pairs]])
    return keys // spec.n_rooms + 1, keys % spec.n_rooms + 1


def write_parquet(
    spec: WorkloadSpec,
    out_dir: Path,
    event_time_ms: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Path]:
    """Write the three views of ``spec`` as Parquet files in ``out_dir``; return {view: path}.

    Columns: the key column(s), ``event_time`` (int64 ms, all ``event_time_ms``), then the
    features in registry order. Rows are generated and written ``CHUNK_ROWS`` at a time (one
    row group each), and ``progress`` gets the row count of each chunk written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pair_users, pair_rooms = draw_pairs(spec)  # random stream 3
    views: list[tuple[str, int, dict[str, np.ndarray], _Columns]] = [
        ("user_profile", 1, {"user_id": np.arange(1, spec.n_users + 1)}, _user_columns),
        ("room_stats", 2, {"room_id": np.arange(1, spec.n_rooms + 1)}, _room_columns),
        ("user_room_affinity", 4, {"user_id": pair_users, "room_id": pair_rooms}, _pair_columns),
    ]
    paths: dict[str, Path] = {}
    for view, stream, keys, make in views:
        rng, ids = _rng(spec.seed, stream), next(iter(keys.values())).astype(np.int64)
        paths[view] = out_dir / f"{view}.parquet"
        with ExitStack() as stack:
            writer: pq.ParquetWriter | None = None
            for a in range(0, ids.size, CHUNK_ROWS):
                cols: dict[str, Any] = {k: v[a : a + CHUNK_ROWS] for k, v in keys.items()}
                n = min(CHUNK_ROWS, ids.size - a)
                cols["event_time"] = np.full(n, event_time_ms, dtype=np.int64)
                table = pa.table({**cols, **make(rng, ids[a : a + n])})
                if writer is None:
                    writer = stack.enter_context(pq.ParquetWriter(paths[view], table.schema))
                writer.write_table(table, row_group_size=CHUNK_ROWS)
                if progress is not None:
                    progress(n)
    return paths


class RequestGenerator:
    """Ranker requests: a uniform user and ``n_candidates`` distinct Zipf(s)-popular rooms.

    Room rank == room id (room 1 is the hottest). Candidates are drawn without repetition, i.e.
    successive weighted draws among the rooms not yet drawn, and are returned in draw order.
    Sampling draws with replacement from precomputed cumulative weights and keeps the first
    distinct rooms (same distribution); when that would need too many draws (``n_candidates``
    near ``n_rooms``) it uses the equivalent Gumbel top-k trick.
    """

    def __init__(
        self,
        n_users: int,
        n_rooms: int,
        n_candidates: int = 100,
        zipf_s: float = ZIPF_S,
        seed: int = 0,
    ) -> None:
        if not 1 <= n_candidates <= n_rooms or n_users < 1:
            raise ValueError("need n_users >= 1 and 1 <= n_candidates <= n_rooms")
        self.n_users, self.n_rooms, self.n_candidates = n_users, n_rooms, n_candidates
        self._rng = np.random.default_rng(seed)
        self._cdf = zipf_cdf(n_rooms, zipf_s)
        p = np.diff(self._cdf, prepend=0.0)
        self._log_w = np.log(np.maximum(p, 1e-300))
        self._draws = self._draws_needed(p, n_candidates)

    @staticmethod
    def _draws_needed(p: np.ndarray, k: int) -> int:
        """Draws with replacement expected to give comfortably over ``k`` distinct rooms, or 0."""
        log_miss = np.log1p(-np.minimum(p, 1 - 1e-12))  # E[distinct] = sum 1 - (1 - p)**m
        m, target = k, k + 4 * k**0.5 + 8
        while m <= 64 * k:
            if np.sum(-np.expm1(m * log_miss)) >= target:
                return m
            m += m // 32 + 1
        return 0  # oversampling would be wasteful: use Gumbel top-k

    def _candidates(self) -> np.ndarray:
        k = self.n_candidates
        if self._draws:
            drawn = _sample_ranks(self._rng, self._cdf, self._draws)
            for _ in range(4):
                uniq, first = np.unique(drawn, return_index=True)
                if uniq.size >= k:
                    return drawn[np.sort(first)[:k]]
                drawn = np.concatenate([drawn, _sample_ranks(self._rng, self._cdf, self._draws)])
        keys = self._log_w + self._rng.gumbel(size=self.n_rooms)
        top = np.argpartition(-keys, k - 1)[:k]
        return top[np.argsort(-keys[top])] + 1

    def next(self) -> tuple[int, list[int]]:
        """One request: (user_id in 1..n_users, n_candidates distinct room ids in 1..n_rooms)."""
        user = int(self._rng.integers(1, self.n_users + 1))
        return user, self._candidates().tolist()

    def requests(self, n: int) -> list[tuple[int, list[int]]]:
        """The next ``n`` requests."""
        return [self.next() for _ in range(n)]
