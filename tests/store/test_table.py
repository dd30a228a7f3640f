"""L1's table: the compiled `Table` (service/_table.h) against its specification
`native.PyTable`, and both against a plain model of what a cache may answer.

Random sequences of puts, batched gets, peeks, pops and clears run on all three. After
every step the compiled and the Python table must hold the same entries in the same
slots with the same reference bits and the same hand (they run one algorithm), and
every answer must be one the model allows: a hit is the value last put for that key,
not expired; an entry is gone only if it was popped, cleared or evicted, and only
puts of new keys into a full table evict.
"""

from __future__ import annotations

import gc
import os
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from service import native

compiled: Any = None
if not os.environ.get("LIVEFEAT_PURE_PYTHON"):
    from service import _native as compiled  # type: ignore[attr-defined,no-redef]

needs_compiled = pytest.mark.skipif(compiled is None, reason="Python loops asked for")
MISS = object()
# Few distinct keys over a small table: long probe chains, wrap-around at the end of
# the slots, evictions, and removals that shift chains back.
key_st = st.one_of(
    st.sampled_from([b"", b"a", b"b", b"lf:v1:room_stats:1", "\u00e9t\u00e9".encode()]),
    st.binary(max_size=6),
    st.integers(0, 40).map(lambda i: b"lf:v1:user_profile:%d" % i),
)
time_st = st.floats(-1e9, 1e9, allow_nan=False)


def tables(max_rows: int, sweep_limit: int = native.SWEEP_LIMIT) -> list[Any]:
    out = [native.PyTable(max_rows, sweep_limit)]
    if compiled is not None:
        out.append(compiled.Table(max_rows, sweep_limit))
    return out


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[Any] = []
        self.model: dict[bytes, tuple[float, object]] = {}

    @precondition(lambda self: not self.tables)
    @rule(max_rows=st.integers(1, 12), sweep_limit=st.sampled_from([0, 1, 2, 3, 1024]))
    def start(self, max_rows: int, sweep_limit: int) -> None:
        # Small sweep limits: puts into a full table of referenced entries evict one anyway.
        self.max_rows = max_rows
        self.tables = tables(max_rows, sweep_limit)

    @precondition(lambda self: self.tables)
    @rule(key=key_st, expires_at=time_st)
    def put(self, key: bytes, expires_at: float) -> None:
        value = object()
        evicted = {t.put(key, expires_at, value) for t in self.tables}
        assert len(evicted) == 1
        full_before = len(self.model) >= self.max_rows
        new = key not in self.model
        assert evicted == {1 if new and full_before else 0}
        self.model[key] = (expires_at, value)
        if evicted == {1}:  # drop from the model whatever the tables dropped
            held = {k for k, *_ in self.tables[0].items()}
            gone = set(self.model) - held
            assert len(gone) == 1 and key not in gone
            del self.model[gone.pop()]

    @precondition(lambda self: self.tables)
    @rule(keys=st.lists(key_st, max_size=70), now=time_st)
    def get_many(self, keys: list[bytes], now: float) -> None:
        want = [
            self.model[k][1] if k in self.model and self.model[k][0] > now else MISS for k in keys
        ]
        for t in self.tables:
            assert t.get_many(keys, now, MISS) == want

    @precondition(lambda self: self.tables)
    @rule(key=key_st)
    def peek(self, key: bytes) -> None:
        for t in self.tables:
            assert t.peek(key) == self.model.get(key)

    @precondition(lambda self: self.tables)
    @rule(key=key_st)
    def pop(self, key: bytes) -> None:
        for t in self.tables:
            assert t.pop(key) == (key in self.model)
        self.model.pop(key, None)

    @precondition(lambda self: self.tables)
    @rule()
    def clear(self) -> None:
        for t in self.tables:
            t.clear()
        self.model.clear()

    @invariant()
    def same_slots(self) -> None:
        if not self.tables:
            return
        first = self.tables[0]
        for t in self.tables:
            assert len(t) == len(self.model) <= self.max_rows
            assert (t.capacity, t.max_rows, t.hand, t.sweep_limit) == (
                first.capacity,
                first.max_rows,
                first.hand,
                first.sweep_limit,
            )
            assert t.items() == first.items()
        assert {k: (e, v) for k, e, v, _ in first.items()} == self.model


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


@given(
    max_rows=st.integers(1, 3000),
    keys=st.lists(st.integers(0, 10_000), max_size=6000),
    sweep_limit=st.sampled_from([0, 1, 5, 1024]),
)
@settings(max_examples=25, deadline=None)
def test_many_entries_give_the_same_table(max_rows: int, keys: list[int], sweep_limit: int) -> None:
    # Large tables, every third key read back (referenced), so the hand both clears
    # bits and evicts over long sweeps (and, with a small sweep limit, stops early).
    ts = tables(max_rows, sweep_limit)
    for n, i in enumerate(keys):
        key = b"lf:v1:user_room_affinity:%d:%d" % (i, i * 7)
        evicted = {t.put(key, float(n), i) for t in ts}
        assert len(evicted) == 1
        if n % 3 == 0:
            assert len({tuple(t.get_many([key], -1.0, MISS)) for t in ts}) == 1
    assert len({len(t) for t in ts}) == 1 and len(ts[0]) <= max_rows
    assert all(t.items() == ts[0].items() and t.hand == ts[0].hand for t in ts)


def test_a_read_entry_gets_a_second_chance() -> None:
    for t in tables(3):
        for k in (b"a", b"b", b"c"):
            assert t.put(k, 10.0, k) == 0
        t.get_many([b"a"], 0.0, MISS)
        assert t.put(b"d", 10.0, b"d") == 1
        held = {k for k, *_ in t.items()}
        assert {b"a", b"d"} <= held and len(held & {b"b", b"c"}) == 1
        # Only a hit marks an entry: an expired or absent key leaves the bits alone.
        t.get_many([b"b", b"c"], 99.0, MISS)
        assert [ref for k, _, _, ref in t.items() if k in (b"b", b"c")] == [False]


