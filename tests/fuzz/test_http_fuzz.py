"""Fuzzing the HTTP front end from its own OpenAPI document (schemathesis), on a real server.

Every operation of /openapi.json gets bodies, paths and headers that fit its
schema (positive) and that break it (negative). Every answer must be a 2xx or
a 4xx with the JSON error body naming a field, never a 5xx; afterwards each
id of a refused push must not be stored unless an acknowledged push wrote it,
and acknowledged pushes must be stored as sent (newest event wins).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from service.core.registry import load_registry
from service.settings import DEMO_REGISTRY
from tests.conftest import LiveServer

pytestmark = pytest.mark.process

EXAMPLES = 40  # per operation and mode: 9 operations x 2 modes, about 20 s here
REGISTRY = load_registry(DEMO_REGISTRY)
ERROR_KEYS = {"error", "field", "reason", "request_id"}


def operations(url: str) -> list[Any]:
    document = httpx.get(f"{url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in schema.get_all_operations()]


def test_openapi_operations_never_answer_5xx_and_write_whole_or_nothing(
    fuzz_server: LiveServer,
) -> None:
    ops = operations(fuzz_server.url)
    labels = {op.label for op in ops}
    assert {"POST /v1/bundle", "POST /v1/features", "POST /v1/push"} <= labels, labels
    pushes: list[tuple[int, Any]] = []
    seen: dict[str, set[int]] = {}
    with httpx.Client(base_url=fuzz_server.url, timeout=10) as http:
        for op in ops:
            for mode in GenerationMode:
                fuzz_operation(http, op, mode, pushes, seen)
        check_pushes(http, pushes, seen)


def fuzz_operation(
    http: httpx.Client, op: Any, mode: GenerationMode,
    pushes: list[tuple[int, Any]], seen: dict[str, set[int]],
) -> None:  # fmt: skip
    """Send EXAMPLES cases of one operation in one mode; check every answer."""

    @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))
    @given(op.as_strategy(mode))
    def fuzz(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url=str(http.base_url).rstrip("/"))
        r = http.request(
            kwargs["method"], kwargs["url"], headers=kwargs.get("headers"),
            params=kwargs.get("params"), content=body_bytes(kwargs),
        )  # fmt: skip
        assert r.status_code < 500, (op.label, kwargs, r.status_code, r.text)
        if 400 <= r.status_code < 500 and op.path.startswith("/v1/"):
            assert set(r.json()) == ERROR_KEYS, (op.label, r.text)
        if op.label == "POST /v1/push":
            pushes.append((r.status_code, case.body))
            for view, row_id in row_ids(case.body):
                seen.setdefault(view, set()).add(row_id)

    try:
        fuzz()
    except Unsatisfiable:
        # Nothing to break: no body nor parameters, or only path strings (any string is one).
        if mode is not GenerationMode.NEGATIVE or op.label.startswith("POST"):
            raise


def body_bytes(kwargs: dict[str, Any]) -> bytes | None:
    """The request body as bytes, however the case carries it."""
    if "content" in kwargs:
        return kwargs["content"]  # type: ignore[no-any-return]
    if "data" in kwargs and isinstance(kwargs["data"], bytes | str):
        data = kwargs["data"]
        return data.encode() if isinstance(data, str) else data
    if "json" in kwargs:
        import json

        return json.dumps(kwargs["json"]).encode()
    return None


def row_ids(body: Any) -> list[tuple[str, int]]:
    """(view, room or user id) of every single-id row of a push body (pairs left out)."""
    if not isinstance(body, dict) or not isinstance(body.get("view"), str):
        return []
    if body["view"] not in REGISTRY.views:
        return []
    rows = body.get("rows")
    out = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and type(row.get("id")) is int and 0 <= row["id"] < 2**63:
            out.append((body["view"], row["id"]))
    return out


def check_pushes(
    http: httpx.Client, pushes: list[tuple[int, Any]], seen: dict[str, set[int]]
) -> None:
    """Ids of refused pushes are stored only if an acknowledged push wrote them, as sent."""
    written: dict[tuple[str, int], int] = {}
    for status, body in pushes:
        if status == 200:
            for row in body["rows"]:
                key = (body["view"], row["id"])
                written[key] = max(written.get(key, -1), row["event_time_ms"])
    for view, ids in seen.items():
        plan = REGISTRY.views[view]
        if len(plan.key_columns) != 1:
            continue
        for row_id in sorted(ids)[:50]:
            stored = http.get(f"/debug/entity/{view}/{row_id}").json()["tiers"]["rocksdb"]
            if (view, row_id) in written:
                assert stored["event_time_ms"] >= written[(view, row_id)], (view, row_id)
            else:
                # The demo data holds ids below 1,000 (users) and 200 (rooms).
                assert not stored["present"] or row_id < 1000, (view, row_id, stored)
