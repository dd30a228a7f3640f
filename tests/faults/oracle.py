"""The fault suite's oracle: the demo data's Parquet files.

Every served value is checked against them: a value is the source's (FOUND, STALE),
or the view's registry defaults where the status allows it (DEFAULTED for a row the
source does not hold, UNAVAILABLE for any row); anything else is a wrong value.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import yaml

from service.client import Bundle, ViewData
from service.core.status import Status
from service.settings import DEMO_REGISTRY

REGISTRY: dict[str, Any] = yaml.safe_load(DEMO_REGISTRY.read_text())
VIEWS: dict[str, Any] = REGISTRY["views"]
TYPE_DEFAULTS = {"int64": 0, "double": 0.0, "float": 0.0, "string": "", "bool": False}
NUMERIC = ("int64", "double", "float", "bool")


def defaults(view: str) -> dict[str, Any]:
    """A missing row's features (unprefixed), per the registry."""
    out: dict[str, Any] = {}
    for name, spec in VIEWS[view]["features"].items():
        if "default" in spec:
            out[name] = spec["default"]
        elif spec["type"] == "float_vector":
            out[name] = [0.0] * spec["dim"]
        else:
            out[name] = TYPE_DEFAULTS[spec["type"]]
    return out


def _same(spec: dict[str, Any], got: Any, want: Any) -> bool:
    """Served JSON value vs source value: exact, vectors compared as the float32 stored."""
    if spec["type"] == "float_vector":
        return bool(np.array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32)))
    if spec["type"] == "float":
        return bool(np.float32(got) == np.float32(want))
    return bool(got == want and type(got) is type(want))


class Oracle:
    """The source rows of the demo workload (its Parquet files) and each view's defaults."""

    def __init__(self, parquet_dir: Path) -> None:
        self.rows: dict[str, dict[Any, dict[str, Any]]] = {}
        for view, spec in VIEWS.items():
            table = pq.read_table(parquet_dir / f"{view}.parquet").to_pylist()
            keys = ["user_id", "room_id"] if spec["entity"] == "user_room" else None
            rows: dict[Any, dict[str, Any]] = {}
            for rec in table:
                if keys:
                    key: Any = (rec["user_id"], rec["room_id"])
                else:
                    key = rec["user_id" if spec["entity"] == "user" else "room_id"]
                rows[key] = {name: rec[name] for name in spec["features"]}
            self.rows[view] = rows
        self.defaults = {view: defaults(view) for view in VIEWS}
        self.users = sorted(self.rows["user_profile"])
        self.rooms = sorted(self.rows["room_stats"])
        self.pairs_by_user: dict[int, list[int]] = {}
        for u, r in self.rows["user_room_affinity"]:
            self.pairs_by_user.setdefault(u, []).append(r)

    def expected(self, view: str, key: Any, status: str) -> tuple[dict[str, Any] | None, str]:
        """The values allowed for `status`, or (None, why the status itself is wrong)."""
        source = self.rows[view].get(key)
        if status in ("FOUND", "STALE"):
            return (source, "") if source is not None else (None, "found a row never written")
        if status == "DEFAULTED":
            if source is not None:
                return None, "DEFAULTED a stored row"
            return self.defaults[view], ""
        if status == "UNAVAILABLE":
            return self.defaults[view], ""
        return None, f"unknown status {status}"

    def check_http_entity(self, view: str, key: Any, entity: dict[str, Any]) -> list[str]:
        """Problems of one entity of an HTTP answer (empty: every value allowed)."""
        status = entity["status"][view]
        want, why = self.expected(view, key, status)
        if want is None:
            return [f"{view} {key}: {why}"]
        prefix, features = f"{view}.", entity["features"]
        out = []
        for name, spec in VIEWS[view]["features"].items():
            got = features.get(prefix + name)
            if not _same(spec, got, want[name]):
                out.append(f"{view} {key} {status} {name}: served {got!r}, source {want[name]!r}")
        return out

    def check_http_bundle(self, user: int, rooms: list[int], body: dict[str, Any]) -> list[str]:
        out = self.check_http_entity("user_profile", user, body["user"])
        if [r["id"] for r in body["rooms"]] != rooms:
            out.append("rooms out of order")
        for room, entity in zip(rooms, body["rooms"], strict=False):
            out += self.check_http_entity("room_stats", room, entity)
        for room, entity in zip(rooms, body["pairs"], strict=False):
            out += self.check_http_entity("user_room_affinity", (user, room), entity)
        return out

    def check_grpc_view(self, view: str, keys: list[Any], data: ViewData) -> list[str]:
        out = []
        features = VIEWS[view]["features"]
        numeric = [n for n, s in features.items() if s["type"] in NUMERIC]
        if list(data.numeric_names) != numeric or len(data) != len(keys):
            return [f"{view}: shape {data.numeric_names} x {len(data)}"]
        for i, key in enumerate(keys):
            status = Status(int(data.status[i])).name
            want, why = self.expected(view, key, status)
            if want is None:
                out.append(f"{view} {key}: {why}")
                continue
            want_num = np.array([float(want[n]) for n in numeric], np.float32)
            if not np.array_equal(data.numeric[i], want_num):
                out.append(f"{view} {key} {status}: numeric {data.numeric[i]} != {want_num}")
            for name, col in data.strings.items():
                if col[i] != want[name]:
                    out.append(f"{view} {key} {status} {name}: {col[i]!r} != {want[name]!r}")
            for name, mat in data.vectors.items():
                if not np.array_equal(mat[i], np.asarray(want[name], np.float32)):
                    out.append(f"{view} {key} {status} {name}: vector differs")
        return out

    def check_grpc_bundle(self, user: int, rooms: list[int], got: Bundle) -> list[str]:
        return (
            self.check_grpc_view("user_profile", [user], got.user["user_profile"])
            + self.check_grpc_view("room_stats", rooms, got.rooms["room_stats"])
            + self.check_grpc_view(
                "user_room_affinity", [(user, r) for r in rooms], got.pairs["user_room_affinity"]
            )
        )

    def request(self, rng: random.Random, n_rooms: int = 30) -> tuple[int, list[int]]:
        """A user and rooms: half the user's stored pairs (FOUND pairs), half random rooms."""
        user = rng.choice(self.users)
        mine = self.pairs_by_user.get(user, [])[: n_rooms // 2]
        rooms = list(dict.fromkeys(mine + rng.sample(self.rooms, n_rooms)))[:n_rooms]
        return user, rooms
