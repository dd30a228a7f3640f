"""The stored form of one (view, entity) row, and its decoded, pre-rendered form.

Stored value (written once, at load or push time; read by every tier)::

    header  <B I q   format (1), schema version (u32), event_time_ms (i64)
    fixed   scalar features in registry order: int64 <q, double <d, float <f, bool ?
            then float vectors in registry order, dim x <f
    tail    string features in registry order, each <H length + UTF-8 bytes
    served  (optional) 0x1E, each feature's JSON value in registry order separated
            by 0x1F, 0x1E: what the HTTP answer shows, rendered once at write time

Why a packed struct layout (measured on the room view of the standard workload,
24 features, Python 3.11, one core): struct 321 B, encode 2.8 us, decode 2.6 us;
msgpack 298 B, encode 2.2 us, decode 1.7 us. They cost the same per row, but the
fixed-width layout carries no names or type tags (Redis memory target) and lets
numpy encode a whole Parquet batch in one vectorised pass (`encode_columns`),
and decode many rows' numeric parts with one `np.frombuffer` for the gRPC matrix.

A row is decoded once, when it enters L1, into a `Row` that carries the JSON
fragment the HTTP front end joins into responses; requests never convert
features one by one.

The served section makes that decoding cheap for the views where rendering JSON
costs most (a float32 vector's shortest decimals, many features): a miss fills
the view's template (`"view.feature":%s,...`) with the stored values instead of
formatting every feature again (room row: 2.7 us instead of 4.4). It is rendered
from the binary part at write time (`encode`, `encode_columns`), so the bytes
served are those the binary part decodes to, and it costs memory (standard
workload: a user row 252 -> 775 bytes, a room row 320 -> 969; docs/benchmarks.md).
The section is optional per value: values written before it existed (or by a
writer of a view that carries none) are read as before, so the schema version,
the keys and stored data are unchanged. A reader older than the section refuses
a value that carries one (bytes after the last feature: CorruptValue, read as
absent from that tier): upgrade readers before writers.
"""

from __future__ import annotations

import math
import operator
import reprlib
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from service.stored import (
    EVENT_TIME_MAX,
    HEADER,
    HEADER_SIZE,
    CorruptValue,
    event_time_of,  # noqa: F401  (re-exported: the codec is where tools look)
    header,
)

# The header (service/stored.py) is eight bytes, not thirteen: with it a user row of
# the standard workload is 252 bytes, which with Redis's string header fits
# jemalloc's 256-byte class instead of 320 (6 MB of Redis memory over the standard users).

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STRING_BYTES = 65535
FLOAT32_MAX = 3.4028234663852886e38

