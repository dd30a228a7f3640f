"""loadtest/native_builds.py and loadtest/row_passes.py: another tree's compiled module
is loaded beside this one, and the passes row_passes times answer alike in both."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from loadtest import native_builds, row_passes
from service import native

ROOT = Path(__file__).resolve().parent.parent
needs_compiled = pytest.mark.skipif(native._native is None, reason="Python loops asked for")


def test_a_tree_without_a_build_is_refused(tmp_path: Path) -> None:
    (tmp_path / "service").mkdir()
    with pytest.raises(ValueError, match="hatch_build"):
        native_builds.load(tmp_path)


@needs_compiled
def test_the_timed_passes_answer_alike_through_either_build() -> None:
    mods = native_builds.builds(ROOT)  # this tree's build, loaded a second time
    rng = random.Random(1)
    rows = row_passes.pool(300, rng)
    pick = rng.sample(range(300), 50)
    chosen, ids = [rows[i] for i in pick], [i + 1 for i in pick]
    answers = {
        name: {p: fn(chosen, ids) for p, fn in row_passes.passes(mod, 50).items()}
        for name, mod in mods.items()
    }
    assert answers["this"] == answers["other"]
    _, _, ages, counts = answers["this"]["resolve"]
    assert counts == (50, 0, 0, 0) and ages == [row_passes.EVENT_TIME_MS - r[0] for r in chosen]
    assert answers["this"]["join_json"].startswith(b'{"rooms":[{"id":%d,' % ids[0])
    figures = native_builds.alternate({"this": lambda: 1.0, "other": lambda: 2.0}, 3)
    assert figures == {"this": [1.0] * 3, "other": [2.0] * 3}
    assert native_builds.medians(figures).endswith("this/other 0.500")
