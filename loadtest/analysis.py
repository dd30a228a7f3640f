"""Pure analysis of benchmark results: medians per case, ratios, targets, the printed table.

Everything here works on the JSON report's plain dicts (``cases``, ``ratios``, ``targets``,
``redis_memory``), so it can be tested from a synthetic report and re-run on a saved one.

A case's metadata (``asdict(Case)``): ``name``, ``kind`` ("livefeat" or "echo"),
``transport`` ("http" or "grpc"), ``store`` ("embedded": L1 + RocksDB; "redis": Redis + L1;
"cold": Redis, L1 off; "python": embedded with the per-row loops in Python; None for an
echo server), ``candidates`` and ``baseline`` (the echo
case it is compared with).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from loadtest import stats

WARM_STORES = ("embedded", "redis")
# The steps towards 0.8 of the echo (docs/benchmark-workload.md): one worker, concurrency 8.
STEP_VS_ECHO = {"http": 0.4, "grpc": 0.5}
FIGURES = {  # ratio name -> path of the figure in a run's medians
    "throughput": ("throughput_rps",),
    "p50": ("latency_ms", "p50"),
    "p99": ("latency_ms", "p99"),
    "server_cpu_per_request": ("server_cpu_ms_per_request",),
    "backend_cpu_per_request": ("backend_cpu_ms_per_request",),
}


def aggregate(
    cases: Mapping[str, Mapping[str, Any]], concurrency: Iterable[int], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per case and concurrency: the raw runs and their per-figure medians."""
    out: dict[str, Any] = {}
    for name, meta in cases.items():
        by_conc: dict[str, Any] = {}
        for conc in concurrency:
            mine = [r for r in runs if r["case"] == name and r["concurrency"] == conc]
            if mine:
                figures = [r["figures"] for r in mine]
                by_conc[str(conc)] = {"median": stats.median_of_runs(figures), "runs": mine}
        out[name] = {**meta, "concurrency": by_conc}
    return out


def figure(cases: Mapping[str, Any], case: str, conc: str | int, *path: str) -> float | None:
    """A median figure of one case at one concurrency, or None."""
    node: Any = cases.get(case, {}).get("concurrency", {}).get(str(conc), {}).get("median")
    for p in path:
        node = node.get(p) if isinstance(node, dict) else None
    return node if isinstance(node, int | float) and not isinstance(node, bool) else None


