from service.store.l1 import MISS, L1Cache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hit_miss_and_cached_absent() -> None:
    l1: L1Cache[str] = L1Cache(10, 5.0, Clock())
    l1.put_many([(b"a", "A"), (b"b", None)])
    assert l1.get_many([b"a", b"b", b"c"]) == ["A", None, MISS]


def test_entries_expire_after_ttl() -> None:
    clock = Clock()
    l1: L1Cache[str] = L1Cache(10, 5.0, clock, rng=lambda: 0.0)
    l1.put_many([(b"a", "A")])
    clock.now += 4.9
    assert l1.get_many([b"a"]) == ["A"]
    clock.now += 0.2
    assert l1.get_many([b"a"]) == [MISS]


def test_size_bound_evicts_an_entry_not_read_since_the_hand_passed() -> None:
    # CLOCK (tests/store/test_table.py): a read entry gets a second chance.
    l1: L1Cache[int] = L1Cache(3, 60.0, Clock())
    l1.put_many([(b"a", 1), (b"b", 2), (b"c", 3)])
    l1.get_many([b"a"])
    l1.put_many([(b"d", 4)])
    assert len(l1) == 3
    assert l1.evictions == 1
    got = l1.get_many([b"a", b"b", b"c", b"d"])
    assert got[0] == 1 and got[3] == 4
    assert got[1:3] in ([2, MISS], [MISS, 3])
    l1.put_many([(b"d", 5)])  # replacing evicts nothing
    assert l1.evictions == 1


def test_invalidate_and_clear() -> None:
    l1: L1Cache[int] = L1Cache(10, 60.0, Clock())
    l1.put_many([(b"a", 1), (b"b", 2)])
    l1.invalidate([b"a", b"zzz"])
    assert l1.get_many([b"a", b"b"]) == [MISS, 2]
    l1.clear()
    assert len(l1) == 0


def test_disabled_cache_keeps_nothing() -> None:
    l1: L1Cache[int] = L1Cache(0, 60.0, Clock())
    l1.put_many([(b"a", 1)])
    assert l1.get_many([b"a"]) == [MISS]
    assert "0/0 rows" in repr(l1)


def test_entries_cached_together_expire_apart_and_never_past_the_ttl() -> None:
    clock = Clock()
    draws = iter([0.0, 0.5, 1.0])
    l1: L1Cache[str] = L1Cache(10, 5.0, clock, jitter=0.2, rng=lambda: next(draws))
    l1.put_many([(b"a", "A"), (b"b", "B"), (b"c", "C")])  # lives 5.0, 4.5 and 4.0 s
    clock.now += 4.2
    assert l1.get_many([b"a", b"b", b"c"]) == ["A", "B", MISS]
    clock.now += 0.4
    assert l1.get_many([b"a", b"b", b"c"]) == ["A", MISS, MISS]
    clock.now += 0.4
    assert l1.get_many([b"a"]) == [MISS]


def test_due_names_entries_in_the_last_part_of_their_life() -> None:
    clock = Clock()
    l1: L1Cache[str] = L1Cache(10, 4.0, clock, refresh_fraction=0.25, rng=lambda: 0.0)
    l1.put_many([(b"a", "A")])
    clock.now += 2.0
    l1.put_many([(b"b", "B")])
    assert l1.due([b"a", b"b", b"absent"]) == []
    clock.now += 1.5  # a has 0.5 s left (due), b 2.5 s
    assert l1.due([b"a", b"b"]) == [b"a"]
    clock.now += 1.0  # a expired: a miss now, not a refresh
    assert l1.due([b"a", b"b"]) == []


def test_replace_puts_a_row_in_place_of_the_same_row_only_and_keeps_its_expiry() -> None:
    clock = Clock()
    l1: L1Cache[object] = L1Cache(10, 5.0, clock, rng=lambda: 0.0)
    old, new, other = ("old",), ("new",), tuple(["old"])  # `other` equals `old`, is not it
    l1.put_many([(b"a", old)])
    l1.replace(b"a", other, new)  # not the row L1 holds (written meanwhile): kept
    assert l1.get_many([b"a"])[0] is old
    clock.now += 3
    l1.replace(b"a", old, new)
    l1.replace(b"gone", old, new)  # no entry: none is made
    assert l1.get_many([b"a", b"gone"]) == [new, MISS]
    clock.now += 2.1  # past the expiry `old` was given, not 5 s after the replace
    assert l1.get_many([b"a"]) == [MISS]
