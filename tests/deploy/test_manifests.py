"""deploy/ rendered by `kubectl kustomize` per overlay: valid objects that fit the service.

Core kinds are validated against Kubernetes' JSON schemas by kubernetes-validate
in strict mode (an unexpected field fails), for the oldest and newest versions
we target. ServiceMonitor and PrometheusRule (Prometheus Operator CRDs) have no
schema there: the tests below check their structure instead, and that they
point at what the other objects and docs/runbook.md really hold.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service import server
from service.settings import Settings
from tests.deploy.support import (
    DEPLOY,
    METRIC_NAME,
    OPERATOR_KINDS,
    OVERLAYS,
    ROOT,
    exposed_metric_names,
    render,
)

pytestmark = pytest.mark.process  # runs kubectl: `pytest -m "not process"` skips it


K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
RULES = DEPLOY / "prometheus" / "livefeat-rules.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
SETTINGS_ENV = {f"LIVEFEAT_{name.upper()}" for name in Settings.model_fields}
Obj = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(DEPLOY / "overlays" / request.param)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(DEPLOY / "overlays" / name) for name in OVERLAYS}


def find(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def livefeat_container(objs: list[Obj]) -> Obj:
    deployment = find(objs, "Deployment", "livefeat")
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"]
                if c["name"] == "livefeat")  # fmt: skip


def config_env(objs: list[Obj], container: Obj) -> dict[str, Any]:
    """The container's environment: its envFrom ConfigMaps, then its own env entries."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env |= find(objs, "ConfigMap", source["configMapRef"]["name"])["data"]
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return out


def test_every_object_validates_strictly_or_is_an_operator_crd(
    overlay: tuple[str, list[Obj]],
) -> None:
    name, objs = overlay
    kinds = {(o["apiVersion"], o["kind"]) for o in objs}
    assert kinds >= OPERATOR_KINDS, f"{name}: the ServiceMonitor and PrometheusRule are missing"
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in OPERATOR_KINDS:
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.utils.SchemaNotFoundError:
                pytest.fail(f"{name}: no schema for {obj['apiVersion']} {obj['kind']}")
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} ({version}): "
                            f"{where}: {exc.message}")  # fmt: skip


def test_requests_autoscaling_component_renders_and_validates(tmp_path: Path) -> None:
    rel = os.path.relpath(DEPLOY, tmp_path)  # kustomize refuses absolute paths here
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [f"{rel}/overlays/prod"],
        "components": [f"{rel}/components/requests-autoscaling"],
    }))  # fmt: skip
    hpa = find(render(tmp_path), "HorizontalPodAutoscaler", "livefeat")
    kubernetes_validate.validate(hpa, K8S_VERSIONS[0], strict=True)
    kinds = {m["type"] for m in hpa["spec"]["metrics"]}
    assert kinds == {"Resource", "Pods"}


def test_registry_copy_is_the_demo_registry(overlay: tuple[str, list[Obj]]) -> None:
    demo = (ROOT / "service" / "demo_registry.yaml").read_text()
    assert (DEPLOY / "base" / "demo_registry.yaml").read_text() == demo, (
        "deploy/base/demo_registry.yaml differs from service/demo_registry.yaml: "
        "cp service/demo_registry.yaml deploy/base/"
    )
    _, objs = overlay
    configmap = next(o for o in objs if o["kind"] == "ConfigMap"
                     and o["metadata"]["name"].startswith("livefeat-registry-"))  # fmt: skip
    assert configmap["data"]["registry.yaml"] == demo


def test_settings_are_real_and_agree_with_the_pod(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    container = livefeat_container(objs)
    env = config_env(objs, container)
    unknown = {k for k in env if k.startswith("LIVEFEAT_")} - SETTINGS_ENV
    assert not unknown, f"{name}: no such setting in service/settings.py: {unknown}"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(env["LIVEFEAT_HTTP_PORT"]), "grpc": int(env["LIVEFEAT_GRPC_PORT"])}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert env["LIVEFEAT_DATA_DIR"] in mounts, "RocksDB needs a writable volume at the data dir"
    assert "/tmp" in mounts
    registry = Path(env["LIVEFEAT_REGISTRY"])
    assert mounts[str(registry.parent)]["readOnly"] is True


