"""The compiled loops (service/_native.c) against their Python definitions (service/native.py).

Both get the same generated inputs: ids at the limits of int64, keys of any bytes,
rows of every status at any age, JSON fragments with non-ASCII text; the outputs must
be equal (bytes for bytes), and malformed input must be refused by both.
"""

from __future__ import annotations

import os
from typing import Any

import hiredis
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import _native as compiled  # type: ignore[attr-defined]
from service import native
from service.core.status import Status
from service.store.base import UNAVAILABLE
from service.store.presence import PresenceFilter

INT64_MAX = 2**63 - 1
ids = st.lists(st.one_of(st.integers(0, INT64_MAX), st.sampled_from([0, 9, 10, INT64_MAX])),
               max_size=300)  # fmt: skip
STATUSES = (Status.FOUND, Status.STALE, Status.DEFAULTED, Status.UNAVAILABLE)


@pytest.mark.skipif(bool(os.environ.get("LIVEFEAT_PURE_PYTHON")), reason="Python loops asked for")
def test_the_build_made_the_compiled_module_and_it_serves() -> None:
    # The install compiles it (hatch_build.py); CI must not quietly run the Python loops.
    assert native.IMPLEMENTATION == "compiled"
    assert native.keys is compiled.keys


@given(prefix=st.binary(max_size=40), id_list=ids, suffix=st.binary(max_size=5))
def test_keys_are_the_same(prefix: bytes, id_list: list[int], suffix: bytes) -> None:
    assert compiled.keys(prefix, id_list, suffix) == native.py_keys(prefix, id_list, suffix)


def test_keys_refuse_what_is_not_an_id() -> None:
    # Ids are checked before keys are built (core/validate.py); a bad one is refused.
    for bad in ([-1], [2**63], [1.0], ["1"], [None]):
        with pytest.raises((TypeError, ValueError, OverflowError)):
            compiled.keys(b"p:", bad, b"")
    with pytest.raises(TypeError):
        compiled.keys(b"p:", (1, 2), b"")


@given(stored=st.lists(st.binary(max_size=30), max_size=200),
       probes=st.lists(st.binary(max_size=30), max_size=200))  # fmt: skip
