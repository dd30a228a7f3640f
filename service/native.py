"""The per-row loops of a bundle read: compiled (service/_native.c) or in Python.

Each function below is defined here in Python, and that definition is the
specification: `service/_native.c` does the same without an interpreter step per
row, and tests/core/test_native.py gives both the same inputs (including the limits
of ids, rows of every status, and malformed input) and compares the results.

The compiled module is built by the package's build (hatch_build.py: every
`pip install`, editable or not). Where it is missing (no C compiler at install) or
`LIVEFEAT_PURE_PYTHON=1` is set, the Python definitions serve: slower, same bytes.
`IMPLEMENTATION` says which one this process uses; `livefeat serve` logs it.

Why these (docs/design.md, "The compiled hot path"): a warm 100-room bundle built
about 200 keys, looked up about 100 Bloom filter and 100 L1 entries, gave 200 rows a
status and an age, and joined 200 entities of JSON (HTTP) or 3 view blocks of 100
rows (gRPC); in Python each is a loop of interpreter steps per element, together
about half the request's CPU.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from service.core.codec import varint

_LOW32 = np.uint64(0xFFFFFFFF)
_LOW63 = (1 << 63) - 1


def py_keys(prefix: bytes, ids: list[int], suffix: bytes) -> list[bytes]:
    """`prefix + decimal id + suffix` for each id (non-negative ints)."""
    if suffix:
        return [b"%s%d%s" % (prefix, i, suffix) for i in ids]
    return [prefix + b"%d" % i for i in ids]


def py_maybe_stored(bits: np.ndarray, nbits: int, keys: list[bytes]) -> list[int]:
    """The indexes, in order, of the keys the Bloom filter `bits` may hold (every other
    key is certainly absent).

    Bit j (j = 0, 1, 2) of a key is (h1 + j * h2) mod nbits, where h is hash(key) as
    an unsigned 64-bit number, h1 its low 32 bits and h2 its high 32 bits, made odd.
    """
    if not keys:
        return []
    index, mask = bloom_positions(nbits, keys)
    return np.flatnonzero((bits[index] & mask).all(axis=0)).tolist()  # type: ignore[no-any-return]


def bloom_positions(nbits: int, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(byte index, bit mask) of the 3 bits of each key: arrays of shape (3, n)."""
    h = np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)).view(np.uint64)
    h1, h2 = h & _LOW32, (h >> np.uint64(32)) | np.uint64(1)
    p = np.stack([h1, h1 + h2, h1 + np.uint64(2) * h2]) % np.uint64(nbits)
    return p >> np.uint64(3), np.left_shift(1, p & np.uint64(7)).astype(np.uint8)


