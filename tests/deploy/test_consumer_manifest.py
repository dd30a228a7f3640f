"""The Kafka consumer Deployment of deploy/ (rendered per overlay): its settings are real,
its probes and metrics port are the ones `livefeat consume` serves, it is scraped once."""

from __future__ import annotations

from typing import Any

import pytest

from service.cli import parser
from service.core.registry import load_registry
from service.settings import DEMO_REGISTRY
from tests.deploy.support import DEPLOY, OVERLAYS, render
from tests.deploy.test_manifests import SETTINGS_ENV, config_env, find, selects

Obj = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(DEPLOY / "overlays" / request.param)


def consumer(objs: list[Obj]) -> tuple[Obj, Obj]:
    deployment = find(objs, "Deployment", "livefeat-consumer")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def test_the_consumer_runs_consume_with_real_settings(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    _, container = consumer(objs)
    args = parser().parse_args(container["args"])
    assert args.command == "consume"
    views = load_registry(DEMO_REGISTRY).views
    assert args.topics and len(args.topics) == len(args.views)
    assert all(v in views for v in args.views)
    env = config_env(objs, container)
    assert not {k for k in env if k.startswith("LIVEFEAT_")} - SETTINGS_ENV
    assert "LIVEFEAT_DATA_DIR" not in env, "consumers write Redis only: no data dir"
    assert env.get("LIVEFEAT_REDIS_URL"), f"{name}: consumers need the Redis serving pods read"
    assert env["LIVEFEAT_KAFKA"]
    (port,) = container["ports"]
    assert port == {"name": "metrics", "containerPort": int(env["LIVEFEAT_METRICS_PORT"]), "protocol": "TCP"}  # fmt: skip
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # fmt: skip
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/etc/livefeat"}


def test_the_consumer_is_scraped_once_on_its_metrics_port(overlay: tuple[str, list[Obj]]) -> None:
    _, objs = overlay
    deployment, _ = consumer(objs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    services = [o for o in objs if o["kind"] == "Service"]
    scraped = [(m["metadata"]["name"], s["metadata"]["name"]) for m in monitors for s in services
               if selects(m["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
               and selects(s["spec"]["selector"], labels)]  # fmt: skip
    assert scraped == [("livefeat-consumer", "livefeat-consumer")]
    service = find(objs, "Service", "livefeat-consumer")
    (endpoint,) = find(objs, "ServiceMonitor", "livefeat-consumer")["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_prod_consumers_read_the_redis_secret_and_dev_runs_none() -> None:
    prod, dev = render(DEPLOY / "overlays" / "prod"), render(DEPLOY / "overlays" / "dev")
    _, container = consumer(prod)
    assert "secretKeyRef" in config_env(prod, container)["LIVEFEAT_REDIS_URL"]
    assert consumer(prod)[0]["spec"]["replicas"] > 1
    assert consumer(dev)[0]["spec"]["replicas"] == 0, "dev has no broker"