TYPES = ("int64", "double", "float", "string", "bool", "float_vector")
_SCALAR_CODE = {"int64": "q", "double": "d", "float": "f", "bool": "?"}
_SCALAR_DTYPE = {"int64": "<i8", "double": "<f8", "float": "<f4", "bool": "?"}
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
# decode_rows renders JSON column-wise for batches of DECODE_BATCH_MIN values or more,
# DECODE_BATCH_MAX at a time. Measured on the standard data (room rows, us per row, the
# shared 2-core machine): one by one 7.9; batches of 8: 10.4, 16: 8.3, 100: 5.7, 500: 8.6.
DECODE_BATCH_MIN = 32
DECODE_BATCH_MAX = 128


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature of a view: name, type, vector dim (0 for scalars) and default."""

    name: str
    type: str
    dim: int
    default: Any


# A decoded row, as L1 holds it, pre-rendered for both front ends:
#   (event_time_ms, json, numeric, vectors, strings)
# `json` is the inside of a JSON object, `"view.feature":value,...`, in registry
# order, ready to be joined with other fragments (HTTP). `numeric` is the numeric
# features (int64, double, float, bool) in registry order as float32 bytes, one
# row of the ranker's matrix; `vectors` holds each float vector's float32 bytes,
# and `strings` each string as its protobuf `repeated string` entry (tag 2, length,
# UTF-8: StringColumn.values), in registry order: the gRPC answer joins them as they
# are (service/grpc/wire.py).
# A row decoded for a front end that serves no JSON (gRPC: `ViewCodec.bare`) may hold,
# instead of `json`, the 1-tuple (stored value,): `ViewCodec.render` turns it into the
# row `decode_row` gives, and the store does so before such a row reaches a reader that
# serves JSON (service/store/readthrough.py).
# A plain tuple of bytes, ints and str on purpose: the garbage collector stops
# tracking exact tuples of such values, so hundreds of thousands of cached rows
# add nothing to its full collections (which paused requests for 100-300 ms
# when rows were objects). Read fields with the index constants below.
Row = tuple[int, bytes, bytes, tuple[bytes, ...], tuple[bytes, ...]]
EVENT_TIME: Final = 0
JSON: Final = 1
NUMERIC: Final = 2
VECTORS: Final = 3
STRINGS: Final = 4


def check_value(feature: Feature, value: Any) -> Any:
    """Return `value` normalised for `feature`, or raise ValueError with the reason."""
    kind = feature.type
    if kind == "int64":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer (int64), got {_show(value)}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("integer out of the int64 range")
        return value
    if kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number ({kind}), got {_show(value)}")
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        if kind == "float" and abs(value) > FLOAT32_MAX:
            raise ValueError("out of the float32 range")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_show(value)}")
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_show(value)}")
        if len(value.encode()) > MAX_STRING_BYTES:
            raise ValueError(f"string longer than {MAX_STRING_BYTES} bytes")
        return value
    if not isinstance(value, list | tuple) or len(value) != feature.dim:
        raise ValueError(f"expected a list of {feature.dim} numbers, got {_show(value)}")
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise ValueError(f"expected a list of {feature.dim} finite numbers")
        if abs(x) > FLOAT32_MAX:
            raise ValueError("a value is out of the float32 range")
    return [float(x) for x in value]


def _picker(order: Sequence[int]) -> Any:
    """A C callable returning the items of a sequence at `order`, as a tuple."""
    if len(order) == 1:
        only = order[0]
        return lambda seq: (seq[only],)
    return operator.itemgetter(*order)


def varint(n: int) -> bytes:
    """The protobuf varint of a non-negative integer."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string_entry(text: str) -> bytes:
    """`text` as an entry of a protobuf `repeated string` field number 2."""
    data = text.encode()
    return b"\x12" + varint(len(data)) + data


# For values too deeply nested for orjson (255 levels) or repr (the recursion limit).
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 40


def show(value: Any) -> str:
    """A short (at most 40 characters) rendering of any value from a request, for errors.

    Never raises: a request may nest values 1,000 levels deep or send megabyte names.
    """
    try:
        text = orjson.dumps(value, default=repr).decode()
    except (TypeError, RecursionError):
        text = _SHORT_REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_show = show


# The served section (see the module docstring) opens and closes with SECTION and
# separates values with SEPARATOR: control characters JSON text never holds raw.
SECTION: Final = b"\x1e"
SECTION_BYTE: Final = SECTION[0]
SEPARATOR: Final = b"\x1f"


# Part of every schema version: bump it when the stored form itself changes
# (2: the 8-byte header), so that old values are never misread as new ones.
STORED_FORM = 2


def schema_version(features: Sequence[Feature]) -> int:
    """A u32 fingerprint of the stored layout (names, types, dims; not defaults)."""
    layout = f"{STORED_FORM}|" + ";".join(f"{f.name}:{f.type}:{f.dim}" for f in features)
    return zlib.crc32(layout.encode())


