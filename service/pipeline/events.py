"""Raw live-streaming event logs, generated: a Hive-style table of Parquet files by date.

    OUT/date=YYYY-MM-DD/part-NNNNN.parquet    one file per generated day and event date
    OUT/_spec.json                            the EventSpec (Spark and duckdb skip "_" files)

One row per event (EVENT_SCHEMA): `event_time` (timestamp, ms, UTC), `event_type`,
`user_id` (the viewer; the host for room_start/room_end), `room_id`, `watch_s` (leave
only: seconds since the join), `gift_value` (gift only), `country` (viewer events: where
the client was), `category` (room_start only).

The world: every room streams once a day (start uniform over the day, 0.5-4 h long;
streams of the last day may still be live at `end_ms`). Viewers and rooms meet on
the (user, room) pairs of the standard workload (service/workload.py draw_pairs: users
uniform, rooms Zipf by id), each pair 1 + Poisson(1) sessions on uniform days; a session
is a few impressions before a join, a join inside the room's stream, likes, comments,
gifts, shares and maybe a follow while watching, and a leave (unless still watching at
`end_ms`). Room r is hosted by user HOST_STEP * (r - 1) % n_users + 1. Countries and
categories are mostly fixed per user and room, sometimes not (travel, a themed stream).

Deterministic from the seed: the same spec writes the same rows (numpy generators
seeded per (seed, purpose, day)). No Spark needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from service.workload import (
    _CATEGORIES,
    _CATEGORY_P,
    _COUNTRIES,
    _COUNTRY_P,
    WorkloadSpec,
    draw_pairs,
)

EVENT_TYPES = ("room_start", "room_end", "impression", "join", "leave", "like", "comment",
               "gift", "share", "follow")  # fmt: skip
EVENT_SCHEMA = pa.schema([
    ("event_time", pa.timestamp("ms", tz="UTC")),
    ("event_type", pa.string()),
    ("user_id", pa.int64()),
    ("room_id", pa.int64()),
    ("watch_s", pa.int64()),
    ("gift_value", pa.float64()),
    ("country", pa.string()),
    ("category", pa.string()),
])  # fmt: skip
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
HOST_STEP = 7919  # a prime: hosts spread over the users
CATEGORIES = _CATEGORIES.split()
# Per session: mean counts (Poisson) of what happens while watching, and follows' odds.
PER_SESSION = {"impression": 1.0, "like": 1.0, "comment": 0.6, "gift": 0.2, "share": 0.03}
FOLLOW_P = 0.04
AWAY_P = 0.03  # a viewer event from another country than the user's own


@dataclass(frozen=True)
class EventSpec:
    """Sizes, seed and time span of a generated event log. `end_ms`: ms since the epoch."""

    n_users: int
    n_rooms: int
    n_pairs: int
    days: int
    end_ms: int
    seed: int = 42

    SIZES = {  # a class constant, not a field (no annotation)
        "tiny": (300, 40, 1_500, 30),  # tests
        "small": (1_000, 200, 5_000, 30),  # make pipeline: the entity counts of demo --small
        "standard": (100_000, 20_000, 1_000_000, 30),  # the standard workload's counts
    }

    @classmethod
    def sized(cls, size: str, end_ms: int, seed: int = 42) -> EventSpec:
        """The spec of a named size (tiny, small, standard). Raises ValueError."""
        if size not in cls.SIZES:
            raise ValueError(f"size: {size!r} is not one of {sorted(cls.SIZES)}")
        users, rooms, pairs, days = cls.SIZES[size]
        return cls(users, rooms, pairs, days, end_ms, seed)

    @property
    def start_ms(self) -> int:
        """The first ms of the log: `days` days before `end_ms`."""
        return self.end_ms - self.days * DAY_MS


def _rng(spec: EventSpec, purpose: int, day: int = 0) -> np.random.Generator:
    return np.random.default_rng((spec.seed, purpose, day))


def host_of(room_ids: np.ndarray, n_users: int) -> np.ndarray:
    """The user id hosting each room."""
    return (HOST_STEP * (room_ids.astype(np.int64) - 1)) % n_users + 1


def _sessions(spec: EventSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user_id, room_id, day) of every session, sorted by day."""
    users, rooms = draw_pairs(WorkloadSpec(spec.n_users, spec.n_rooms, spec.n_pairs, spec.seed))
    rng = _rng(spec, 1)
    per_pair = 1 + rng.poisson(1.0, users.size)
    users, rooms = np.repeat(users, per_pair), np.repeat(rooms, per_pair)
    days = rng.integers(0, spec.days, users.size)
    order = np.argsort(days, kind="stable")
    return users[order], rooms[order], days[order]


