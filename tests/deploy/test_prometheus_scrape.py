"""A real Prometheus (Debian's `prometheus`) scrapes a real `livefeat serve`.

Both are child processes of this test, on free loopback ports, with their data
in temp dirs; both are stopped by pid (SIGTERM, then SIGKILL after 10 s). A
Prometheus the machine may run on :9090 is never touched. Prometheus loads
deploy/prometheus/livefeat-rules.yaml, and every alert and dashboard query must
evaluate without error against the scraped series.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import LiveServer, free_port
from tests.deploy.support import DEPLOY, tool
from tests.deploy.test_grafana import dashboard, queries

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

RULES = DEPLOY / "prometheus" / "livefeat-rules.yaml"
SCRAPE_TIMEOUT_S = 90.0
# Grafana's variables, as the dashboard's defaults would fill them in.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "5m", "$namespace": ".*", "$pod": ".*"}


class PrometheusServer:
    """One prometheus child on 127.0.0.1, its TSDB and log under `workdir`."""

    def __init__(self, workdir: Path, target: str) -> None:
        binary = tool(
            "prometheus", "apt-get install prometheus (scripts/system-deps.sh prometheus)"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{
                "job_name": "livefeat",
                "static_configs": [{"targets": [target],
                                    "labels": {"namespace": "test", "pod": "livefeat-0"}}],
            }],
        }  # fmt: skip
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.pid = self.proc.pid

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"<PrometheusServer pid={self.pid} {self.url} {state}>"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait(self, check: Callable[[], Any], what: str, timeout_s: float) -> Any:
        """Call `check` until it returns something truthy; fail with the log if it never does."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                last = check()
                if last:
                    return last
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.25)
        pytest.fail(
            f"{what}: not after {timeout_s} s (last: {last!r}); prometheus log:\n{self.log()}"
        )

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query (status, data or error)."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10.0)
        return dict(r.json())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def prometheus_over(tmp_path: Path) -> Iterator[Callable[[LiveServer], PrometheusServer]]:
    started: list[PrometheusServer] = []

    def start(live: LiveServer) -> PrometheusServer:
        target = live.url.removeprefix("http://")
        prom = PrometheusServer(tmp_path, target)
        started.append(prom)
        prom.wait(lambda: httpx.get(f"{prom.url}/-/ready", timeout=2.0).status_code == 200,
                  "prometheus ready", 30.0)  # fmt: skip
        return prom

    yield start
    for prom in started:
        prom.stop()


def _series(prom: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    answer = prom.query(expr)
    assert answer["status"] == "success", f"{expr}: {answer}"
    return list(answer["data"]["result"])


def test_prometheus_scrapes_livefeat_and_every_query_evaluates(
    start_server: Callable[[Path], LiveServer],
    fresh_data_dir: Path,
    prometheus_over: Callable[[LiveServer], PrometheusServer],
) -> None:
    live = start_server(fresh_data_dir)
    prom = prometheus_over(live)
    bundle = {"bundle": "live_ranker", "user_id": 7, "room_ids": [1, 2, 3]}
    with httpx.Client(base_url=live.url, timeout=10.0) as client:
        for _ in range(5):
            assert client.post("/v1/bundle", json=bundle).status_code == 200
        assert client.post("/v1/bundle", json={**bundle, "bundle": "nope"}).status_code == 404

    found = prom.wait(
        lambda: _series(prom, 'livefeat_requests_total{job="livefeat", route="/v1/bundle"}'),
        "livefeat_requests_total scraped",
        SCRAPE_TIMEOUT_S,
    )
    by_code = {s["metric"]["code"]: float(s["value"][1]) for s in found}
    assert by_code.get("200", 0) >= 5 and by_code.get("404", 0) >= 1, by_code
    assert all(s["metric"]["transport"] == "http" for s in found)
    up = _series(prom, 'up{job="livefeat"}')
    assert [s["value"][1] for s in up] == ["1"]
    served = _series(prom, 'sum by (view) (livefeat_served_rows_total{job="livefeat"})')
    assert {s["metric"]["view"] for s in served} >= {"room_stats"}

    # The rules file loads into a real server, and every rule evaluates.
    groups = prom.wait(
        lambda: [g for g in httpx.get(f"{prom.url}/api/v1/rules", timeout=5.0).json()["data"]
                 ["groups"] if g["rules"] and all(r.get("lastEvaluation", "0001").startswith("2")
                                                  for r in g["rules"])],
        "every rule evaluated once", 30.0,
    )  # fmt: skip
    expected = yaml.safe_load(RULES.read_text())["groups"]
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in expected)
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"

    # Every dashboard query parses and evaluates (Grafana's variables filled in).
    for expr in queries(dashboard()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        answer = prom.query(expr)
        assert answer["status"] == "success", f"dashboard query fails: {expr}\n{answer}"

    # Requests after the first scrape show up as a rate, as the dashboard plots it.
    with httpx.Client(base_url=live.url, timeout=10.0) as client:
        for _ in range(5):
            assert client.post("/v1/bundle", json=bundle).status_code == 200
    rate = 'sum(rate(livefeat_requests_total{route="/v1/bundle", code="200"}[1m])) > 0'
    prom.wait(lambda: _series(prom, rate), "a request rate above 0", SCRAPE_TIMEOUT_S)