class ViewCodec:
    """Encodes and decodes the rows of one view. Immutable; built once at start."""

    def __init__(self, view: str, features: Sequence[Feature], served: bool | None = None) -> None:
        self.view = view
        self.features = tuple(features)
        self.version = schema_version(self.features)
        self._names = [f"{view}.{f.name}" for f in self.features]
        scalars = [f for f in self.features if f.type in _SCALAR_CODE]
        vectors = [f for f in self.features if f.type == "float_vector"]
        self._strings = [f for f in self.features if f.type == "string"]
        self._scalars = scalars
        self._vectors = vectors
        self._struct = struct.Struct("<" + "".join(_SCALAR_CODE[f.type] for f in scalars))
        self._scalar_keys = [f"{view}.{f.name}" for f in scalars]
        self._float_keys = {f"{view}.{f.name}" for f in scalars if f.type == "float"}
        offset = HEADER_SIZE + self._struct.size
        self._vector_slots = []
        for f in vectors:
            self._vector_slots.append((f"{view}.{f.name}", offset, f.dim))
            offset += 4 * f.dim
        self.fixed_size = offset
        self._string_keys = [f"{view}.{f.name}" for f in self._strings]
        fields: list[Any] = [("_hdr", "<u8")]
        fields += [(f.name, _SCALAR_DTYPE[f.type]) for f in scalars]
        fields += [(f.name, "<f4", (f.dim,)) for f in vectors]
        self.dtype = np.dtype(fields)
        assert self.dtype.itemsize == self.fixed_size
        self.default_values = {f.name: f.default for f in self.features}
        # decode_row's fast path: the stored order (scalars, vectors, strings) to the
        # registry order the JSON fragment follows, as one C call.
        stored_order = [*scalars, *vectors, *self._strings]
        position = {f.name: i for i, f in enumerate(stored_order)}
        self._registry_order = _picker([position[f.name] for f in self.features])
        self._float_at = [i for i, f in enumerate(scalars) if f.type == "float"]
        self._numeric = struct.Struct(f"<{len(scalars)}f")
        self._vector_spans = [(o, o + 4 * dim, dim) for _, o, dim in self._vector_slots]
        # The served section (module docstring): each feature's JSON value, in registry
        # order, filled into this template; only views with `served_json: true` in the
        # registry carry one (off by default: docs/design.md). Only writes change:
        # values are read with or without one.
        self.served = bool(served)
        self._json_template = b",".join(
            orjson.dumps(name).replace(b"%", b"%%") + b":%s" for name in self._names
        )
        # The compiled decoder (service/_native.c, decode_rows) and this layout as it
        # reads it, parsed once; None where the module is not built. (Imported here:
        # service.native uses this module's varint.)
        from service import native

        self._decode_compiled = native.decode_rows
        self._layout = None if native.layout is None else native.layout(self._compiled_spec())
        self.default_row = self.decode_row(self.encode(0, self.default_values))
        self.bare = BareDecoder(self)

    def _compiled_spec(self) -> tuple[Any, ...]:
        """This layout as service/_native.c's `layout` reads it: the header's version,
        the fixed part's size, the scalars' struct codes, the vectors' dims, how many
        strings, and per feature in registry order its JSON name and colon, its group
        (0 scalar, 1 vector, 2 string) and its place in the group."""
        groups = [self._scalars, self._vectors, self._strings]
        order = []
        for f, name in zip(self.features, self._names, strict=True):
            group = next(g for g, members in enumerate(groups) if f in members)
            order.append((orjson.dumps(name) + b":", group, groups[group].index(f)))
        return (
            self.version & 0xFFFF,
            self.fixed_size,
            "".join(_SCALAR_CODE[f.type] for f in self._scalars).encode(),
            tuple(f.dim for f in self._vectors),
            len(self._strings),
            tuple(order),
        )

    def __repr__(self) -> str:
        return f"<ViewCodec {self.view} v{self.version:08x} {len(self.features)} features>"

    def encode(self, event_time_ms: int, values: Mapping[str, Any]) -> bytes:
        """Encode one complete, already checked row (every feature present)."""
        head = header(self.version, event_time_ms)
        fixed = self._struct.pack(*[values[f.name] for f in self._scalars])
        vecs = b"".join(struct.pack(f"<{f.dim}f", *values[f.name]) for f in self._vectors)
        raw = head + fixed + vecs + self._encode_strings([values[f.name] for f in self._strings])
        return raw + self._served_section(raw) if self.served else raw

    def _served_section(self, raw: bytes) -> bytes:
        """The served section for the binary part `raw`, rendered from it (not from the
        values given to `encode`), so that it is what the binary part decodes to."""
        _, out, _ = self._decode_parts(raw)
        dumps = orjson.dumps
        return (
            SECTION
            + SEPARATOR.join([dumps(out[name], option=_JSON_OPTS) for name in self._names])
            + SECTION
        )

    @staticmethod
    def _encode_strings(strings: Sequence[str]) -> bytes:
        parts = []
        for s in strings:
            data = s.encode()
            parts.append(len(data).to_bytes(2, "little") + data)
        return b"".join(parts)

    def encode_columns(self, event_times_ms: np.ndarray, columns: Mapping[str, Any]) -> list[bytes]:
        """Encode a batch: numpy arrays per scalar/vector feature, lists of str for strings.

        Vector columns are 2-D float32 arrays (rows x dim). Values must be checked.
        """
        n = len(event_times_ms)
        fixed = np.zeros(n, dtype=self.dtype)
        fixed["_hdr"] = np.uint64((self.version & 0xFFFF) << 48) | np.asarray(
            event_times_ms, dtype=np.uint64
        )
        for f in (*self._scalars, *self._vectors):
            fixed[f.name] = columns[f.name]
        raw = fixed.tobytes()
        w = self.fixed_size
        texts = [columns[f.name] for f in self._strings]
        if not self._strings:
            out = [raw[i * w : (i + 1) * w] for i in range(n)]
        else:
            tails = [self._encode_strings(t) for t in zip(*texts, strict=True)]
            out = [raw[i * w : (i + 1) * w] + tails[i] for i in range(n)]
        if self.served and n:
            sections = self._served_sections(fixed, texts)
            out = [value + section for value, section in zip(out, sections, strict=True)]
        return out

    def _served_sections(self, fixed: np.ndarray, texts: Sequence[Sequence[str]]) -> list[bytes]:
        """The served sections of a batch, one orjson call per numeric or vector column,
        from the values as stored (`fixed`, the binary part's own dtypes): the bytes
        `_served_section` renders row by row (the property tests compare them)."""
        parts = self._json_values(fixed, texts)
        return [SECTION + SEPARATOR.join(row) + SECTION for row in parts]

    def _json_values(
        self, fixed: np.ndarray, texts: Sequence[Sequence[str]]
    ) -> list[tuple[bytes, ...]]:
        """Per row of a batch, each feature's JSON value in registry order: one orjson
        call per numeric or vector column (`fixed`: the binary parts, `texts`: each
        string feature's column)."""
        dumps = orjson.dumps
        values: dict[str, list[bytes]] = {}
        for f in self._scalars:
            column = np.ascontiguousarray(fixed[f.name])
            values[f.name] = dumps(column, option=_JSON_OPTS)[1:-1].split(b",")
        for f in self._vectors:
            column = np.ascontiguousarray(fixed[f.name])
            rows = dumps(column, option=_JSON_OPTS)[2:-2].split(b"],[")
            values[f.name] = [b"[" + r + b"]" for r in rows]
        for f, strings in zip(self._strings, texts, strict=True):
            values[f.name] = [dumps(t) for t in strings]
        ordered = [values[f.name] for f in self.features]
        return list(zip(*ordered, strict=True))

    def _check_header(self, buf: bytes) -> int:
        if len(buf) < self.fixed_size:
            raise CorruptValue(
                f"{self.view}: stored value of {len(buf)} bytes, the layout needs {self.fixed_size}"
            )
        (word,) = HEADER.unpack_from(buf)
        if word >> 48 != self.version & 0xFFFF:
            raise CorruptValue(
                f"{self.view}: stored value does not match layout v{self.version:08x}"
            )
        return int(word & EVENT_TIME_MAX)

    def _decode(self, buf: bytes) -> tuple[int, dict[str, Any]]:
        return self._decode_parts(buf)[:2]  # type: ignore[return-value]

    def _decode_parts(self, buf: bytes) -> tuple[int, dict[str, Any], tuple[Any, ...]]:
        """Raises CorruptValue, whatever is wrong with `buf` (values come from storage)."""
        event_time_ms = self._check_header(buf)
        out: dict[str, Any] = dict.fromkeys(self._names)
        scalars = self._struct.unpack_from(buf, HEADER_SIZE)
        out.update(zip(self._scalar_keys, scalars, strict=True))
        for key in self._float_keys:
            out[key] = np.float32(out[key])
        for key, offset, dim in self._vector_slots:
            out[key] = np.frombuffer(buf, "<f4", dim, offset)
        pos = self.fixed_size
        try:
            for key in self._string_keys:
                size = int.from_bytes(buf[pos : pos + 2], "little")
                end = pos + 2 + size
                if end > len(buf):
                    raise CorruptValue(f"{self.view}: stored value cut short in {key!r}")
                out[key] = buf[pos + 2 : end].decode()
                pos = end
        except UnicodeDecodeError as exc:
            raise CorruptValue(f"{self.view}: stored text is not UTF-8 ({exc.reason})") from None
        if pos != len(buf):
            self._served_parts(buf, pos)  # raises CorruptValue unless a served section
        return event_time_ms, out, scalars

    def _served_parts(self, buf: bytes, pos: int) -> list[bytes]:
        """The JSON values of the served section that starts at `pos`. Raises CorruptValue."""
        inner = buf[pos + 1 : -1]
        if buf[pos] != SECTION_BYTE or buf[-1] != SECTION_BYTE or len(buf) - pos < 2:
            raise CorruptValue(f"{self.view}: {len(buf) - pos} bytes after the last feature")
        if SECTION in inner:  # JSON never holds it raw: the value was damaged
            raise CorruptValue(f"{self.view}: damaged served section")
        parts = inner.split(SEPARATOR)
        if len(parts) != len(self._names):
            raise CorruptValue(
                f"{self.view}: served section of {len(parts)} values, the layout has "
                f"{len(self._names)}"
            )
        return parts

    def decode_row(self, buf: bytes) -> Row:
        """Decode a stored value into the form L1 keeps. Raises CorruptValue.

        Every row read from a tier below L1 comes through here or `decode_rows`. The
        compiled decoder (service/_native.c) takes every well-formed value: 1.8 us per
        standard room row (0.9 with a served section, filled in as it is), against
        5.2 us in Python's batch decoder (docs/design.md, "The compiled hot path"). It
        leaves the other values, and everything where it is not built, to
        `decode_row_python`. The tests check that both give the same row (and the bytes
        `decode_row_reference` gives, without a section), or that both refuse.
        """
        if self._layout is not None:
            row = self._decode_compiled(self._layout, [buf])[0]  # type: ignore[misc]
            if row is not None:
                return row  # type: ignore[no-any-return]
        return self.decode_row_python(buf)

    def decode_row_python(self, buf: bytes) -> Row:
        """`decode_row` in Python: what serves where the compiled decoder is not built
        or leaves a value (one it may have to refuse).

        This path does the least per row in Python. A value with a served section fills
        the view's JSON template with the section's values: 2.7 us per standard room
        row on the shared 2-core machine, against 7.0 us for `decode_row_reference`.
        Without one (old values, small views) the JSON is rendered: one struct unpack, one dict
        built in registry order by a C picker, one orjson call (4.4 us). Both slice the
        string entries from the stored bytes and pack the float32 numeric row with
        struct (numpy only when a double lies beyond the float32 range, where struct
        refuses and numpy's cast gives inf). The tests check that every path gives the
        bytes `decode_row_reference` gives, or that both refuse.
        """
        event_time_ms = self._check_header(buf)
        scalars = self._struct.unpack_from(buf, HEADER_SIZE)
        try:
            numeric = self._numeric.pack(*scalars)
        except OverflowError:
            with np.errstate(over="ignore"):
                numeric = np.array(scalars, dtype=np.float32).tobytes()
        vectors = tuple([buf[start:end] for start, end, _ in self._vector_spans])
        texts, entries, pos = self._strings_of(buf)
        if pos != len(buf):  # the served section: the JSON values, ready to fill in
            json = self._json_template % tuple(self._served_parts(buf, pos))
            return event_time_ms, json, numeric, vectors, entries
        # No served section (a view where it does not pay, or a value written before
        # there were any): render the JSON values from the binary part.
        values = list(scalars)
        for i in self._float_at:  # JSON renders a float feature as float32 (shortest)
            values[i] = np.float32(values[i])
        for start, _, dim in self._vector_spans:
            values.append(np.frombuffer(buf, "<f4", dim, start))
        values += texts
        out = dict(zip(self._names, self._registry_order(values), strict=True))
        return (
            event_time_ms,
            orjson.dumps(out, option=_JSON_OPTS)[1:-1],
            numeric,
            vectors,
            entries,
        )

    __call__ = decode_row  # a codec is the decoder the store calls per value

    def render(self, row: Row) -> Row:
        """`row` as `decode_row` gives it: a row of `bare` (its JSON slot holds the stored
        value) decoded again with its JSON; any other row as it is."""
        json: Any = row[JSON]
        if type(json) is bytes:
            return row
        return self.decode_row(json[0])

    def unchanged(self, buf: bytes, row: Row) -> bool:
        """Whether `buf` is the very value `row` was decoded from (so decoding it again
        would give `row`): the same layout and the same event time. A stored row is
        only ever replaced by one with a newer event time (docs/design.md, newest event
        wins), so a key's event time names its value. The store uses this to keep
        the row it has when it reads a key again (refresh, expiry) and nothing changed."""
        return len(buf) >= HEADER_SIZE and HEADER.unpack_from(buf)[0] == (
            (self.version & 0xFFFF) << 48 | row[EVENT_TIME]
        )

    def decode_rows(self, bufs: Sequence[bytes], json: bool = True) -> list[Row | CorruptValue]:
        """`decode_row` of each value, as a batch: a row, or the CorruptValue that
        `decode_row` raises for that value (the others are decoded all the same).

        Compiled where built, in one call for the batch (values it leaves go through
        `decode_row_python`); otherwise `decode_rows_python`. With `json` false, the
        compiled decoder leaves the JSON out (`BareDecoder`)."""
        if self._layout is None:
            return self.decode_rows_python(bufs)
        rows = self._decode_compiled(self._layout, list(bufs), json)  # type: ignore[misc]
        if None in rows:  # values it left to the Python
            for i, row in enumerate(rows):
                if row is None:
                    rows[i] = self._decode_or_error(bufs[i], self.decode_row_python)
        return rows

    def decode_rows_python(self, bufs: Sequence[bytes]) -> list[Row | CorruptValue]:
        """`decode_rows` in Python, where the compiled decoder is not built.

        A cold read brings a hundred rows of one view at once, and rendering each
        row's JSON alone cost most of their CPU; here one orjson call per column
        renders every row's values, and the view's JSON template is filled row by
        row, as for values with a served section: about a quarter less CPU per row
        in batches of about a hundred. Fewer than DECODE_BATCH_MIN values (where a
        batch costs more), values with a served section, and values the batch
        cannot take go through `decode_row`.
        The tests check that both give the same rows, or both refuse."""
        if len(bufs) < DECODE_BATCH_MIN:
            return [self._decode_or_error(buf) for buf in bufs]
        if len(bufs) > DECODE_BATCH_MAX:
            step = DECODE_BATCH_MAX
            return [
                row
                for i in range(0, len(bufs), step)
                for row in self.decode_rows_python(bufs[i : i + step])
            ]
        size = self.fixed_size
        plain: list[int] = []  # rows without a served section: decoded as a batch
        out: list[Any] = [None] * len(bufs)
        texts: list[list[str]] = [[] for _ in self._strings]
        entries: list[tuple[bytes, ...]] = []
        version = self.version & 0xFFFF
        for i, buf in enumerate(bufs):
            if len(buf) < size or HEADER.unpack_from(buf)[0] >> 48 != version:
                out[i] = self._decode_or_error(buf)
                continue
            try:
                got = self._strings_of(buf)
            except CorruptValue as exc:
                out[i] = exc
                continue
            if got[2] != len(buf):  # a served section: decode_row fills the template
                out[i] = self._decode_or_error(buf)
                continue
            plain.append(i)
            for column, text in zip(texts, got[0], strict=True):
                column.append(text)
            entries.append(got[1])
        if not plain:
            return out
        fixed = np.frombuffer(b"".join([bufs[i][:size] for i in plain]), dtype=self.dtype)
        times = (fixed["_hdr"] & np.uint64(EVENT_TIME_MAX)).tolist()
        json_values = self._json_values(fixed, texts)
        numeric = self._numeric_rows(fixed)
        template = self._json_template
        spans = self._vector_spans
        for j, i in enumerate(plain):
            buf = bufs[i]
            out[i] = (
                times[j],
                template % json_values[j],
                numeric[j],
                tuple([buf[start:end] for start, end, _ in spans]),
                entries[j],
            )
        return out

    def _decode_or_error(
        self, buf: bytes, decode: Callable[[bytes], Row] | None = None
    ) -> Row | CorruptValue:
        try:
            return (decode or self.decode_row)(buf)
        except CorruptValue as exc:
            return exc

    def _strings_of(self, buf: bytes) -> tuple[list[str], tuple[bytes, ...], int]:
        """The string features of a value after its fixed part: their texts, their
        protobuf entries, and where they end. Raises CorruptValue."""
        texts = []
        entries = []
        pos = self.fixed_size
        size = len(buf)
        try:
            for key in self._string_keys:
                end = pos + 2 + int.from_bytes(buf[pos : pos + 2], "little")
                if end > size:
                    raise CorruptValue(f"{self.view}: stored value cut short in {key!r}")
                texts.append(buf[pos + 2 : end].decode())
                n = end - pos - 2
                # The protobuf entry: tag 2, varint length (one byte under 128), UTF-8.
                head = b"\x12" + (bytes((n,)) if n < 0x80 else varint(n))
                entries.append(head + buf[pos + 2 : end])
                pos = end
        except UnicodeDecodeError as exc:
            raise CorruptValue(f"{self.view}: stored text is not UTF-8 ({exc.reason})") from None
        return texts, tuple(entries), pos

    def _numeric_rows(self, fixed: np.ndarray) -> list[bytes]:
        """Each row's numeric features as float32 bytes, as `decode_row` packs them
        (through float64: struct's 'f' rounds a value to double, then to float)."""
        scalars = self._scalars
        if not scalars:
            return [b""] * len(fixed)
        matrix = np.empty((len(fixed), len(scalars)), dtype=np.float64)
        for k, f in enumerate(scalars):
            matrix[:, k] = fixed[f.name]
        with np.errstate(over="ignore"):
            raw = matrix.astype(np.float32).tobytes()
        width = 4 * len(scalars)
        return [raw[k : k + width] for k in range(0, len(raw), width)]

    def decode_row_reference(self, buf: bytes) -> Row:
        """`decode_row` written plainly, feature by feature: the definition the fast
        path is tested against (tests/core/test_codec*.py). Raises CorruptValue."""
        event_time_ms, out, scalars = self._decode_parts(buf)
        # A double beyond the float32 range is inf in the ranker's float32 matrix, as
        # the cast gives it; without errstate numpy also warns (an error under pytest).
        with np.errstate(over="ignore"):
            numeric = np.array(scalars, dtype=np.float32).tobytes()
        return (
            event_time_ms,
            orjson.dumps(out, option=_JSON_OPTS)[1:-1],
            numeric,
            tuple(buf[o : o + 4 * dim] for _, o, dim in self._vector_slots),
            tuple(string_entry(out[k]) for k in self._string_keys),
        )

    @property
    def numeric_names(self) -> list[str]:
        """Names of the numeric features, the columns of the ranker's float32 matrix."""
        return [f.name for f in self._scalars]

    @property
    def vector_features(self) -> list[Feature]:
        """The float vector features, in registry order."""
        return list(self._vectors)

    @property
    def string_names(self) -> list[str]:
        """The string features' names, in registry order."""
        return [f.name for f in self._strings]

    def decode_values(self, buf: bytes) -> tuple[int, dict[str, Any]]:
        """Decode a stored value into (event_time_ms, {feature: plain Python value}).

        Raises CorruptValue."""
        event_time_ms, out = self._decode(buf)
        cut = len(self.view) + 1
        return event_time_ms, orjson.loads(
            orjson.dumps({k[cut:]: v for k, v in out.items()}, option=_JSON_OPTS)
        )


