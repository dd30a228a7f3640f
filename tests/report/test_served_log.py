"""The served-feature log reader over files written here in the shared record format."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from service.core.registry import parse_registry
from service.errors import LivefeatError
from service.report.build import served_section
from service.report.served import ServedLog, read_served, served_files
from tests.report.dataset import REGISTRY, served_record


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_statuses_ages_and_values_are_folded(tmp_path: Path) -> None:
    t0 = 1_764_000_000_000
    records = [served_record(t0 + i * 1000, 5, "STALE" if i % 4 == 0 else "FOUND", i)
               for i in range(8)]  # fmt: skip
    path = write(tmp_path / "served-1.jsonl", [orjson.dumps(r) for r in records])
    read: list[int] = []
    log = read_served(served_files([tmp_path]), read.append)
    assert sum(read) == path.stat().st_size
    assert log.records == 8 and log.bad_lines == 0
    series = log.status_series("room_stats")
    assert series["width_s"] == 1 and series["STALE"] == [1, 0, 0, 0, 1, 0, 0, 0]
    assert log.values["room_stats.viewer_count"] == list(range(8))
    assert log.ages_ms["room_stats"] == [1000] * 8
    assert log.ages_ms["user_room_affinity"] == []  # -1: nothing stored was served
    assert log.views() == ["room_stats", "user_room_affinity"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not json: "),
        (b'{"format": 2, "time_ms": 1}', "not a format 1 record"),
        (b'{"format": 1, "time_ms": -5}', "time_ms"),
        (b'{"format": 1, "time_ms": 5, "rooms": {}}', "rooms: expected a list"),
        (b'{"format": 1, "time_ms": 5, "rooms": [{"status": []}]}', "status: expected an object"),
    ],
)
def test_bad_lines_are_counted_and_named(tmp_path: Path, line: bytes, reason: str) -> None:
    good = orjson.dumps(served_record(1_764_000_000_000, 1, "FOUND", 1))
    path = write(tmp_path / "served.jsonl", [good, line, b"", good])
    log = read_served([path], lambda _: None)
    assert log.records == 2 and log.bad_lines == 1
    assert log.errors[0].startswith(f"{path}:2: ") and reason in log.errors[0].lower()


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(LivefeatError, match=r"--served .*nope: no such file or directory"):
        served_files([tmp_path / "nope"])


def test_served_values_of_the_wrong_type_are_reported_not_fatal() -> None:
    registry = parse_registry(REGISTRY)
    good = served_record(1_764_000_000_000, 1, "FOUND", 5)
    bad = served_record(1_764_000_001_000, 2, "FOUND", 6)
    bad["rooms"][0]["features"]["room_stats.viewer_count"] = "many"
    bad["rooms"][0]["status"]["other_view"] = "FOUND"  # a view this registry does not know
    log = ServedLog()
    log.add(good)
    log.add(bad)
    figures: dict[str, str] = {}
    got = served_section(log, registry, figures)
    rooms = got["views"]["room_stats"]
    assert rooms["features"]["viewer_count"] == {
        "type": "int64", "error": "served values are not all int64"}  # fmt: skip
    assert got["views"]["other_view"]["known_view"] is False
    assert rooms["status"]["FOUND"] == 1.0
    assert {"served/room_stats", "served/other_view"} <= set(figures)
    assert all(svg.startswith("<svg") for svg in figures.values())
