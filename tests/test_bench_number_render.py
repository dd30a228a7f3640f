"""loadtest/number_render.py: the rendering of every shape of numbers it times is orjson's."""

from __future__ import annotations

from loadtest import number_render as numbers


def test_every_shape_renders_as_orjson_and_is_timed() -> None:
    rows = numbers.measure(count=2_000, repeat=2)
    assert [name for name, _, _ in rows] == list(numbers.SHAPES)
    assert all(same for _, _, same in rows)
    assert all(ns > 0 for _, ns, _ in rows)