def test_bloom_lookups_are_the_same(stored: list[bytes], probes: list[bytes]) -> None:
    bloom = PresenceFilter([b""], capacity=max(len(stored), 1) // 4 + 1)
    bloom.add(stored)
    asked = probes + stored
    got = compiled.maybe_stored(bloom._array, bloom.bits, asked)
    assert got == native.py_maybe_stored(bloom._array, bloom.bits, asked)
    assert set(range(len(probes), len(asked))) <= set(got)  # every stored key may be there
    assert got == sorted(set(got))


def test_bloom_refuses_a_short_array() -> None:
    with pytest.raises(ValueError, match="shorter"):
        compiled.maybe_stored(np.zeros(2, dtype=np.uint8), 17, [b"k"])


MISS = object()


@given(values=st.lists(st.sampled_from([MISS, None, 0, b"", (1, b"{}")]), max_size=300))
def test_misses_are_the_same(values: list[Any]) -> None:
    got = compiled.misses(values, MISS)
    assert got == native.py_misses(values, MISS)
    assert [values[i] is MISS for i in got] == [True] * len(got)
    assert len(got) == sum(v is MISS for v in values)


DECODERS = (object(), object(), object())


@given(
    answer=st.lists(
        st.tuples(st.binary(max_size=12), st.one_of(st.none(), st.binary(max_size=20)),
                  st.sampled_from(DECODERS)),
        max_size=200,
    )
)  # fmt: skip
def test_a_tier_answer_is_grouped_the_same(answer: list[tuple[bytes, bytes | None, Any]]) -> None:
    decoder_of = {key: decoder for key, _, decoder in answer}
    keys = list(decoder_of)  # one value per key, as a tier answers
    values = [next(v for k, v, _ in answer if k == key) for key in keys]
    still, groups = compiled.group(keys, values, decoder_of)
    want = native.py_group(keys, values, decoder_of)
    assert (still, groups) == want and list(groups) == list(want[1])  # the same order
    assert still == [k for k, v in zip(keys, values, strict=True) if v is None]
    for decoder, (group_keys, group_values) in groups.items():
        assert all(decoder_of[k] is decoder for k in group_keys)
        assert group_values == [values[keys.index(k)] for k in group_keys]
    assert sum(len(k) for k, _ in groups.values()) + len(still) == len(keys)


def test_grouping_refuses_a_key_without_decoder_or_unequal_lengths() -> None:
    for group in (compiled.group, native.py_group):
        with pytest.raises(KeyError):
            group([b"a", b"b"], [b"1", b"2"], {b"a": DECODERS[0]})
        with pytest.raises(ValueError, match="length"):
            group([b"a"], [], {b"a": DECODERS[0]})
    with pytest.raises(TypeError):
        compiled.group((b"a",), [b"1"], {b"a": DECODERS[0]})


@given(data=st.data(), keys=st.lists(st.binary(max_size=12), max_size=150))
def test_misses_are_picked_and_put_back_the_same(data: st.DataObject, keys: list[bytes]) -> None:
    decoders = [DECODERS[len(k) % 3] for k in keys]
    at = data.draw(st.lists(st.integers(0, len(keys) - 1), max_size=150)) if keys else []
    missed = compiled.pick(keys, decoders, at)
    assert missed == native.py_pick(keys, decoders, at) == {keys[i]: decoders[i] for i in at}
    assert list(missed) == list(dict.fromkeys(keys[i] for i in at))  # the order of `at`
    found = {key: (len(key), key) for key in missed}
    out, want = [MISS] * len(keys), [MISS] * len(keys)
    assert compiled.put_back(out, at, keys, found) is None
    native.py_put_back(want, at, keys, found)
    assert out == want
    assert all(out[i] == (len(keys[i]), keys[i]) for i in at)
    assert all(out[i] is MISS for i in set(range(len(keys))) - set(at))


def test_pick_and_put_back_refuse_bad_indexes_and_missing_keys() -> None:
    for pick in (compiled.pick, native.py_pick):
        with pytest.raises(IndexError):
            pick([b"a"], [1], [1])
        with pytest.raises(IndexError):
            pick([b"a", b"b"], [1], [1])  # past the shorter list
    for put_back in (compiled.put_back, native.py_put_back):
        with pytest.raises(KeyError):
            put_back([MISS], [0], [b"a"], {b"b": 1})
        with pytest.raises(IndexError):
            put_back([MISS], [1], [b"a", b"b"], {b"b": 1})
    with pytest.raises(IndexError):
        compiled.pick([b"a"], [1], [-1])  # an index, not a position from the end
    with pytest.raises(TypeError, match="list"):
        compiled.pick((b"a",), [1], [0])
    with pytest.raises(TypeError, match="dict"):
        compiled.put_back([MISS], [0], [b"a"], [(b"a", 1)])


FLIGHTS = (object(), object())


@given(
    held=st.dictionaries(st.binary(max_size=4), st.sampled_from(FLIGHTS), max_size=40),
    wanted=st.dictionaries(st.binary(max_size=4), st.sampled_from(DECODERS), max_size=40),
    ended=st.lists(st.binary(max_size=4), max_size=40),
)
def test_flights_are_claimed_and_released_the_same(
    held: dict[bytes, Any], wanted: dict[bytes, Any], ended: list[bytes]
) -> None:
    flight = object()
    flights, py_flights = dict(held), dict(held)
    mine, others = compiled.claim(flights, wanted, flight)
    want_mine, want_others = native.py_claim(py_flights, wanted, flight)
    assert (mine, others, flights) == (want_mine, want_others, py_flights)
    assert list(mine) == list(want_mine) and list(flights) == list(py_flights)
    assert others == {k: held[k] for k in wanted if k in held}
    assert mine == {k: d for k, d in wanted.items() if k not in held}
    assert (mine is wanted) == (not others)  # no copy when nothing is under way
    assert all(flights[k] is flight for k in mine)
    keys = dict.fromkeys([*mine, *ended])
    compiled.release(flights, keys, flight)
    native.py_release(py_flights, keys, flight)
    assert flights == py_flights == {k: f for k, f in held.items() if k not in mine}


def test_claim_and_release_refuse_what_is_not_a_dict() -> None:
    with pytest.raises(TypeError, match="dict"):
        compiled.claim([], {}, object())
    with pytest.raises(TypeError, match="dict"):
        compiled.release({}, [b"a"], object())


@given(args=st.lists(st.binary(max_size=600), max_size=120))
def test_a_redis_command_is_packed_as_hiredis_packs_it(args: list[bytes]) -> None:
    want = hiredis.pack_command(tuple(args)) if args else b"*0\r\n"
    assert compiled.resp_command(args) == native.py_resp_command(args) == want
    assert compiled.resp_command(tuple(args)) == want


def test_a_redis_command_of_anything_but_bytes_is_refused() -> None:
    for bad in ([b"GET", "k"], [b"GET", 1], [b"GET", bytearray(b"k")]):
        for pack in (compiled.resp_command, native.py_resp_command):
            with pytest.raises(TypeError):
                pack(bad)
    with pytest.raises(TypeError):
        compiled.resp_command(b"GET")


def test_misses_refuse_what_is_not_a_list() -> None:
    with pytest.raises(TypeError, match="list"):
        compiled.misses((MISS,), MISS)


BARE = (1, (b"stored",), b"", (), ())


@given(st.lists(st.sampled_from([MISS, None, 0, b"", (), (1,), (1, b"{}"), BARE]), max_size=300))
def test_unrendered_rows_are_the_same(values: list[Any]) -> None:
    got = compiled.unrendered(values)
    assert got == native.py_unrendered(values)
    assert got == [i for i, v in enumerate(values) if v is BARE]


def test_unrendered_refuses_what_is_not_a_list() -> None:
    with pytest.raises(TypeError, match="list"):
        compiled.unrendered((BARE,))


ROW_DEFAULT = (0, b'"d":1', b"", (), ())
rows = st.lists(
    st.one_of(
        st.none(),
        st.just(UNAVAILABLE),
        st.builds(lambda t: (t, b"{}", b"", (), ()), st.integers(0, 2**48 - 1)),
    ),
    max_size=200,
)


@given(got=rows, now=st.integers(0, 2**48), max_age=st.integers(0, 2**40))
def test_statuses_and_ages_are_the_same(got: list[Any], now: int, max_age: int) -> None:
    a = compiled.resolve(got, now, max_age, ROW_DEFAULT, UNAVAILABLE, STATUSES)
    b = native.py_resolve(got, now, max_age, ROW_DEFAULT, UNAVAILABLE, STATUSES)
    assert a == b
    assert [type(s) for s in a[1]] == [Status] * len(got)  # the enum members themselves
    assert (a[0] is got) == (b[0] is got)
    assert sum(a[3]) == len(got)


def test_resolve_refuses_a_row_without_an_event_time() -> None:
    with pytest.raises(TypeError):
        compiled.resolve([("x",)], 0, 0, ROW_DEFAULT, UNAVAILABLE, STATUSES)
    with pytest.raises(TypeError):
        compiled.resolve([object()], 0, 0, ROW_DEFAULT, UNAVAILABLE, STATUSES)


json_text = st.text(max_size=40).map(lambda s: f'"f":"{s.replace(chr(34), "")}"'.encode())
STATUS_JSON = {s: b'"v":"%s"' % s.name.encode() for s in Status}


@given(
    prefix=st.sampled_from([b"", b"[7,", b"[9223372036854775807,"]),
    sections=st.lists(
        st.lists(st.tuples(st.integers(0, INT64_MAX), json_text, st.sampled_from(STATUSES)),
                 max_size=150),
        max_size=3,
    ),
    literals=st.lists(st.binary(max_size=20), min_size=4, max_size=4),
    suffix=st.sampled_from([b"", b"]"]),
)  # fmt: skip
def test_answers_are_the_same_bytes(
    prefix: bytes,
    sections: list[list[tuple[int, bytes, Status]]],
    literals: list[bytes],
    suffix: bytes,
) -> None:
    parts: list[Any] = [literals[0]]
    for k, data in enumerate(sections):
        rows = [(0, j, b"", (), ()) for _, j, _ in data]
        ids, statuses = [i for i, _, _ in data], [s for _, _, s in data]
        parts += [(prefix, ids, suffix, rows, statuses, STATUS_JSON, 1), literals[k + 1]]
    assert compiled.join_json(parts) == native.py_join_json(parts)


def test_answers_refuse_inconsistent_input() -> None:
    row = (0, b"{}", b"", (), ())

    def join(*section: Any) -> bytes:
        return bytes(compiled.join_json([b"{", section, b"}"]))

    with pytest.raises(ValueError, match="length"):
        join(b"", [1, 2], b"", [row], [Status.FOUND], STATUS_JSON, 1)
    with pytest.raises(KeyError):
        join(b"", [1], b"", [row], [99], STATUS_JSON, 1)
    with pytest.raises(TypeError):
        join(b"", [1], b"", [(0, "not bytes")], [Status.FOUND], STATUS_JSON, 1)
    with pytest.raises(TypeError):
        join(b"", [1], b"", [row], [Status.FOUND], STATUS_JSON, 9)
    with pytest.raises(TypeError, match="section"):
        compiled.join_json([b"{", (b"", [1]), b"}"])
    with pytest.raises(TypeError):
        compiled.join_json((b"not a list",))


# A gRPC view block: rows carry numeric bytes, vector bytes per column, string entries.
block_rows = st.integers(0, 3).flatmap(
    lambda n_strings: st.integers(0, 2).flatmap(
        lambda n_vectors: st.lists(
            st.tuples(
                st.binary(max_size=40),
                st.tuples(*[st.binary(max_size=70) for _ in range(n_vectors)]),
                st.tuples(*[st.binary(max_size=150) for _ in range(n_strings)]),
            ),
            max_size=120,
        ).map(lambda rows: (n_strings, n_vectors, rows))
    )
)


@given(data=block_rows, ages=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=120))
def test_view_blocks_are_the_same_bytes(
    data: tuple[int, int, list[tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]]]],
    ages: list[int],
) -> None:
    n_strings, n_vectors, raw = data
    rows = [(0, b"", numeric, vectors, strings) for numeric, vectors, strings in raw]
    statuses = [STATUSES[i % 4] for i in range(len(rows))]
    ages = (ages + [-1] * len(rows))[: len(rows)]
    heads = [b"\x0a\x01s" for _ in range(n_strings)]
    vheads = [b"\x0a\x01v\x10\x03" for _ in range(n_vectors)]
    args = (b"\x0a\x04view", heads, vheads, rows, statuses, ages, (2, 3, 4))
    assert compiled.view_block(*args) == native.py_view_block(*args)