@pytest.mark.parametrize("sweep_limit", [0, 7, 1024])
def test_a_put_clears_at_most_sweep_limit_bits(sweep_limit: int) -> None:
    # Every entry of a full table referenced: an unbounded sweep would clear every bit
    # (one pass over the slots) before it evicted; a bounded one clears `sweep_limit`
    # and evicts the next entry, referenced as it is.
    n = 3000
    keys = [b"lf:v1:room_stats:%d" % i for i in range(n)]
    for t in tables(n, sweep_limit):
        for key in keys:
            t.put(key, 10.0, key)
        t.get_many(keys, 0.0, MISS)
        assert t.put(b"new", 10.0, b"new") == 1
        refs = [ref for k, _, _, ref in t.items() if k != b"new"]
        assert len(refs) == n - 1
        assert refs.count(False) == min(sweep_limit, n - 1)
    assert native.PyTable(1).sweep_limit == native.SWEEP_LIMIT
    if compiled is not None:
        assert compiled.Table(1).sweep_limit == native.SWEEP_LIMIT


def test_capacity_keeps_the_load_at_most_a_half() -> None:
    for max_rows, capacity in ((1, 8), (4, 8), (5, 16), (500_000, 1 << 20)):
        for t in tables(max_rows):
            assert (t.max_rows, t.capacity, len(t)) == (max_rows, capacity, 0)


@pytest.mark.parametrize("make", [native.PyTable, *([compiled.Table] if compiled else [])])
def test_bad_input_is_refused(make: Any) -> None:
    for bad in (0, -1, 2**40 + 1):
        with pytest.raises(ValueError, match="max_rows"):
            make(bad)
    with pytest.raises(ValueError, match="sweep_limit"):
        make(4, -1)
    t = make(4)

    class Key(bytes):
        pass

    for key in ("text", 1, None, bytearray(b"k"), Key(b"k")):
        with pytest.raises(TypeError, match="bytes"):
            t.put(key, 1.0, 1)
        with pytest.raises(TypeError, match="bytes"):
            t.get_many([b"k", key], 0.0, MISS)
        with pytest.raises(TypeError, match="bytes"):
            t.peek(key)
        with pytest.raises(TypeError, match="bytes"):
            t.pop(key)
    with pytest.raises(TypeError):
        t.put(b"k", "soon", 1)
    assert len(t) == 0  # nothing half-done


@needs_compiled
def test_a_value_released_by_the_table_may_use_the_table() -> None:
    t = compiled.Table(2)
    seen: list[Any] = []

    class Reenter:
        def __del__(self) -> None:
            seen.append((len(t), t.peek(b"k"), t.get_many([b"k", b"j"], 0.0, MISS)))
            t.put(b"fresh", 5.0, "x")

    t.put(b"k", 1.0, Reenter())
    t.put(b"k", 2.0, "replaced")  # the old value goes after the slot holds the new one
    assert seen[-1] == (1, (2.0, "replaced"), ["replaced", MISS])
    t.put(b"j", 3.0, Reenter())
    t.pop(b"j")
    t.put(b"j", 3.0, Reenter())
    t.clear()
    t.put(b"a", 1.0, Reenter())
    t.put(b"b", 1.0, 0)
    t.put(b"c", 1.0, 0)  # evicts one of them
    t.clear()  # releases the last Reenter if the eviction did not
    assert len(seen) == 4 and len(t) <= 1


@needs_compiled
def test_a_cycle_through_the_table_is_collected() -> None:
    class Value:
        pass

    t = compiled.Table(4)
    v = Value()
    v.table = t  # type: ignore[attr-defined]
    t.put(b"k", 1.0, v)
    gone = weakref.ref(v)
    del t, v
    gc.collect()
    assert gone() is None


@needs_compiled
def test_a_table_with_slots_mapped_on_their_own_is_the_same_table() -> None:
    # From 2 MB of slots (65,536) the compiled table maps its slots itself, on huge
    # pages where the kernel gives them (service/_table.h, slots_alloc): the same
    # answers, through evictions, a clear (a fresh mapping) and the release of both.
    max_rows = 40_000
    ts = tables(max_rows)
    assert ts[1].capacity * 32 >= 2 << 20
    released = []

    class Value:
        def __init__(self, i: int) -> None:
            self.i = i
            weakref.finalize(self, released.append, i)

    for n in range(max_rows + 5_000):  # 5,000 evictions
        key = b"lf:v1:room_stats:%d" % n
        assert len({t.put(key, 1e12, Value(n) if t is ts[1] else n) for t in ts}) == 1
        if n % 5 == 0:
            got = [t.get_many([key, b"lf:v1:room_stats:%d" % (n // 2)], 0.0, MISS) for t in ts]
            assert [v if v is MISS else v.i for v in got[1]] == got[0]
    assert len(released) == 5_000
    assert [(k, e, ref) for k, e, _, ref in ts[1].items()] == [
        (k, e, ref) for k, e, _, ref in ts[0].items()
    ]
    del got  # the last answer's values
    for t in ts:
        t.clear()
        assert len(t) == 0 and t.get_many([b"lf:v1:room_stats:1"], 0.0, MISS) == [MISS]
    gc.collect()
    assert len(released) == max_rows + 5_000
    big = ts[1]
    big.put(b"k", 1e12, Value(-1))
    del ts, big, t  # every reference to the table
    gc.collect()
    assert -1 in released