def _number(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    return float(value)


# The reference bits one put may clear before it evicts the next entry regardless. With
# every entry of a full 500,000-row table referenced, an unbounded sweep took 4.2-4.9 ms
# (one put, on the serving loop); this bound keeps it to 9-25 us.
SWEEP_LIMIT = 1024


class PyTable:
    """L1's store: a map of bytes keys to `(expires_at, value)`, holding at most
    `max_rows` entries; the specification of the compiled `Table` (service/_table.h),
    which runs the same algorithm step for step.

    Open addressing with linear probing over `capacity` slots (a power of two, at least
    twice `max_rows`), from the slot `hash(key) & (capacity - 1)`; removal by backward
    shift. Eviction is CLOCK (second chance): a hit of `get_many` sets the entry's
    reference bit; to make room, the hand sweeps the slots in order, clearing set bits,
    and evicts the first entry whose bit is clear, or, once one put has cleared
    `sweep_limit` bits, the next entry whatever its bit (so that a put's sweep is
    bounded). Keys must be exactly `bytes`.
    """

    def __init__(self, max_rows: int, sweep_limit: int = SWEEP_LIMIT) -> None:
        if not 1 <= max_rows <= 1 << 40:
            raise ValueError("max_rows: expected 1 to 2**40")
        if sweep_limit < 0:
            raise ValueError("sweep_limit: expected 0 or more")
        self.sweep_limit = sweep_limit
        capacity = 8
        while capacity < max_rows * 2:
            capacity <<= 1
        self.max_rows = max_rows
        self.capacity = capacity
        self.hand = 0
        self._mask = capacity - 1
        self._used = 0
        self._hash = [0] * capacity
        self._ref = [False] * capacity
        self._key: list[bytes | None] = [None] * capacity
        self._expires = [0.0] * capacity
        self._value: list[Any] = [None] * capacity

    def __len__(self) -> int:
        return self._used

    @staticmethod
    def _hash_of(key: bytes) -> int:
        if type(key) is not bytes:
            raise TypeError(f"expected a bytes key, got {type(key).__name__}")
        return hash(key) & _LOW63

    def _find(self, key: bytes, h: int) -> tuple[int, int]:
        """(slot of `key` or -1, the empty slot where it would go or -1)."""
        i = h & self._mask
        while True:
            k = self._key[i]
            if k is None:
                return -1, i
            if self._hash[i] == h and k == key:
                return i, -1
            i = (i + 1) & self._mask

    def _remove(self, i: int) -> None:
        mask = self._mask
        j = (i + 1) & mask
        while self._key[j] is not None:
            home = self._hash[j] & mask
            stays = (i < home <= j) if i <= j else (i < home or home <= j)
            if not stays:
                self._move(j, i)
                i = j
            j = (j + 1) & mask
        self._hash[i], self._ref[i], self._key[i] = 0, False, None
        self._expires[i], self._value[i] = 0.0, None
        self._used -= 1

    def _move(self, src: int, dst: int) -> None:
        columns: tuple[list[Any], ...] = (
            self._hash,
            self._ref,
            self._key,
            self._expires,
            self._value,
        )
        for column in columns:
            column[dst] = column[src]

    def get_many(self, keys: list[bytes], now: float, miss: Any) -> list[Any]:
        """Per key, its value if its entry expires after `now` (the entry is then marked
        referenced), else `miss`."""
        now = _number("now", now)
        out = []
        for key in keys:
            i, _ = self._find(key, self._hash_of(key))
            if i >= 0 and self._expires[i] > now:
                self._ref[i] = True
                out.append(self._value[i])
            else:
                out.append(miss)
        return out

    def put(self, key: bytes, expires_at: float, value: Any) -> int:
        """Set `key`'s entry; 1 if an entry was evicted to make room for it, else 0."""
        h = self._hash_of(key)
        expires_at = _number("expires_at", expires_at)
        i, free = self._find(key, h)
        if i >= 0:  # replaced: the reference bit stays
            self._expires[i], self._value[i] = expires_at, value
            return 0
        evicted = 0
        if self._used >= self.max_rows:
            cleared = 0
            while True:
                j = self.hand
                self.hand = (j + 1) & self._mask
                if self._key[j] is None:
                    continue
                if self._ref[j] and cleared < self.sweep_limit:
                    self._ref[j] = False
                    cleared += 1
                    continue
                self._remove(j)
                evicted = 1
                break
            _, free = self._find(key, h)
        self._hash[free], self._ref[free], self._key[free] = h, False, key
        self._expires[free], self._value[free] = expires_at, value
        self._used += 1
        return evicted

    def peek(self, key: bytes) -> tuple[float, Any] | None:
        """`(expires_at, value)` of `key`'s entry, expired or not, or None; the
        reference bit is untouched."""
        i, _ = self._find(key, self._hash_of(key))
        return None if i < 0 else (self._expires[i], self._value[i])

    def pop(self, key: bytes) -> bool:
        """Remove `key`'s entry; True if there was one."""
        i, _ = self._find(key, self._hash_of(key))
        if i >= 0:
            self._remove(i)
        return i >= 0

    def clear(self) -> None:
        """Drop every entry."""
        self.__init__(self.max_rows, self.sweep_limit)  # type: ignore[misc]

    def items(self) -> list[tuple[bytes, float, Any, bool]]:
        """`(key, expires_at, value, referenced)` per entry, in slot order (for tests)."""
        return [
            (k, self._expires[i], self._value[i], self._ref[i])
            for i, k in enumerate(self._key)
            if k is not None
        ]


def py_misses(values: list[Any], miss: Any) -> list[int]:
    """The indexes, in order, of the items of `values` that are `miss` (identity)."""
    return [i for i, v in enumerate(values) if v is miss]


def py_group(
    keys: list[bytes], values: list[Any], decoder_of: Mapping[bytes, Any]
) -> tuple[list[bytes], dict[Any, tuple[list[bytes], list[Any]]]]:
    """A tier's answer for `keys`: the keys whose value is None, in order, and the
    others grouped by `decoder_of[key]` (KeyError if absent), in the order first seen:
    {decoder: (keys, values)}."""
    if len(keys) != len(values):
        raise ValueError("group: keys and values differ in length")
    still: list[bytes] = []
    groups: dict[Any, tuple[list[bytes], list[Any]]] = {}
    for key, value in zip(keys, values, strict=True):
        if value is None:
            still.append(key)
            continue
        decoder = decoder_of[key]
        entry = groups.get(decoder)
        if entry is None:
            groups[decoder] = entry = ([], [])
        entry[0].append(key)
        entry[1].append(value)
    return still, groups


def py_pick(keys: list[bytes], values: list[Any], at: list[int]) -> dict[bytes, Any]:
    """{keys[i]: values[i] for i in at}: a read's misses, with their decoders."""
    return {keys[i]: values[i] for i in at}


def py_put_back(out: list[Any], at: list[int], keys: list[bytes], found: dict[bytes, Any]) -> None:
    """out[i] = found[keys[i]] for i in at (KeyError for a key `found` lacks)."""
    for i in at:
        out[i] = found[keys[i]]


def py_take(
    found: dict[bytes, Any],
    fill: list[tuple[bytes, bytes]],
    keys: list[bytes],
    rows: list[Any],
    raws: list[bytes],
) -> bool:
    """Where every row is a tuple (a decoded row, not a CorruptValue): found[key] = row
    and (key, raw) appended to `fill` for each, in order, and True; else False, and
    nothing changed."""
    if not len(keys) == len(rows) == len(raws):
        raise ValueError("take: keys, rows and raws differ in length")
    if any(type(row) is not tuple for row in rows):
        return False
    found.update(zip(keys, rows, strict=True))
    fill += zip(keys, raws, strict=True)
    return True


def py_claim(
    flights: dict[bytes, Any], wanted: dict[bytes, Any], flight: Any
) -> tuple[dict[bytes, Any], dict[bytes, Any]]:
    """(mine, others): `others` maps each key of `wanted` that `flights` holds to its
    flight there; `mine` holds the rest with their values (`wanted` itself when that is
    all of it), and `flights` now maps each of them to `flight`."""
    others: dict[bytes, Any] = {}
    if flights:
        for key in wanted:
            f = flights.get(key)
            if f is not None:
                others[key] = f
    mine = {k: v for k, v in wanted.items() if k not in others} if others else wanted
    for key in mine:
        flights[key] = flight
    return mine, others


def py_release(flights: dict[bytes, Any], keys: dict[bytes, Any], flight: Any) -> None:
    """Delete from `flights` each of `keys` that it maps to `flight` itself."""
    for key in keys:
        if flights.get(key) is flight:
            del flights[key]


def py_resp_command(args: Sequence[bytes]) -> bytes:
    """A Redis command in RESP: an array of bulk strings."""
    if not all(type(a) is bytes for a in args):
        raise TypeError("resp_command: expected bytes")
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


def py_unrendered(rows: list[Any]) -> list[int]:
    """The indexes, in order, of the rows (tuples) whose JSON slot, item 1, is not bytes:
    rows `ViewCodec.bare` decoded, which a reader that serves JSON renders first
    (store/readthrough.py). Other items (None, UNAVAILABLE) are not rows."""
    return [
        i for i, r in enumerate(rows) if type(r) is tuple and len(r) > 1 and type(r[1]) is not bytes
    ]


def py_resolve(
    got: list[Any],
    now_ms: int,
    max_age_ms: int,
    default_row: tuple[Any, ...],
    unavailable: Any,
    statuses: tuple[Any, Any, Any, Any],
) -> tuple[list[Any], list[Any], list[int], tuple[int, int, int, int]]:
    """Each row's status and age: (rows, statuses, ages, counts).

    `got` holds rows (tuples whose item 0 is the event time in ms), None (not stored)
    or `unavailable`. `statuses` is (FOUND, STALE, DEFAULTED, UNAVAILABLE); a row
    is FOUND if its age is at most `max_age_ms`, else STALE. A missing row becomes
    `default_row` with age -1; `rows` is `got` itself when no row is missing.
    `counts` is how many rows got each status, in that order.
    """
    found, stale = statuses[0], statuses[1]
    if all(r is not None and r is not unavailable for r in got):
        ages = [now_ms - r[0] for r in got]
        out = [found if a <= max_age_ms else stale for a in ages]
        n_stale = sum(1 for a in ages if a > max_age_ms)
        return got, out, ages, (len(got) - n_stale, n_stale, 0, 0)
    rows: list[Any] = []
    out = []
    ages = []
    counts = [0, 0, 0, 0]
    for r in got:
        if r is None or r is unavailable:
            rows.append(default_row)
            ages.append(-1)
            at = 2 if r is None else 3
        else:
            rows.append(r)
            age = now_ms - r[0]
            ages.append(age)
            at = 0 if age <= max_age_ms else 1
        out.append(statuses[at])
        counts[at] += 1
    return rows, out, ages, (counts[0], counts[1], counts[2], counts[3])


# One view's entities in an HTTP answer: (id_prefix, ids, id_suffix, rows, statuses,
# status_json, json_index), see py_entities.
Section = tuple[bytes, list[int], bytes, list[Any], list[Any], Mapping[Any, bytes], int]


def py_join_json(parts: list[bytes | Section]) -> bytes:
    """The parts in order, each bytes (as it is) or a section (its entities, as
    `py_entities` renders them): a whole answer, built once."""
    return b"".join([p if isinstance(p, bytes) else py_entities(*p) for p in parts])


def py_entities(
    id_prefix: bytes,
    ids: list[int],
    id_suffix: bytes,
    rows: list[tuple[Any, ...]],
    statuses: list[Any],
    status_json: Mapping[Any, bytes],
    json_index: int,
) -> bytes:
    """`{"id":<prefix><id><suffix>,"features":{<row[json_index]>},"status":{<status_json
    [status]>}}` per entity, separated by commas: one view's entities in an HTTP answer."""
    if not (len(ids) == len(rows) == len(statuses)):
        raise ValueError("ids, rows and statuses differ in length")
    parts: list[bytes] = []
    put = parts.extend
    for i, r, s in zip(ids, rows, statuses, strict=True):
        put((b'{"id":%s%d%s,"features":{' % (id_prefix, i, id_suffix), r[json_index],
             b'},"status":{', status_json[s], b"}},"))  # fmt: skip
    if parts:
        parts[-1] = b"}}"  # no comma after the last entity
    return b"".join(parts)


def _varint(n: int) -> bytes:
    """The protobuf varint of an int64 (a negative one as its 64-bit two's complement)."""
    return varint(n & 0xFFFFFFFFFFFFFFFF)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def py_view_block(
    head: bytes,
    string_heads: list[bytes],
    vector_heads: list[bytes],
    rows: list[tuple[Any, ...]],
    statuses: list[int],
    ages: list[int],
    parts: tuple[int, int, int],
) -> bytes:
    """One livefeat.v1.ViewBlock message: `head` (the view's name and numeric names, as
    fields 1 and 2), field 3 the rows' numeric parts joined; per string column k, a
    field 4 of `string_heads[k]` and each row's entry k; per vector column k, a field 5
    of `vector_heads[k]` and a field 3 of each row's vector k joined; then status
    (field 6) and age_ms (field 7) as packed varints, left out when there are no rows.
    `parts` gives the (numeric, vectors, strings) positions in a row tuple."""
    numeric, vectors, strings = parts
    out = [head, _field(b"\x1a", b"".join([r[numeric] for r in rows]))]
    for k, sub in enumerate(string_heads):
        out.append(_field(b"\x22", sub + b"".join([r[strings][k] for r in rows])))
    for k, sub in enumerate(vector_heads):
        column = _field(b"\x1a", b"".join([r[vectors][k] for r in rows]))
        out.append(_field(b"\x2a", sub + column))
    if statuses:
        out.append(_field(b"\x32", b"".join(map(_varint, statuses))))
    if ages:
        out.append(_field(b"\x3a", b"".join(map(_varint, ages))))
    return b"".join(out)


MEMO_SLOT = struct.Struct("<QQ")  # key hash (0: empty), value header


def memo(keys: int) -> bytearray:
    """An empty memo for `unwritten` and `remember` that may hold `keys` keys while
    staying at most half full (the caller starts again beyond)."""
    slots = 2
    while slots < 2 * keys:
        slots *= 2
    return bytearray(MEMO_SLOT.size * slots)


def _memo_item(item: tuple[bytes, bytes]) -> tuple[int, int | None]:
    key, value = item
    if type(key) is not bytes or type(value) is not bytes:
        raise TypeError("fills are (key: bytes, value: bytes) tuples")
    h = hash(key) & 0xFFFFFFFFFFFFFFFF
    return h or 1, (int.from_bytes(value[:8], "little") if len(value) >= 8 else None)


def _memo_find(memo: bytearray, h: int) -> int | None:
    """The slot holding hash `h`, or the empty one where it would go (None: full)."""
    n = len(memo) // MEMO_SLOT.size
    i = h & (n - 1)
    for _ in range(n):
        held = MEMO_SLOT.unpack_from(memo, MEMO_SLOT.size * i)[0]
        if held in (h, 0):
            return i
        i = (i + 1) & (n - 1)
    return None


def py_unwritten(memo: bytearray, items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The (key, value) items whose value's 8-byte header the memo does not hold under
    hash(key): what the local tier has not been given yet (service/_native.c)."""
    out = []
    for item in items:
        h, header = _memo_item(item)
        i = _memo_find(memo, h)
        held = None if i is None else MEMO_SLOT.unpack_from(memo, MEMO_SLOT.size * i)
        if header is None or held != (h, header):
            out.append(item)
    return out


def py_remember(memo: bytearray, items: list[tuple[bytes, bytes]]) -> int:
    """From now on the memo holds each item's header under hash(key); returns how many
    slots were newly filled. Values shorter than a header are not remembered."""
    added = 0
    for item in items:
        h, header = _memo_item(item)
        if header is None:
            continue
        i = _memo_find(memo, h)
        if i is None:
            raise ValueError("remember: the memo is full")
        added += MEMO_SLOT.unpack_from(memo, MEMO_SLOT.size * i)[0] == 0
        MEMO_SLOT.pack_into(memo, MEMO_SLOT.size * i, h, header)
    return added


_native: Any = None
if os.environ.get("LIVEFEAT_PURE_PYTHON", "") not in ("1", "true", "yes"):
    try:
        from service import _native  # type: ignore[attr-defined,no-redef]
    except ImportError:  # not built (no compiler at install): the Python definitions
        _native = None

IMPLEMENTATION = "compiled" if _native is not None else "python"
keys: Callable[[bytes, list[int], bytes], list[bytes]] = (
    _native.keys if _native is not None else py_keys
)
maybe_stored: Callable[[np.ndarray, int, list[bytes]], list[int]] = (
    _native.maybe_stored if _native is not None else py_maybe_stored
)
Table: Callable[..., PyTable] = _native.Table if _native is not None else PyTable
misses: Callable[[list[Any], Any], list[int]] = _native.misses if _native is not None else py_misses
group: Callable[..., tuple[list[bytes], dict[Any, tuple[list[bytes], list[Any]]]]] = (
    _native.group if _native is not None else py_group
)
pick: Callable[[list[bytes], list[Any], list[int]], dict[bytes, Any]] = (
    _native.pick if _native is not None else py_pick
)
put_back: Callable[[list[Any], list[int], list[bytes], dict[bytes, Any]], None] = (
    _native.put_back if _native is not None else py_put_back
)
take: Callable[..., bool] = _native.take if _native is not None else py_take
claim: Callable[..., tuple[dict[bytes, Any], dict[bytes, Any]]] = (
    _native.claim if _native is not None else py_claim
)
release: Callable[[dict[bytes, Any], dict[bytes, Any], Any], None] = (
    _native.release if _native is not None else py_release
)
resp_command: Callable[[Sequence[bytes]], bytes] = (
    _native.resp_command if _native is not None else py_resp_command
)
unrendered: Callable[[list[Any]], list[int]] = (
    _native.unrendered if _native is not None else py_unrendered
)
resolve: Callable[..., tuple[list[Any], list[Any], list[int], tuple[int, int, int, int]]] = (
    _native.resolve if _native is not None else py_resolve
)
join_json: Callable[[list[bytes | Section]], bytes] = (
    _native.join_json if _native is not None else py_join_json
)
view_block: Callable[..., bytes] = _native.view_block if _native is not None else py_view_block
unwritten: Callable[[bytearray, list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]] = (
    _native.unwritten if _native is not None else py_unwritten
)
remember: Callable[[bytearray, list[tuple[bytes, bytes]]], int] = (
    _native.remember if _native is not None else py_remember
)
# ViewCodec.decode_row for many values of one view, compiled (None where not built: the
# codec decodes in Python), with the view's layout parsed once by `layout`; with a third
# argument false, the rows of ViewCodec.bare (the JSON slot holds (value,)). Its Python
# definition is the codec's own decode_row, which also takes every value this leaves
# (None): service/core/codec.py, `_compiled_spec`.
layout: Callable[[tuple[Any, ...]], Any] | None = _native.layout if _native is not None else None
decode_rows: Callable[..., list[Any]] | None = _native.decode_rows if _native is not None else None
# For tests and scripts/check_floats.py: numbers rendered as orjson renders numpy arrays.
json_numbers: Callable[[bytes, int], bytes] | None = (
    _native.json_numbers if _native is not None else None
)