def test_a_view_block_parses_as_the_generated_message() -> None:
    from service._gen.livefeat.v1 import livefeat_pb2 as pb

    rows = [
        (0, b"", b"\x00\x00\x80?", (b"\x01\x02\x03\x04",), (b"\x12\x03abc", b"\x12\x00")),
        (0, b"", b"\x00\x00\x00@", (b"\x05\x06\x07\x08",), (b"\x12\x03\xc3\xa9t", b"\x12\x01z")),
    ]
    head = b"\x0a\x01v" + b"\x12\x01n"
    heads = [b"\x0a\x01a", b"\x0a\x01b"]
    vheads = [b"\x0a\x01e\x10\x01"]
    got = compiled.view_block(head, heads, vheads, rows,
                              [Status.FOUND, Status.UNAVAILABLE], [5, -1], (2, 3, 4))  # fmt: skip
    block = pb.ViewBlock.FromString(got)
    assert block.view == "v" and list(block.numeric_names) == ["n"]
    assert block.numeric == b"\x00\x00\x80?\x00\x00\x00@"
    assert [(c.name, list(c.values)) for c in block.strings] == [
        ("a", ["abc", "ét"]),
        ("b", ["", "z"]),
    ]
    assert [(c.name, c.dim, c.values) for c in block.vectors] == [
        ("e", 1, b"\x01\x02\x03\x04\x05\x06\x07\x08")
    ]
    assert list(block.status) == [1, 4] and list(block.age_ms) == [5, -1]
    empty = compiled.view_block(head, [], [], [], [], [], (2, 3, 4))
    assert empty == pb.ViewBlock(view="v", numeric_names=["n"]).SerializeToString() + b"\x1a\x00"


