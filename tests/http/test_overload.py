"""Overload: past LIVEFEAT_MAX_IN_FLIGHT, both front ends refuse at once; probes never.

A real `livefeat serve` with a bound of 1: a PushFeaturesStream held open is
the one call in flight (the handler waits for its next batch), so every other
read is over the bound, deterministically, without timing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from service.client import LivefeatClient
from tests.conftest import LiveServer

pytestmark = pytest.mark.process

ROOM = "room_stats"


class HeldCall:
    """A PushFeaturesStream that sends one batch and keeps the call open until released."""

    def __init__(self, target: str, room: int) -> None:
        self.release = threading.Event()
        self.result: Any = None
        self._room = room
        self._client = LivefeatClient(target)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _batches(self) -> Iterator[list[dict[str, Any]]]:
        t = time.time_ns() // 1_000_000
        yield [{"id": self._room, "event_time_ms": t, "values": {"viewer_count": 41}}]
        self.release.wait(60)

    def _run(self) -> None:
        try:
            self.result = self._client.push_stream(ROOM, self._batches(), timeout=90)
        except grpc.RpcError as exc:
            self.result = exc
        finally:
            self._client.close()

    def finish(self) -> Any:
        self.release.set()
        self._thread.join(30)
        return self.result


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def wait_in_flight(http: httpx.Client, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if metric(http.get("/metrics").text, "livefeat_requests_in_flight") == count:
            return
        time.sleep(0.02)
    pytest.fail(f"never {count} requests in flight")


def test_over_the_bound_both_front_ends_refuse_at_once_probes_still_answer(
    fresh_data_dir: Path, start_server: Any
) -> None:
    server: LiveServer = start_server(fresh_data_dir, env={"LIVEFEAT_MAX_IN_FLIGHT": "1"})
    body = {"bundle": "live_ranker", "user_id": 7, "room_ids": [1, 2]}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        held = HeldCall(server.grpc_target, 716_001)
        wait_in_flight(http, 1)

        r = http.post("/v1/bundle", json=body, headers={"X-Request-Id": "over-1"})
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "1"
        assert r.json() == {"error": "Overloaded", "field": "", "request_id": "over-1",
                            "reason": "over 1 requests in flight in this process: retry later"}  # fmt: skip
        assert http.post("/v1/push", json={"view": ROOM, "rows": []}).status_code == 429
        with LivefeatClient(server.grpc_target) as rpc:
            with pytest.raises(grpc.RpcError) as refused:
                rpc.get_bundle(7, [1, 2], timeout=5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailers = dict(refused.value.trailing_metadata() or ())
            assert trailers["livefeat-retry-after-ms"] == "1000"
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert http.get(probe).status_code == 200, probe

        scraped = http.get("/metrics").text
        assert metric(scraped, "livefeat_requests_refused_total", '{transport="http"}') == 2
        assert metric(scraped, "livefeat_requests_refused_total", '{transport="grpc"}') == 1
        assert (
            metric(scraped, "livefeat_requests_total",
                   '{code="429",route="/v1/bundle",transport="http"}') == 1
        )  # fmt: skip

        summary = held.finish()
        assert not isinstance(summary, grpc.RpcError), summary
        wait_in_flight(http, 0)
        ok = http.post("/v1/bundle", json=body)
        assert ok.status_code == 200, ok.text
        # What the held stream wrote was written, whole: compared with what it sent.
        pushed = http.post("/v1/features", json={"view": ROOM, "ids": [716_001]}).json()
        assert pushed["rows"][0]["features"][f"{ROOM}.viewer_count"] == 41
