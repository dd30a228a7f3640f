"""Two builds of the compiled module in one process, timed turn about.

A change to `service/_native.c` that saves a few percent is lost in the noise of a
shared machine when each build is timed in a run of its own. Loaded side by side
(the other tree's `.so`, built by its own `hatch_build.py`) and timed in alternating
rounds, both meet the same state of the machine; the median of each is then
comparable. Used by loadtest.l1_table and loadtest.row_passes (`--other DIR`).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

from service import native


def load(tree: Path) -> ModuleType:
    """The compiled module `service/_native*.so` of the livefeat tree at `tree`.
    ValueError if that tree has none (run its hatch_build.py)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = tree / "service" / f"_native{suffix}"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("_native", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise ValueError(f"{tree}: no compiled service/_native module; run its hatch_build.py")


def builds(other: Path | None) -> dict[str, ModuleType]:
    """{"this": service.native (this tree's compiled functions, or their Python
    definitions where not built)} and, with `other`, {"other": that tree's module}."""
    out = {"this": native}
    if other is not None:
        out["other"] = load(other)
    return out


def alternate(runs: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each run's figures over `rounds` rounds, the order of the runs reversed every
    other round."""
    names = list(runs)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            out[name].append(runs[name]())
    return out


def medians(figures: Mapping[str, list[float]]) -> str:
    """`this 12.3  other 14.5` (medians), and their ratio where both are there."""
    med = {name: statistics.median(values) for name, values in figures.items()}
    text = "  ".join(f"{name} {value:7.1f}" for name, value in med.items())
    if med.get("other"):
        text += f"  this/other {med['this'] / med['other']:.3f}"
    return text
