"""The compiled row decoder and its number formatting (service/_native.c, _shortest.h).

The reference is orjson: a row decoded by the compiled code must carry the JSON that
ViewCodec.decode_row_python (orjson) renders, byte for byte, so that an HTTP answer
does not depend on which decoder a row went through. Floats are drawn as raw bit
patterns (every exponent, subnormals, neighbours of powers of two and ten), strings
with every control character, quotes and text outside the BMP. scripts/check_floats.py
checks every float32 (too slow for CI).
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import _native as compiled  # type: ignore[attr-defined]
from service.core.codec import CorruptValue, Feature, ViewCodec
from service.stored import header

NUMPY = orjson.OPT_SERIALIZE_NUMPY


def orjson_of(values: np.ndarray) -> bytes:
    return orjson.dumps(values, option=NUMPY)


def edge_values(dtype: type[np.floating]) -> np.ndarray:
    """Powers of two and of ten, the extremes, and the neighbours of each, both signs."""
    info = np.finfo(dtype)
    low, high = int(np.log2(info.smallest_subnormal)), int(np.log2(info.max)) + 1
    with np.errstate(over="ignore", under="ignore"):
        base = [np.ldexp(m, e) for e in range(low, high) for m in (1.0, 1.5, 1.9999999)]
        base += [float(f"{m}e{k}") for k in range(-330, 310) for m in (1, 5, 9, 123456789)]
        base += [info.max, info.tiny, info.smallest_subnormal, 2.0**52, 2.0**53, 2.0**24, 0.1]
        values = np.array(base, dtype=np.float64).astype(dtype)
        values = values[np.isfinite(values) & (values != 0)]
        up, down = np.nextafter(values, dtype(np.inf)), np.nextafter(values, dtype(-np.inf))
        out = np.concatenate([values, up, down])
    out = out[np.isfinite(out)]
    return np.concatenate([out, -out, np.array([0.0, -0.0], dtype=dtype)])


@pytest.mark.parametrize("dtype,width", [(np.float32, 4), (np.float64, 8)])
def test_numbers_at_the_edges_are_written_as_orjson_writes_them(dtype: type, width: int) -> None:
    values = edge_values(dtype)
    assert compiled.json_numbers(values.tobytes(), width) == orjson_of(values)


@pytest.mark.parametrize(
    "dtype,width,bits", [(np.float32, 4, np.uint32), (np.float64, 8, np.uint64)]
)
def test_random_bit_patterns_are_written_as_orjson_writes_them(
    dtype: type, width: int, bits: type
) -> None:
    rng = np.random.default_rng(20261206)
    raw = rng.integers(0, np.iinfo(bits).max, 400_000, dtype=bits, endpoint=True).view(dtype)
    values = raw[np.isfinite(raw)]
    assert compiled.json_numbers(values.tobytes(), width) == orjson_of(values)


@pytest.mark.parametrize("dtype,width", [(np.float32, 4), (np.float64, 8)])
def test_numbers_with_few_digits_are_written_as_orjson_writes_them(dtype: type, width: int) -> None:
    """Values whose shortest decimal is far shorter than their width's (2 decimals, an
    integer, a dyadic fraction like 0.25): the formatter drops many digits, 8, 4, 2 and 1
    at a time (service/_shortest.h), where random bit patterns drop one or two."""
    rng = np.random.default_rng(20261207)
    parts = []
    for digits in range(1, 18):  # every count of significant digits a double can need
        mantissas = rng.integers(1, 10**digits, 2_000, dtype=np.int64)
        parts.append(mantissas * 10.0 ** rng.integers(-30, 30, 2_000))
    parts.append(np.round(rng.random(20_000) * 1000, 2))
    parts.append(np.floor(rng.random(20_000) * 2.0 ** rng.integers(1, 64, 20_000)))
    parts.append(rng.integers(-(2**20), 2**20, 20_000) / 2.0 ** rng.integers(0, 60, 20_000))
    with np.errstate(over="ignore"):
        values = np.concatenate(parts).astype(dtype)
    values = values[np.isfinite(values)]
    assert compiled.json_numbers(values.tobytes(), width) == orjson_of(values)


@given(st.lists(st.floats(width=32), max_size=50), st.lists(st.floats(), max_size=50))
def test_drawn_numbers_and_non_finite_ones_are_written_as_orjson_writes_them(
    floats: list[float], doubles: list[float]
) -> None:
    f, d = np.array(floats, dtype=np.float32), np.array(doubles, dtype=np.float64)
    assert compiled.json_numbers(f.tobytes(), 4) == orjson_of(f)  # nan, inf: null
    assert compiled.json_numbers(d.tobytes(), 8) == orjson_of(d)


def test_json_numbers_refuses_a_bad_width() -> None:
    for data, width in ((b"\0" * 8, 2), (b"\0" * 6, 4), (b"\0" * 12, 8)):
        with pytest.raises(ValueError, match="width"):
            compiled.json_numbers(data, width)


VIEW = [
    Feature("n", "int64", 0, 0),
    Feature("s", "string", 0, ""),
    Feature("x", "double", 0, 0.0),
    Feature("v", "float_vector", 3, [0.0] * 3),
    Feature("f", "float", 0, 0.0),
    Feature("b", "bool", 0, False),
    Feature("t", "string", 0, ""),
]


def test_every_control_character_quote_and_non_ascii_text_is_escaped_as_orjson_does() -> None:
    codec = ViewCodec("v", VIEW)
    text = "".join(map(chr, range(0x80))) + '"\\/é\u2028\u2029\ufeff😀\U0010ffff'
    values = {"n": -(2**63), "s": text, "x": -0.0, "v": [1e-45, 3.4028235e38, -0.1],
              "f": 16777217.0, "b": True, "t": ""}  # fmt: skip
    raw = codec.encode(2**48 - 1, values)
    row = codec.decode_row(raw)
    assert row == codec.decode_row_python(raw) == codec.decode_row_reference(raw)
    assert orjson.loads(b"{" + row[1] + b"}")["v.s"] == text


def test_integers_of_every_length_are_written_as_orjson_writes_them() -> None:
    """int64 features: the compiled code writes up to 16 digits without a digit loop
    (service/_shortest.h, put_digits) and longer ones with it; each side of every
    length, zero and the extremes, both signs."""
    codec = ViewCodec("v", [Feature("n", "int64", 0, 0)])
    edges = {0, 1, -1, 2**63 - 1, -(2**63)}
    for k in range(1, 19):
        edges |= {10**k - 1, 10**k, 10**k + 1, -(10**k - 1), -(10**k), -(10**k + 1)}
    rng = np.random.default_rng(20261208)
    drawn = rng.integers(-(2**63), 2**63 - 1, 2_000, dtype=np.int64, endpoint=True)
    scaled = drawn >> rng.integers(0, 63, 2_000)  # every magnitude
    raws = [codec.encode(7, {"n": int(n)}) for n in sorted(edges) + scaled.tolist()]
    rows = compiled.decode_rows(codec._layout, raws)
    assert rows == [codec.decode_row_python(raw) for raw in raws]


@pytest.mark.parametrize("bits", [0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FC00000, 0x7F800000])
def test_a_stored_nan_or_inf_float_gives_the_numeric_row_python_gives(bits: int) -> None:
    # A float feature holding a signalling NaN (damaged or written by another tool):
    # Python's struct round trip through a double makes it quiet; so must the compiled
    # decoder (hypothesis found the difference).
    codec = ViewCodec("v", [Feature("f", "float", 0, 0.0), Feature("x", "double", 0, 0.0)])
    raw = bytearray(codec.encode(7, {"f": 1.0, "x": 2.0}))
    at = raw.index(np.float32(1.0).tobytes())
    raw[at : at + 4] = bits.to_bytes(4, "little")
    row = compiled.decode_rows(codec._layout, [bytes(raw)])[0]
    assert row is not None and row == codec.decode_row_python(bytes(raw))


@pytest.mark.parametrize(
    "text",
    [
        b"\xed\xa0\x80",
        b"\xc0\x80",
        b"\xf4\x90\x80\x80",
        b"\xe0\x80\x80",
        b"\xff",
        b"a\xc3",
        b"\x80",
    ],
    ids=[
        "surrogate",
        "overlong-2",
        "beyond-10ffff",
        "overlong-3",
        "ff",
        "cut-short",
        "lone-continuation",
    ],
)
def test_text_python_refuses_is_left_to_python_which_refuses_it(text: bytes) -> None:
    codec = ViewCodec("v", [Feature("s", "string", 0, "")])
    raw = header(codec.version, 5) + len(text).to_bytes(2, "little") + text
    assert compiled.decode_rows(codec._layout, [raw]) == [None]
    with pytest.raises(CorruptValue, match="UTF-8"):
        codec.decode_row(raw)
    assert isinstance(codec.decode_rows([raw] * 40)[0], CorruptValue)


def test_a_served_section_is_filled_in_and_damaged_ones_are_left_to_python() -> None:
    codec = ViewCodec("v", VIEW, served=True)  # values with a served section
    values = {"n": 1, "s": "a", "x": 0.5, "v": [1.0, 2.0, 3.0], "f": 0.25, "b": False, "t": "é"}
    with_section = codec.encode(7, values)
    plain = ViewCodec("v", VIEW).encode(7, values)
    assert with_section.startswith(plain)
    section = with_section[len(plain) :]
    other_layout = ViewCodec("w", VIEW[:2]).encode(7, {"n": 1, "s": "a"})
    # The section's values are served as they are (the Python fills its template).
    forged = plain + section.replace(b"0.5", b"0.75")
    got = compiled.decode_rows(codec._layout, [with_section, plain, forged, other_layout, 5])
    assert got[0] == codec.decode_row_python(with_section) == codec.decode_row_reference(plain)
    assert got[1] == codec.decode_row_reference(plain)
    assert got[2] == codec.decode_row_python(forged) and b'"v.x":0.75' in got[2][1]
    assert got[3] is None and got[4] is None
    damaged = [
        plain + section[:-1],  # no closing mark
        plain + section[1:],  # no opening mark
        plain + b"\x1e",  # one mark alone
        plain + section[:5] + b"\x1e" + section[5:],  # a mark inside
        plain + section.replace(b"\x1f", b",", 1),  # one value short
        plain + section[:-1] + b"\x1f1\x1e",  # one value too many
        plain[:-1] + section,  # the last string cut short
    ]
    assert compiled.decode_rows(codec._layout, damaged) == [None] * len(damaged)
    for raw in damaged:
        with pytest.raises(CorruptValue):
            codec.decode_row(raw)


@pytest.mark.parametrize("shift", range(8))
def test_each_byte_of_a_section_is_read_wherever_it_falls_in_a_word(shift: int) -> None:
    """The compiled decoder reads a section eight bytes at a time: a mark, a separator
    or any other byte put at each place of the section (the strings before it shift
    where the words start) gives the row the Python gives, or is left to it to refuse."""
    codec = ViewCodec("v", VIEW, served=True)
    values = {"n": -1, "s": "é" * shift, "x": 1e300, "v": [1.5, -0.0, 3.25], "f": 0.1,
              "b": True, "t": "x" * 9}  # fmt: skip
    stored = codec.encode(7, values)
    start = stored.index(b"\x1e")
    damaged = [
        stored[:at] + bytes([byte]) + stored[at + 1 :]
        for at in range(start + 1, len(stored) - 1)
        for byte in (0x00, 0x05, 0x1E, 0x1F, 0x20, 0x7F, 0x80, 0x9F, 0xFF)
    ]
    got = compiled.decode_rows(codec._layout, [stored, *damaged])
    assert got[0] == codec.decode_row_python(stored)
    for raw, row in zip(damaged, got[1:], strict=True):
        try:
            want = codec.decode_row_python(raw)
        except CorruptValue:
            assert row is None, raw
        else:
            assert row == want, raw


def test_a_malformed_layout_is_refused() -> None:
    spec = ViewCodec("v", VIEW)._compiled_spec()
    for bad in (
        spec[:5],
        (*spec[:2], b"qz", *spec[3:]),
        (spec[0], spec[1] + 1, *spec[2:]),
        (*spec[:5], ((b'"x":', 0, 99),)),
        (*spec[:5], ((b'"x":', 3, 0),)),
        (*spec[:5], (("x", 0, 0),)),
    ):
        with pytest.raises(ValueError, match="bad layout"):
            compiled.layout(bad)
    with pytest.raises(TypeError, match="layout"):
        compiled.decode_rows(spec, [])  # the spec itself, not its parsed layout
