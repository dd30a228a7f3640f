"""What `livefeat report` is asked for, checked before any heavy import or I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from service.core.registry import Registry
from service.errors import LivefeatError


@dataclass(frozen=True)
class ReportOptions:
    """What `livefeat report` was asked for. Raises LivefeatError for a sample under 1."""

    out: Path
    offline: dict[str, Path] = field(default_factory=dict)
    served: list[Path] = field(default_factory=list)
    sample: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sample < 1:
            raise LivefeatError(f"--sample {self.sample}: expected at least 1")


def parse_offline(specs: list[str] | None, registry: Registry) -> dict[str, Path]:
    """`VIEW=FILE.parquet` flags as {view: path}. Raises LivefeatError naming the flag."""
    out: dict[str, Path] = {}
    for spec in specs or []:
        view, sep, path = spec.partition("=")
        if not sep or not view or not path:
            raise LivefeatError(f"--offline {spec!r}: expected VIEW=FILE.parquet")
        if view not in registry.views:
            raise LivefeatError(f"--offline {spec!r}: no view {view!r} in {registry.path}")
        out[view] = Path(path)
    return out
