"""GetBundle and GetFeatures answers assembled as protobuf wire bytes from the parts
every `Row` carries pre-rendered, and handed to grpc.aio as they are.

Why: filling the generated messages costs a Python call per column and per string,
then a serialisation of the whole answer; here a view block is the per-row bytes
(float32 numeric row, vector bytes, string entries) joined column by column, and the
statuses and ages as packed varints, in one compiled call (service/native.py).
The bytes are those of the messages in protos/livefeat/v1: a
client parses them with the generated classes (tests/grpc/test_wire.py checks every
value against the HTTP answer). Protobuf concatenation merges messages, which is
what lets a block be built from separately encoded fields.
"""

from __future__ import annotations

from service import native
from service._gen.livefeat.v1 import livefeat_pb2 as pb
from service.core.codec import NUMERIC, STRINGS, VECTORS, varint
from service.core.registry import Registry, ViewPlan
from service.core.service import BundleResult, ViewRows

_ROW_PARTS = (NUMERIC, VECTORS, STRINGS)  # where view_block finds them in a Row
# (field number << 3) | wire type 2 (length-delimited), as one byte (fields 1..15).
_LEN = {n: bytes([n << 3 | 2]) for n in range(1, 16)}


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _LEN[number] + varint(len(payload)) + payload


class _ViewParts:
    """The parts of one view's block that never change, encoded once."""

    __slots__ = ("head", "strings", "vectors")

    def __init__(self, plan: ViewPlan) -> None:
        codec = plan.codec
        names = b"".join(field(2, n.encode()) for n in codec.numeric_names)
        self.head = field(1, plan.name.encode()) + names
        self.strings = [field(1, n.encode()) for n in codec.string_names]
        self.vectors = [
            field(1, f.name.encode()) + b"\x10" + varint(f.dim) for f in codec.vector_features
        ]


class WireEncoder:
    """Builds GetBundleResponse and GetFeaturesResponse bytes for one registry's views."""

    def __init__(self, registry: Registry) -> None:
        self._parts = {name: _ViewParts(plan) for name, plan in registry.views.items()}

    def block(self, view: ViewRows) -> bytes:
        """One ViewBlock message for `view`'s rows, in their order (native.view_block;
        statuses are the proto enum's numbers: service/core/status.py)."""
        parts = self._parts[view.plan.name]
        return native.view_block(parts.head, parts.strings, parts.vectors, view.rows,
                                 view.statuses, view.ages_ms, _ROW_PARTS)  # fmt: skip

    def bundle(self, result: BundleResult) -> bytes:
        """The GetBundleResponse for `result`."""
        head = pb.GetBundleResponse(
            bundle=result.bundle, user_id=result.user_id, room_ids=result.room_ids
        ).SerializeToString()
        blocks = [field(4, self.block(v)) for v in result.user]
        blocks += [field(5, self.block(v)) for v in result.rooms]
        blocks += [field(6, self.block(v)) for v in result.pairs]
        return head + b"".join(blocks)

    def features(self, ids: list[int], user_ids: list[int], rows: ViewRows) -> bytes:
        """The GetFeaturesResponse for one view's rows."""
        head = pb.GetFeaturesResponse(ids=ids, user_ids=user_ids).SerializeToString()
        return head + field(3, self.block(rows))