class _Events:
    """Columns of one generated day's events, appended part by part."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, kind: str, t: np.ndarray, users: np.ndarray, rooms: np.ndarray,
            **extra: np.ndarray) -> None:  # fmt: skip
        n = t.size
        self.parts.append({
            "t": t.astype(np.int64), "type": np.full(n, EVENT_TYPES.index(kind), np.int8),
            "user": users, "room": rooms,
            "watch": extra.get("watch", np.full(n, -1, np.int64)),
            "gift": extra.get("gift", np.full(n, np.nan)),
            "country": extra.get("country", np.full(n, -1, np.int16)),
            "category": extra.get("category", np.full(n, -1, np.int16)),
        })  # fmt: skip

    def table(self, lo_ms: int, hi_ms: int) -> pa.Table:
        """The events within [lo_ms, hi_ms], sorted by time, as EVENT_SCHEMA."""
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        keep = (cols["t"] >= lo_ms) & (cols["t"] <= hi_ms)
        order = np.argsort(cols["t"][keep], kind="stable")
        c = {k: v[keep][order] for k, v in cols.items()}

        def names(codes: np.ndarray, values: list[str] | tuple[str, ...]) -> pa.Array:
            return pa.array(values, pa.string()).take(pa.array(codes, mask=codes < 0))

        return pa.table([
            pa.array(c["t"], pa.int64()).cast(EVENT_SCHEMA.field("event_time").type),
            names(c["type"], EVENT_TYPES),
            pa.array(c["user"], pa.int64()), pa.array(c["room"], pa.int64()),
            pa.array(c["watch"], pa.int64(), mask=c["watch"] < 0),
            pa.array(c["gift"], pa.float64(), mask=np.isnan(c["gift"])),
            names(c["country"], _COUNTRIES), names(c["category"], CATEGORIES),
        ], schema=EVENT_SCHEMA)  # fmt: skip


def _day(spec: EventSpec, day: int, users: np.ndarray, rooms: np.ndarray,
         home: np.ndarray, genre: np.ndarray) -> pa.Table:  # fmt: skip
    """Every event of the streams of `day` and of the sessions held in them."""
    rng, ev = _rng(spec, 2, day), _Events()
    room_ids = np.arange(1, spec.n_rooms + 1, dtype=np.int64)
    start = spec.start_ms + day * DAY_MS + rng.integers(0, 23 * HOUR_MS, spec.n_rooms)
    length = rng.integers(HOUR_MS // 2, 4 * HOUR_MS, spec.n_rooms)
    themed = np.where(rng.random(spec.n_rooms) < 0.02,
                      rng.integers(0, len(CATEGORIES), spec.n_rooms), genre)  # fmt: skip
    hosts = host_of(room_ids, spec.n_users)
    ev.add("room_start", start, hosts, room_ids, category=themed.astype(np.int16))
    ev.add("room_end", start + length, hosts, room_ids)
    # Sessions: a join inside the stream, watching until a leave inside it.
    s0, sl = start[rooms - 1], length[rooms - 1]
    join = s0 + (rng.random(users.size) * 0.9 * sl).astype(np.int64)
    room_left_s = np.maximum((s0 + sl - join) // 1000, 1)
    watch = np.minimum(np.ceil(rng.lognormal(5.5, 1.0, users.size)).astype(np.int64), room_left_s)
    leave = join + watch * 1000
    away = rng.random(users.size) < AWAY_P
    country = np.where(away, rng.integers(0, len(_COUNTRIES), users.size), home[users - 1])
    country = country.astype(np.int16)
    ev.add("join", join, users, rooms, country=country)
    ev.add("leave", leave, users, rooms, watch=watch, country=country)
    for kind, mean in PER_SESSION.items():
        counts = rng.poisson(mean, users.size) + (kind == "impression")
        i = np.repeat(np.arange(users.size), counts)
        if kind == "impression":  # shown in the feed up to 10 minutes before the join
            t = join[i] - (rng.random(i.size) * 600_000).astype(np.int64)
        else:
            t = join[i] + (rng.random(i.size) * (leave - join)[i]).astype(np.int64)
        gift = np.round(rng.lognormal(1.0, 1.0, i.size), 2) if kind == "gift" else None
        extra = {"gift": gift} if gift is not None else {}
        ev.add(kind, t, users[i], rooms[i], country=country[i], **extra)
    follows = np.flatnonzero(rng.random(users.size) < FOLLOW_P)
    t = join[follows] + (rng.random(follows.size) * (leave - join)[follows]).astype(np.int64)
    ev.add("follow", t, users[follows], rooms[follows], country=country[follows])
    return ev.table(spec.start_ms, spec.end_ms)


def write_events(spec: EventSpec, out: Path, progress: Callable[[int], None] | None = None) -> int:
    """Write the event log of `spec` under `out` (which must not hold one yet); returns
    the number of events. `progress` gets each day's event count. Raises ValueError."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out: {out} is not empty (events are never appended to)")
    if min(spec.n_users, spec.n_rooms, spec.n_pairs, spec.days) < 1:
        raise ValueError("n_users, n_rooms, n_pairs and days must be at least 1")
    users, rooms, days = _sessions(spec)
    rng = _rng(spec, 3)
    home = rng.choice(len(_COUNTRIES), spec.n_users, p=np.asarray(_COUNTRY_P) / sum(_COUNTRY_P))
    genre = rng.choice(len(CATEGORIES), spec.n_rooms, p=np.asarray(_CATEGORY_P) / sum(_CATEGORY_P))
    bounds = np.searchsorted(days, np.arange(spec.days + 1))
    total = 0
    for day in range(spec.days):
        a, b = bounds[day], bounds[day + 1]
        table = _day(spec, day, users[a:b], rooms[a:b], home, genre)
        dates = pc.strftime(table["event_time"], format="%Y-%m-%d", locale="C")
        for date in pc.unique(dates).to_pylist():
            part = table.filter(pc.equal(dates, date))
            path = out / f"date={date}" / f"part-{day:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, path, row_group_size=100_000)
        total += table.num_rows
        if progress is not None:
            progress(table.num_rows)
    (out / "_spec.json").write_text(json.dumps(asdict(spec) | {"events": total}) + "\n")
    return total


def read_spec(events: Path) -> EventSpec:
    """The spec an event log was written with (its _spec.json). Raises ValueError."""
    try:
        data = json.loads((Path(events) / "_spec.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"events: {events} has no readable _spec.json ({exc})") from exc
    data.pop("events", None)
    return EventSpec(**data)
