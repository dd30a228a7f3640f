"""Tests of the benchmark's analysis (loadtest/analysis.py) on a synthetic report."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest import analysis


def run(
    rps: float, p50: float, p99: float, cpu: float, redis: float | None = None
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "throughput_rps": rps,
        "latency_ms": {"p50": p50, "p90": p50 * 1.5, "p99": p99, "p99.9": p99 * 1.2},
        "errors": 0,
        "client_cpu_pct": 20.0,
        "server_cpu_pct": 90.0,
        "server_cpu_ms_per_request": cpu,
        "backend_cpu_ms_per_request": cpu + (redis or 0.0),
        "mean_response_bytes": 1000.0,
    }
    if redis is not None:
        figures["redis_cpu_ms_per_request"] = redis
    return figures


def meta(name: str, kind: str, transport: str, store: str | None, n: int) -> dict[str, Any]:
    baseline = f"echo-{transport}-{n}" if kind == "livefeat" else None
    return {"name": name, "kind": kind, "transport": transport, "store": store,
            "candidates": n, "baseline": baseline}  # fmt: skip


CASES = {
    "echo-grpc-100": meta("echo-grpc-100", "echo", "grpc", None, 100),
    "livefeat-grpc-embedded-100": meta("livefeat-grpc-embedded-100", "livefeat", "grpc", "embedded", 100),
    "livefeat-grpc-redis-100": meta("livefeat-grpc-redis-100", "livefeat", "grpc", "redis", 100),
    "livefeat-grpc-cold-100": meta("livefeat-grpc-cold-100", "livefeat", "grpc", "cold", 100),
    "echo-http-100": meta("echo-http-100", "echo", "http", None, 100),
    "livefeat-http-embedded-100": meta("livefeat-http-embedded-100", "livefeat", "http", "embedded", 100),
    "echo-http-500": meta("echo-http-500", "echo", "http", None, 500),
    "livefeat-http-embedded-500": meta("livefeat-http-embedded-500", "livefeat", "http", "embedded", 500),
}  # fmt: skip

FIGURES = {  # case -> concurrency -> figures of one run
    "echo-grpc-100": {1: run(1000, 1.0, 2.0, 0.5), 8: run(2000, 4.0, 8.0, 0.5)},
    "livefeat-grpc-embedded-100": {1: run(900, 1.1, 3.0, 0.6), 8: run(1700, 4.5, 9.0, 0.6)},
    "livefeat-grpc-redis-100": {1: run(800, 1.2, 5.0, 0.7, 0.1), 8: run(1500, 5.0, 10, 0.7, 0.1)},
    "livefeat-grpc-cold-100": {1: run(300, 3.0, 6.0, 2.0, 0.5), 8: run(700, 10, 20, 2.0, 0.5)},
    "echo-http-100": {1: run(2000, 0.5, 1.0, 0.25), 8: run(4000, 2.0, 4.0, 0.25)},
    "livefeat-http-embedded-100": {1: run(500, 2.0, 1.5, 1.0), 8: run(1000, 8.0, 16, 1.0)},
    "echo-http-500": {1: run(1000, 1.0, 2.0, 0.5), 8: run(2000, 4.0, 8.0, 0.5)},
    "livefeat-http-embedded-500": {1: run(150, 7.0, 9.0, 3.5), 8: run(300, 27, 50, 3.5)},
}


def synthetic() -> dict[str, Any]:
    runs = [
        {"case": case, "concurrency": conc, "repetition": 0, "figures": figures}
        for case, per in FIGURES.items()
        for conc, figures in per.items()
    ]
    cases = analysis.aggregate(CASES, [1, 8], runs)
    rat = analysis.ratios(cases)
    memory = {"keys": 120_000, "views": ["user_profile", "room_stats"],
              "used_memory_mb": 55.4, "bytes_per_key": 462.0, "target_mb": 50.0}  # fmt: skip
    return {
        "cases": cases,
        "ratios": rat,
        "targets": analysis.targets(cases, rat, memory),
        "redis_memory": memory,
        "protocol": {"repetitions": 1, "duration_s": 3.0, "warmup_s": 0.5, "concurrency": [1, 8]},
        "setup": {"servers": {}},
    }


def by_name(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in targets}


def test_aggregate_takes_medians_per_case_and_concurrency() -> None:
    runs = [
        {"case": "echo-grpc-100", "concurrency": 8, "repetition": i, "figures": run(rps, 1, 2, 0.5)}
        for i, rps in enumerate([100.0, 300.0, 200.0])
    ]
    cases = analysis.aggregate({"echo-grpc-100": CASES["echo-grpc-100"]}, [1, 8], runs)
    node = cases["echo-grpc-100"]
    assert list(node["concurrency"]) == ["8"]  # no run at concurrency 1: no entry
    assert node["concurrency"]["8"]["median"]["throughput_rps"] == 200.0
    assert len(node["concurrency"]["8"]["runs"]) == 3
    assert node["store"] is None and node["kind"] == "echo"  # the metadata is kept


def test_comparisons_pair_cases_with_echo_warm_and_100() -> None:
    got = analysis.comparisons(synthetic()["cases"])
    assert ("livefeat-grpc-embedded-100", "echo-grpc-100", "vs echo") in got
    assert ("livefeat-grpc-cold-100", "echo-grpc-100", "vs echo") in got
    assert ("livefeat-grpc-cold-100", "livefeat-grpc-redis-100", "cold / warm") in got
    assert ("livefeat-http-embedded-500", "livefeat-http-embedded-100", "500 / 100") in got
    assert len(got) == 7  # 5 vs echo, 1 cold / warm, 1 500 / 100


def test_ratios_divide_the_medians() -> None:
    rat = synthetic()["ratios"]
    echo = rat["livefeat-grpc-embedded-100/echo-grpc-100"]["concurrency"]
    assert echo["8"]["throughput"] == pytest.approx(0.85)
    assert echo["1"]["p99"] == pytest.approx(1.5)
    assert echo["1"]["server_cpu_per_request"] == pytest.approx(1.2)
    cold = rat["livefeat-grpc-cold-100/livefeat-grpc-redis-100"]
    assert cold["kind"] == "cold / warm"
    assert cold["concurrency"]["8"]["throughput"] == pytest.approx(700 / 1500)
    assert cold["concurrency"]["1"]["backend_cpu_per_request"] == pytest.approx(2.5 / 0.8)
    big = rat["livefeat-http-embedded-500/livefeat-http-embedded-100"]["concurrency"]
    assert big["1"]["backend_cpu_per_request"] == pytest.approx(3.5)


def test_targets_from_a_synthetic_report() -> None:
    t = by_name(synthetic()["targets"])
    # warm cases against their echo: throughput at 8 >= 0.8, p99 at 1 <= 2
    assert t["livefeat-grpc-embedded-100/echo-grpc-100 throughput at concurrency 8"]["ok"] is True
    assert t["livefeat-grpc-embedded-100/echo-grpc-100 p99 at concurrency 1"]["ok"] is True
    assert t["livefeat-grpc-redis-100/echo-grpc-100 throughput at concurrency 8"]["ok"] is False
    assert t["livefeat-grpc-redis-100/echo-grpc-100 p99 at concurrency 1"]["value"] == 2.5
    assert t["livefeat-http-embedded-100/echo-http-100 throughput at concurrency 8"]["ok"] is False
    # the cold path is no warm case: no echo target for it
    assert not any(k.startswith("livefeat-grpc-cold-100/echo") for k in t)
    # cold >= 50% of warm, at each concurrency
    assert t["livefeat-grpc-cold-100/livefeat-grpc-redis-100 throughput at concurrency 1"]["ok"] is False  # fmt: skip
    assert t["livefeat-grpc-cold-100/livefeat-grpc-redis-100 throughput at concurrency 8"]["ok"] is False  # fmt: skip
    # 500 candidates at most 3x the cost of 100: CPU per request, p50 at concurrency 1
    key = "livefeat-http-embedded-500/livefeat-http-embedded-100"
    assert t[f"{key} CPU per request (server + Redis) at concurrency 1"]["ok"] is False  # 3.5
    assert t[f"{key} p50 latency at concurrency 1"]["value"] == pytest.approx(3.5)
    mem = t["Redis used_memory of users + rooms, MB"]
    assert (mem["ok"], mem["value"], mem["limit"]) == (False, 55.4, "<= 50")


def test_target_edges_and_missing_figures() -> None:
    assert analysis._target("x", 0.8, 0.8, True)["ok"] is True  # the limit itself passes
    assert analysis._target("x", 2.0, 2.0, False)["ok"] is True
    assert analysis._target("x", None, 2.0, False)["ok"] is None
    cases = analysis.aggregate(
        {k: CASES[k] for k in ("echo-grpc-100", "livefeat-grpc-embedded-100")},
        [1, 8],
        [{"case": "livefeat-grpc-embedded-100", "concurrency": 8, "repetition": 0,
          "figures": run(100, 1, 2, 0.5)}],
    )  # fmt: skip
    rat = analysis.ratios(cases)
    assert rat["livefeat-grpc-embedded-100/echo-grpc-100"]["concurrency"] == {}  # no common conc
    targets = analysis.targets(cases, rat, None)
    assert targets == []  # nothing measurable, no memory figure


def test_ratio_of_a_missing_figure_is_none() -> None:
    report = synthetic()
    del report["cases"]["echo-grpc-100"]["concurrency"]["8"]["median"]["latency_ms"]
    rat = analysis.ratios(report["cases"])
    x = rat["livefeat-grpc-embedded-100/echo-grpc-100"]["concurrency"]["8"]
    assert x["p99"] is None and x["throughput"] == pytest.approx(0.85)
    t = by_name(analysis.targets(report["cases"], rat, None))
    assert t["livefeat-grpc-embedded-100/echo-grpc-100 throughput at concurrency 8"]["ok"] is True


def test_summary_table_shows_cases_ratios_targets_and_memory() -> None:
    text = analysis.summary_table(synthetic())
    assert "livefeat-grpc-cold-100" in text
    assert "livefeat-grpc-cold-100/livefeat-grpc-redis-100" in text
    assert "MISS Redis used_memory of users + rooms, MB: 55.40 (<= 50)" in text
    assert "ok   livefeat-grpc-embedded-100/echo-grpc-100 throughput at concurrency 8" in text
    assert "Redis memory: 120,000 keys" in text
    assert "medians of 1 run of 3 s" in text


def test_figure_lookup() -> None:
    cases = synthetic()["cases"]
    assert analysis.figure(cases, "echo-grpc-100", 8, "throughput_rps") == 2000
    assert analysis.figure(cases, "echo-grpc-100", "1", "latency_ms", "p99") == 2.0
    assert analysis.figure(cases, "echo-grpc-100", 32, "throughput_rps") is None
    assert analysis.figure(cases, "nope", 1, "throughput_rps") is None
    assert analysis.figure(cases, "echo-grpc-100", 1, "latency_ms") is None  # not a number


def test_the_compiled_loops_are_compared_with_the_python_ones() -> None:
    cases = {
        "echo-http-100": meta("echo-http-100", "echo", "http", None, 100),
        "livefeat-http-embedded-100": CASES["livefeat-http-embedded-100"],
        "livefeat-http-python-100": meta("livefeat-http-python-100", "livefeat", "http", "python", 100),
    }  # fmt: skip
    got = analysis.comparisons(cases)
    assert ("livefeat-http-embedded-100", "livefeat-http-python-100", "compiled / python") in got
    assert len(got) == 3  # each against its echo, and the compiled against the Python loops