class BareDecoder:
    """A view's decoder for a front end that serves no JSON (gRPC without a served log):
    `decode_row`'s rows, except that where the compiled decoder takes a value, the row's
    JSON slot holds the 1-tuple (stored value,) instead of the rendered fragment.

    Rendering the JSON is most of what decoding a row costs (a room row of the standard
    workload: 96 of 118 us per 100 rows, the shortest decimals of its floats); a gRPC
    answer never shows it. Such rows share L1 with the others: the store renders them
    (`ViewCodec.render`) before they reach a reader that serves JSON
    (service/store/readthrough.py). Where the compiled decoder is not built, or leaves
    a value, this decodes as `decode_row` does; it refuses what `decode_row` refuses.
    """

    __slots__ = ("_codec", "unchanged")

    def __init__(self, codec: ViewCodec) -> None:
        self._codec = codec
        self.unchanged = codec.unchanged

    def __repr__(self) -> str:
        return f"<BareDecoder {self._codec.view}>"

    def __call__(self, buf: bytes) -> Row:
        row = self._codec.decode_rows([buf], json=False)[0]
        if isinstance(row, CorruptValue):
            raise row
        return row

    def decode_rows(self, bufs: Sequence[bytes]) -> list[Row | CorruptValue]:
        """`ViewCodec.decode_rows` without the JSON where the compiled decoder takes a value."""
        return self._codec.decode_rows(bufs, json=False)