def comparisons(cases: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(case, reference, kind): each livefeat case against its echo, cold against warm
    Redis, 500 candidates against 100, the compiled loops against the Python ones
    (embedded against python), wherever both cases were measured."""
    livefeat = [c for c in cases.values() if c.get("kind") == "livefeat"]
    out = [(c["name"], c["baseline"], "vs echo") for c in livefeat if c.get("baseline") in cases]

    def find(transport: str, store: str, candidates: int) -> str | None:
        return next(
            (
                c["name"]
                for c in livefeat
                if (c["transport"], c["store"], c["candidates"]) == (transport, store, candidates)
            ),
            None,
        )

    for c in livefeat:
        if c["store"] == "cold" and (warm := find(c["transport"], "redis", c["candidates"])):
            out.append((c["name"], warm, "cold / warm"))
        if c["candidates"] == 500 and (small := find(c["transport"], c["store"], 100)):
            out.append((c["name"], small, "500 / 100"))
        if c["store"] == "embedded" and (py := find(c["transport"], "python", c["candidates"])):
            out.append((c["name"], py, "compiled / python"))
    return out


def ratios(cases: Mapping[str, Any]) -> dict[str, Any]:
    """Each comparison's figure ratios (case / reference) per concurrency, from the medians."""
    out: dict[str, Any] = {}
    for case, ref, kind in comparisons(cases):
        concs = [k for k in cases[case]["concurrency"] if k in cases[ref]["concurrency"]]
        per = {
            conc: {
                name: stats.ratio(figure(cases, case, conc, *path), figure(cases, ref, conc, *path))
                for name, path in FIGURES.items()
            }
            for conc in concs
        }
        out[f"{case}/{ref}"] = {"case": case, "baseline": ref, "kind": kind, "concurrency": per}
    return out


def _target(name: str, value: float | None, limit: float, higher_is_better: bool) -> dict[str, Any]:
    ok = None if value is None else (value >= limit if higher_is_better else value <= limit)
    return {
        "target": name,
        "value": value,
        "limit": f"{'>=' if higher_is_better else '<='} {limit:g}",
        "ok": ok,
    }


def targets(
    cases: Mapping[str, Any], rat: Mapping[str, Any], redis_memory: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The targets (docs/benchmark-workload.md) this run can check; ``ok`` None: figure missing."""
    out: list[dict[str, Any]] = []
    for key, r in rat.items():
        per, kind = r["concurrency"], r["kind"]
        if kind == "vs echo" and cases[r["case"]].get("store") in WARM_STORES:
            if "8" in per:
                step = STEP_VS_ECHO.get(str(cases[r["case"]].get("transport")))
                if step is not None and cases[r["case"]].get("store") == "embedded":
                    out.append(_target(f"{key} throughput at concurrency 8 (step)",
                                       per["8"]["throughput"], step, True))  # fmt: skip
                out.append(
                    _target(f"{key} throughput at concurrency 8", per["8"]["throughput"], 0.8, True)
                )
            if "1" in per:
                out.append(_target(f"{key} p99 at concurrency 1", per["1"]["p99"], 2.0, False))
        elif kind == "cold / warm":
            for conc, x in per.items():
                out.append(
                    _target(f"{key} throughput at concurrency {conc}", x["throughput"], 0.7, True)
                )
        elif kind == "500 / 100":
            for conc, x in per.items():
                out.append(
                    _target(
                        f"{key} CPU per request (server + Redis) at concurrency {conc}",
                        x["backend_cpu_per_request"],
                        3.0,
                        False,
                    )
                )
            if "1" in per:
                out.append(
                    _target(f"{key} p50 latency at concurrency 1", per["1"]["p50"], 3.0, False)
                )
    for name, case in cases.items():
        if case.get("store") != "redis":
            continue
        p50 = figure(cases, name, 8, "latency_ms", "p50")
        p99 = figure(cases, name, 8, "latency_ms", "p99")
        worst = figure(cases, name, 8, "worst_second_p99_ms")
        out.append(_target(f"{name} p99 / p50 at concurrency 8", stats.ratio(p99, p50), 3.0,
                           False))  # fmt: skip
        out.append(_target(f"{name} worst second's p99 / run p50 at concurrency 8",
                           stats.ratio(worst, p50), 4.0, False))  # fmt: skip
    if redis_memory is not None:
        mb = redis_memory.get("used_memory_mb")
        limit = float(redis_memory.get("target_mb", 50.0))
        out.append(_target("Redis used_memory of users + rooms, MB", mb, limit, False))
    return out


# --------------------------------------------------------------------------- the table


def fmt_num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def summary_table(report: Mapping[str, Any]) -> str:
    """The medians, the ratios, the targets and the Redis figures, as printed at the end."""
    cases = report["cases"]
    w = max([len(n) for n in cases] + [20])
    cols = (
        "conc",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9",
        "errors",
        "client",
        "server",
        "srv ms",
        "redis",
        "resp KB",
    )
    units = ("", "", "", "", "", "ms", "", "CPU %", "CPU %", "CPU/req", "ms/req", "")
    widths = (4, 8, 8, 8, 8, 8, 6, 6, 6, 7, 7, 8)
    head = f"{'case':<{w}} " + " ".join(f"{c:>{n}}" for c, n in zip(cols, widths, strict=True))
    lines = [
        head,
        f"{'':<{w}} " + " ".join(f"{u:>{n}}" for u, n in zip(units, widths, strict=True)),
        "-" * len(head),
    ]
    for name, case in cases.items():
        for conc, node in case["concurrency"].items():
            m = node["median"]
            lat = m.get("latency_ms") or {}
            kb = m.get("mean_response_bytes")
            cells = (
                conc,
                fmt_num(m.get("throughput_rps"), ",.0f"),
                fmt_num(lat.get("p50"), ".2f"),
                fmt_num(lat.get("p90"), ".2f"),
                fmt_num(lat.get("p99"), ".2f"),
                fmt_num(lat.get("p99.9"), ".2f"),
                fmt_num(m.get("errors"), ".0f"),
                fmt_num(m.get("client_cpu_pct"), ".0f"),
                fmt_num(m.get("server_cpu_pct"), ".0f"),
                fmt_num(m.get("server_cpu_ms_per_request"), ".3f"),
                fmt_num(m.get("redis_cpu_ms_per_request"), ".3f"),
                fmt_num(None if kb is None else kb / 1024, ".1f"),
            )
            lines.append(
                f"{name:<{w}} " + " ".join(f"{c:>{n}}" for c, n in zip(cells, widths, strict=True))
            )
    kw = max([len(k) for k in report["ratios"]] + [30])
    lines += [
        "",
        f"{'ratio (case / reference)':<{kw}} {'conc':>4} {'throughput':>10} {'p50':>6} "
        f"{'p99':>6} {'srv CPU/req':>11} {'+redis':>7}",
    ]
    for key, r in report["ratios"].items():
        for conc, x in r["concurrency"].items():
            lines.append(
                f"{key:<{kw}} {conc:>4} {fmt_num(x['throughput'], '.2f'):>10} "
                f"{fmt_num(x['p50'], '.2f'):>6} {fmt_num(x['p99'], '.2f'):>6} "
                f"{fmt_num(x['server_cpu_per_request'], '.2f'):>11} "
                f"{fmt_num(x['backend_cpu_per_request'], '.2f'):>7}"
            )
    lines += ["", "targets (docs/benchmark-workload.md)"]
    lines += [target_line(t, fmt_num(t["value"], ".2f")) for t in report["targets"]]
    mem = report.get("redis_memory")
    if mem:
        lines.append(
            f"\nRedis memory: {mem['keys']:,} keys of {', '.join(mem['views'])}: used_memory "
            f"+{mem['used_memory_mb']:.1f} MB ({fmt_num(mem.get('bytes_per_key'), '.0f')} B/key)"
        )
    for server, info in report.get("setup", {}).get("servers", {}).items():
        keys = info.get("tier_counters", {}).get("keys")
        if keys:
            parts = [
                f"{tier} " + "/".join(f"{k} {v:,.0f}" for k, v in sorted(r.items()))
                for tier, r in keys.items()
            ]
            lines.append(f"{server} keys by tier: {'; '.join(parts)}")
    p = report.get("protocol", {})
    reps = p.get("repetitions", 1)
    lines.append(
        f"\nmedians of {reps} run{'s' * (reps > 1)} of {p.get('duration_s', 0):g} s "
        f"(after {p.get('warmup_s', 0):g} s warm-up); CPU % of one core; "
        "srv: livefeat's CPU ms per request; redis: redis-server's"
    )
    return "\n".join(lines)


def target_line(target: Mapping[str, Any], value: str, extra: str = "") -> str:
    """One line of a targets list: ok / MISS / n/a, the target, the value and its limit."""
    mark = {True: "ok  ", False: "MISS", None: "n/a "}[target["ok"]]
    return f"  {mark} {target['target']}: {value} ({target['limit']}){extra}"


def measure_and_publish(
    name: str,
    measure: Callable[[Any], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    args: Any,
) -> int:
    """A load script's main: `measure(args)`, then publish its report to `args.out`.
    Returns the exit code (1, with the reason printed, if the measure raised RuntimeError)."""
    try:
        report = measure(args)
    except RuntimeError as exc:
        print(f"{name}: {exc}")
        return 1
    publish(report, args.out, table(report), name)
    return 0


def publish(report: Mapping[str, Any], out: Path, table: str, name: str) -> None:
    """Write the JSON report to `out`, then print its table and where the figures are."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table)
    print(f"\n{name}: {report['elapsed_s']:.0f} s; every figure in {out}")