def test_pod_security_probes_and_drain(overlay: tuple[str, list[Obj]]) -> None:
    _, objs = overlay
    pod = find(objs, "Deployment", "livefeat")["spec"]["template"]["spec"]
    container = livefeat_container(objs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    dockerfile_user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert dockerfile_user and pod["securityContext"]["runAsUser"] == int(dockerfile_user[1])
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["enableServiceLinks"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    needed = int(command[1]) + server.DRAIN_DELAY_S + server.GRACE_S
    assert pod["terminationGracePeriodSeconds"] > needed, "the drain must fit in the grace period"
    zones = [c for c in pod["topologySpreadConstraints"]
             if c["topologyKey"] == "topology.kubernetes.io/zone"]  # fmt: skip
    assert zones, "pods spread across zones"
    requests = container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests) and "memory" in container["resources"]["limits"]


def test_selectors_match_the_pods(overlay: tuple[str, list[Obj]]) -> None:
    _, objs = overlay
    deployment = find(objs, "Deployment", "livefeat")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    service = find(objs, "Service", "livefeat")
    assert selects(service["spec"]["selector"], labels)
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "http"}
    assert selects(find(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] == "livefeat"
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_service_monitor_scrapes_the_livefeat_service_once(overlay: tuple[str, list[Obj]]) -> None:
    _, objs = overlay
    monitor = find(objs, "ServiceMonitor", "livefeat")
    selector = monitor["spec"]["selector"]["matchLabels"]
    matched = [o for o in objs if o["kind"] == "Service"
               and selects(selector, o["metadata"]["labels"])]  # fmt: skip
    assert [s["metadata"]["name"] for s in matched] == ["livefeat"], "one Service, no double scrape"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in matched[0]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+s", endpoint["interval"])
    assert monitor["spec"]["jobLabel"] in matched[0]["metadata"]["labels"]
    assert matched[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "livefeat"


def iter_rules(groups: list[Obj]) -> Iterator[Obj]:
    for group in groups:
        yield from group["rules"]


def test_prometheus_rule_is_the_plain_rules_file(overlay: tuple[str, list[Obj]]) -> None:
    _, objs = overlay
    rule = find(objs, "PrometheusRule", "livefeat")
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    plain = yaml.safe_load(RULES.read_text())
    assert rule["spec"]["groups"] == plain["groups"], (
        "deploy/base/prometheusrule.yaml differs from deploy/prometheus/livefeat-rules.yaml: "
        "run make deploy-rules"
    )


def test_alerts_are_complete_and_name_real_series() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exposed = exposed_metric_names()
    sections = anchors(RUNBOOK.read_text())
    alerts = [r for r in iter_rules(groups) if "alert" in r]
    assert len({a["alert"] for a in alerts}) == len(alerts) >= 8
    for alert in alerts:
        where = alert["alert"]
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, where
        assert alert["labels"]["severity"] in {"warning", "critical"}, where
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"]), where
        page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor in sections, f"{where}: no runbook section"
        assert anchor == where.lower(), f"{where}: the runbook section is named after the alert"
        unknown = set(METRIC_NAME.findall(alert["expr"])) - exposed
        assert not unknown, f"{where} uses series livefeat does not export: {unknown}"
    expected = {"livefeat_requests_total", "livefeat_request_duration_seconds_bucket",
                "livefeat_tier_errors_total", "livefeat_tier_circuit_open",
                "livefeat_tier_keys_total", "livefeat_served_rows_total",
                "livefeat_newest_event_timestamp_seconds",
                "kube_pod_container_status_restarts_total"}  # fmt: skip
    used = {m for a in alerts for m in re.findall(r"\b[a-z_]+_[a-z_]+\b", a["expr"])}
    assert expected <= used


def test_dev_runs_one_pod_beside_its_own_redis(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["dev"]
    assert find(objs, "Deployment", "livefeat")["spec"]["replicas"] == 1
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    redis = find(objs, "Service", "redis")
    find(objs, "Deployment", "redis")
    url = config_env(objs, livefeat_container(objs))["LIVEFEAT_REDIS_URL"]
    port = redis["spec"]["ports"][0]["port"]
    assert re.fullmatch(rf"redis://redis:{port}/\d+", url), url
    job = find(objs, "Job", "livefeat-demo-load")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][0] == "demo"


def test_prod_uses_redis_cluster_from_a_secret_and_more_pods(
    rendered: dict[str, list[Obj]],
) -> None:
    prod, dev = rendered["prod"], rendered["dev"]
    env = config_env(prod, livefeat_container(prod))
    assert "secretKeyRef" in env["LIVEFEAT_REDIS_URL"], "the Redis URL (password) from a Secret"
    cluster_hint = (DEPLOY / "overlays" / "prod" / "kustomization.yaml").read_text()
    assert "redis+cluster://" in cluster_hint
    hpa = find(prod, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] > find(dev, "Deployment", "livefeat")["spec"]["replicas"]
    assert find(prod, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    pod = find(prod, "Deployment", "livefeat")["spec"]["template"]["spec"]
    zone = next(c for c in pod["topologySpreadConstraints"]
                if c["topologyKey"] == "topology.kubernetes.io/zone")  # fmt: skip
    assert zone["whenUnsatisfiable"] == "DoNotSchedule"
    image = livefeat_container(prod)["image"]
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


def report_container(objs: list[Obj]) -> Obj:
    cronjob = find(objs, "CronJob", "livefeat-report")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def test_report_cronjob_reads_what_the_pods_read(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    cronjob = find(objs, "CronJob", "livefeat-report")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = report_container(objs)
    args = container["args"]
    assert args[0] == "report"
    server_env = config_env(objs, livefeat_container(objs))
    report_env = config_env(objs, container)
    assert report_env["LIVEFEAT_REDIS_URL"] == server_env["LIVEFEAT_REDIS_URL"], name
    assert report_env["LIVEFEAT_REGISTRY"] == server_env["LIVEFEAT_REGISTRY"]
    assert container["image"] == livefeat_container(objs)["image"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    out = Path(args[args.index("--out") + 1])
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}  # fmt: skip
    assert claims[mounts[str(out.parent)]] == "livefeat-reports"
    find(objs, "PersistentVolumeClaim", "livefeat-reports")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in mounts  # matplotlib's cache (MPLCONFIGDIR) and temporary files
    # Not a serving pod: neither the Service nor the PDB selects it.
    labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not selects(find(objs, "Service", "livefeat")["spec"]["selector"], labels)
    pdb = find(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert not selects(pdb, labels)


def test_report_serving_component_mounts_the_reports(tmp_path: Path) -> None:
    rel = os.path.relpath(DEPLOY, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [f"{rel}/overlays/prod"],
        "components": [f"{rel}/components/report-serving"],
    }))  # fmt: skip
    objs = render(tmp_path)
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) not in OPERATOR_KINDS:
            kubernetes_validate.validate(obj, K8S_VERSIONS[0], strict=True)
    container = livefeat_container(objs)
    env = config_env(objs, container)
    args = report_container(objs)["args"]
    assert env["LIVEFEAT_REPORT_DIR"] == args[args.index("--out") + 1]
    assert "LIVEFEAT_REPORT_DIR" in SETTINGS_ENV
    mount = next(m for m in container["volumeMounts"] if m["name"] == "reports")
    assert mount["readOnly"] is True and env["LIVEFEAT_REPORT_DIR"].startswith(mount["mountPath"])
    claim = find(objs, "PersistentVolumeClaim", "livefeat-reports")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