def test_view_block_refuses_malformed_rows() -> None:
    with pytest.raises(TypeError):
        compiled.view_block(b"", [b""], [], [(0, b"", b"", (), ())], [1], [0], (2, 3, 4))
    with pytest.raises(TypeError):
        compiled.view_block(b"", [], [], [(0, b"", "text", (), ())], [1], [0], (2, 3, 4))
    with pytest.raises(TypeError):
        compiled.view_block(b"", [], [], [(0,)], [1], [0], (2, 3, 4))


FILLS = st.lists(
    st.tuples(st.binary(max_size=12), st.binary(max_size=20) | st.sampled_from([b"", b"\0" * 8])),
    max_size=40,
)


@given(keys=st.integers(1, 40), steps=st.lists(st.tuples(st.booleans(), FILLS), max_size=12),
       data=st.data())  # fmt: skip
def test_the_fill_memo_is_the_same_compiled_in_python_and_as_a_dict(
    keys: int, steps: list[tuple[bool, list[tuple[bytes, bytes]]]], data: st.DataObject
) -> None:
    """`unwritten` and `remember` compiled against their Python definitions (the same
    bytes of memory after every step) and against a dict of key -> header."""
    compiled_memo, python_memo = native.memo(keys), native.memo(keys)
    model: dict[bytes, bytes] = {}
    for write, items in steps:
        # some items carry the very header remembered for their key (already written)
        for key, head in list(model.items())[:10]:
            if data.draw(st.booleans()):
                items.append((key, head + data.draw(st.binary(max_size=6))))
        got = compiled.unwritten(compiled_memo, items)
        assert got == native.py_unwritten(python_memo, items)
        assert got == [(k, v) for k, v in items if len(v) < 8 or model.get(k) != v[:8]]
        if write:
            new = {k for k, v in items if len(v) >= 8 and k not in model}
            if len(model) + len(new) > keys:  # the caller starts again (writebehind.py)
                compiled_memo, python_memo, model = native.memo(keys), native.memo(keys), {}
                items = items[-keys:]
            added = compiled.remember(compiled_memo, items)
            assert added == native.py_remember(python_memo, items)
            assert added == len({k for k, v in items if len(v) >= 8 and k not in model})
            model.update((k, v[:8]) for k, v in items if len(v) >= 8)
        assert compiled_memo == python_memo


def test_a_memo_too_full_is_refused_not_overrun() -> None:
    memo = native.memo(1)  # two slots
    items = [(b"a", b"12345678"), (b"b", b"12345678"), (b"c", b"12345678")]
    for remember in (compiled.remember, native.py_remember):
        with pytest.raises(ValueError, match="full"):
            remember(bytearray(memo), items)


def test_unwritten_refuses_what_is_not_a_fill() -> None:
    for fn in (compiled.unwritten, compiled.remember, native.py_unwritten, native.py_remember):
        for bad in ([(b"k",)], [(b"k", "text")], [("k", b"12345678")], [b"kv"], [([], b"v")]):
            with pytest.raises((TypeError, ValueError)):
                fn(native.memo(4), bad)
    for bad_memo in ({}, bytearray(48), bytearray(0), b"\0" * 32):
        with pytest.raises((TypeError, ValueError)):
            compiled.unwritten(bad_memo, [])
