"""JSON bodies assembled from the pre-rendered row fragments (no per-feature work)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service import native
from service.core.codec import JSON
from service.core.service import BundleResult, ViewRows


def encode_entities(ids: Sequence[bytes], views: Sequence[ViewRows]) -> bytes:
    """`[{"id":..,"features":{..},"status":{..}}, ...]` without the brackets.

    Collects the pieces and joins them once: 5x faster for 100 rooms than
    formatting each entity (measured: 35 us against 170 us), since the big
    feature fragments are copied once instead of twice.
    """
    if not ids:
        return b""
    parts: list[bytes] = []
    put = parts.extend
    if len(views) == 1:  # the common case: one view per entity
        v = views[0]
        sj = v.plan.status_json
        for i, r, s in zip(ids, v.rows, v.statuses, strict=True):
            put((b'{"id":', i, b',"features":{', r[JSON], b'},"status":{', sj[s], b"}},"))
    else:
        for n, i in enumerate(ids):
            features = b",".join([v.rows[n][JSON] for v in views])
            status = b",".join([v.plan.status_json[v.statuses[n]] for v in views])
            put((b'{"id":', i, b',"features":{', features, b'},"status":{', status, b"}},"))
    parts[-1] = b"}}"  # no comma after the last entity
    return b"".join(parts)


def _section(prefix: bytes, ids: list[int], suffix: bytes, views: Sequence[ViewRows]) -> Any:
    """The entities of `ids` (written `prefix + id + suffix`) for native.join_json: one
    view's (the usual case) as a section it renders, several views' as bytes."""
    if len(views) == 1:
        v = views[0]
        return (prefix, ids, suffix, v.rows, v.statuses, v.plan.status_json, JSON)
    return encode_entities([b"%s%d%s" % (prefix, i, suffix) for i in ids], views)


def encode_bundle(r: BundleResult) -> bytes:
    """The /v1/bundle body of docs/design.md, built in one buffer (native.join_json)."""
    pairs = _section(b"[%d," % r.user_id, r.room_ids, b"]", r.pairs) if r.pairs else b""
    return native.join_json(
        [
            b'{"bundle":"%s","user":' % r.bundle.encode(),
            _section(b"", [r.user_id], b"", r.user),
            b',"rooms":[',
            _section(b"", r.room_ids, b"", r.rooms),
            b'],"pairs":[',
            pairs,
            b"]}",
        ]
    )


def encode_features(view: str, ids: Sequence[Any], rows: ViewRows) -> bytes:
    """The /v1/features body: `{"view": .., "rows": [entity, ...]}`."""
    id_json = [b"[%d,%d]" % i if isinstance(i, tuple) else b"%d" % i for i in ids]
    return b'{"view":"%s","rows":[%s]}' % (view.encode(), encode_entities(id_json, [rows]))
