"""The served-feature log: what rankers were actually given, over time.

`livefeat serve --log-served-dir DIR` writes JSON Lines files
(`served-YYYYMMDDTHHMMSS-<pid>.jsonl`), one record per sampled bundle answer:
`{"format": 1, "time_ms", "bundle", "user": entity, "rooms": [entity],
"pairs": [entity]}`, an entity being `{"id", "features": {"view.feature": v},
"status": {view: STATUS}, "age_ms": {view: ms or -1}}`.

`read_served` folds records into status counts per view and time bucket, and
keeps up to MAX_VALUES served values per feature (the first ones read) for
their distribution. Lines that are not such records are counted and the first
few reported (file:line: reason); they never stop the report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.errors import LivefeatError

FORMAT = 1
MAX_VALUES = 100_000
MAX_ERRORS_SHOWN = 5
# Bucket widths tried in order: the first that gives at most MAX_BUCKETS buckets.
BUCKET_WIDTHS_S = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 30


@dataclass
class ServedLog:
    """What the served log holds, folded for the report."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    bad_lines: int = 0
    errors: list[str] = field(default_factory=list)
    first_ms: int | None = None
    last_ms: int | None = None
    # (view, time_ms // 1000) -> status -> count
    per_second: dict[tuple[str, int], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    ages_ms: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    values: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))

    def add(self, record: Any) -> None:
        """Fold one record in. Raises ValueError naming what is wrong with it."""
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"not a format {FORMAT} record")
        time_ms = record.get("time_ms")
        if not isinstance(time_ms, int) or isinstance(time_ms, bool) or time_ms < 0:
            raise ValueError("time_ms: expected a non-negative integer")
        entities = [record.get("user"), *_list(record, "rooms"), *_list(record, "pairs")]
        checked = [_entity(e) for e in entities if e is not None]
        self.records += 1
        self.first_ms = time_ms if self.first_ms is None else min(self.first_ms, time_ms)
        self.last_ms = time_ms if self.last_ms is None else max(self.last_ms, time_ms)
        second = time_ms // 1000
        for features, status, ages in checked:
            for view, s in status.items():
                self.per_second[(view, second)][s] += 1
                age = ages.get(view, -1)
                if isinstance(age, int) and age >= 0 and len(self.ages_ms[view]) < MAX_VALUES:
                    self.ages_ms[view].append(age)
            for name, value in features.items():
                kept = self.values[name]
                if len(kept) < MAX_VALUES:
                    kept.append(value)

    def bucket_width_s(self) -> int:
        """The bucket width (s) for the status-over-time series."""
        if self.first_ms is None or self.last_ms is None:
            return BUCKET_WIDTHS_S[0]
        span_s = (self.last_ms - self.first_ms) / 1000 + 1
        return next((w for w in BUCKET_WIDTHS_S if span_s / w <= MAX_BUCKETS), BUCKET_WIDTHS_S[-1])

    def status_series(self, view: str) -> dict[str, Any]:
        """Status counts of `view` per time bucket: {"width_s", "start_ms": [..], STATUS: [..]}.

        Buckets start at the first record of the log; empty buckets are left out.
        """
        width = self.bucket_width_s()
        origin = (self.first_ms or 0) // 1000
        buckets: dict[int, Counter[str]] = defaultdict(Counter)
        for (v, second), counts in self.per_second.items():
            if v == view:
                buckets[origin + (second - origin) // width * width] += counts
        starts = sorted(buckets)
        statuses = ("FOUND", "STALE", "DEFAULTED", "UNAVAILABLE")
        out: dict[str, Any] = {"width_s": width, "start_ms": [s * 1000 for s in starts]}
        for s in statuses:
            out[s] = [buckets[b].get(s, 0) for b in starts]
        return out

    def views(self) -> list[str]:
        """Views seen in the log, sorted."""
        return sorted({v for v, _ in self.per_second})


def _list(record: dict[str, Any], name: str) -> list[Any]:
    got = record.get(name, [])
    if not isinstance(got, list):
        raise ValueError(f"{name}: expected a list")
    return got


def _entity(e: Any) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    if not isinstance(e, dict):
        raise ValueError("an entity is not an object")
    features, status, ages = e.get("features", {}), e.get("status", {}), e.get("age_ms", {})
    for name, part in (("features", features), ("status", status), ("age_ms", ages)):
        if not isinstance(part, dict):
            raise ValueError(f"{name}: expected an object")
    return features, status, ages


def served_files(paths: Sequence[Path]) -> list[Path]:
    """The log files named: files as given, directories' `*.jsonl`. Raises LivefeatError."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(path.glob("*.jsonl"))
        elif path.is_file():
            out.append(path)
        else:
            raise LivefeatError(f"--served {path}: no such file or directory")
    return out


def _lines(path: Path, progress: Callable[[int], Any]) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            progress(len(line))
            if line.strip():
                yield number, line


def _parse(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def read_served(files: Sequence[Path], progress: Callable[[int], Any]) -> ServedLog:
    """Fold every record of `files`; `progress` gets bytes read. Raises LivefeatError
    if a file cannot be read."""
    log = ServedLog(files=[str(f) for f in files])
    for path in files:
        try:
            for number, line in _lines(path, progress):
                try:
                    log.add(_parse(line))
                except ValueError as exc:
                    log.bad_lines += 1
                    if len(log.errors) < MAX_ERRORS_SHOWN:
                        log.errors.append(f"{path}:{number}: {exc}")
        except OSError as exc:
            raise LivefeatError(f"--served {path}: cannot read: {exc.strerror}") from exc
    return log
