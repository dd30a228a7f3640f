"""The benchmark's PNG report, rendered from its JSON report (matplotlib, Agg backend).

    python -m loadtest.report loadtest/results/bench.json [-o loadtest/results/bench.png]

Top: latency percentiles (p50, p90, p99, p99.9; log scale) of every case, one panel per
concurrency; echo baselines hatched. Middle: throughput against concurrency, one panel per
baseline: livefeat's cases as solid lines, the bare echo server dashed. Bottom: the ratio
table (case / reference per concurrency) and the targets of docs/benchmark-workload.md, green
when met and red when missed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtest.analysis import figure, fmt_num

PERCENTILES = ("p50", "p90", "p99", "p99.9")
PCT_COLORS = ("#4c72b0", "#55a868", "#dd8452", "#c44e52")
OK_COLORS = {True: "#c8e6c9", False: "#ffcdd2", None: "#eeeeee"}


def short(name: str) -> str:
    return name.removeprefix("livefeat-")


def render(report: Mapping[str, Any], path: Path) -> None:
    """Write the PNG report of `report` (the JSON report's dict) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases: Mapping[str, Any] = report["cases"]
    concs = [str(c) for c in report["protocol"]["concurrency"]]
    groups = _groups(cases)
    ratio_rows = _ratio_rows(report["ratios"])
    targets = report["targets"]
    lat_h, tput_h = 2.4 * len(concs) + 0.6, 3.4
    table_h = 0.8 + 0.19 * (len(ratio_rows) + len(targets) + 4)
    fig = plt.figure(figsize=(16, lat_h + tput_h + table_h), layout="constrained")
    subfigs: Any = fig.subfigures(3, 1, height_ratios=[lat_h, tput_h, table_h])
    top, middle, bottom = subfigs
    p = report["protocol"]
    machine = report.get("machine", {})
    fig.suptitle(
        f"livefeat benchmark{' --quick' if p.get('quick') else ''}: medians of "
        f"{p['repetitions']} x {p['duration_s']:g} s runs, {machine.get('date', '')}, "
        f"git {str(machine.get('git', {}).get('commit', ''))[:10]}",
        fontsize=12,
    )
    _latency(top.subplots(len(concs), 1, squeeze=False)[:, 0], cases, concs)
    _throughput(middle.subplots(1, len(groups), squeeze=False)[0], cases, concs, groups)
    ax_r, ax_t = bottom.subplots(2, 1, height_ratios=[len(ratio_rows) + 1, len(targets) + 3])
    _table(ax_r, ["case / reference", "conc", "throughput", "p50", "p99", "CPU/req"], ratio_rows)
    _targets(ax_t, targets, report.get("redis_memory"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plain(value: float, _pos: Any = None) -> str:
    return f"{value:g}"


def _plain_minor(value: float, _pos: Any = None) -> str:
    """Labels for the 2x and 5x minor ticks of a log axis, plainly."""
    return f"{value:g}" if f"{value:.0e}"[0] in "25" else ""


def _groups(cases: Mapping[str, Any]) -> list[list[str]]:
    """Each echo baseline, then the livefeat cases compared with it."""
    return [
        [name, *(n for n, c in cases.items() if c.get("baseline") == name)]
        for name, case in cases.items()
        if case.get("kind") == "echo"
    ]


def _latency(axes: Sequence[Any], cases: Mapping[str, Any], concs: list[str]) -> None:
    width = 0.8 / len(PERCENTILES)
    for ax, conc in zip(axes, concs, strict=True):
        names = [n for n in cases if figure(cases, n, conc, "latency_ms", "p50") is not None]
        for j, (pct, color) in enumerate(zip(PERCENTILES, PCT_COLORS, strict=True)):
            for i, name in enumerate(names):
                echo = cases[name].get("kind") == "echo"
                ax.bar(
                    i + (j - 1.5) * width,
                    figure(cases, name, conc, "latency_ms", pct) or 0,
                    width,
                    color=color,
                    hatch="//" if echo else None,
                    edgecolor="white" if echo else color,
                    label=pct if i == 0 else None,
                )
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_plain)
        ax.yaxis.set_minor_formatter(_plain_minor)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xticks(range(len(names)), [short(n) for n in names], fontsize=8)
        ax.set_ylabel(f"ms at c={conc}")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_title("latency percentiles (log scale), one panel per concurrency", fontsize=10)
    axes[0].legend(fontsize=8, title="hatched: echo", title_fontsize=8, ncols=4)


def _throughput(
    axes: Sequence[Any], cases: Mapping[str, Any], concs: list[str], groups: list[list[str]]
) -> None:
    xs = [int(c) for c in concs]
    for ax, group in zip(axes, groups, strict=True):
        for name in group:
            ys = [figure(cases, name, c, "throughput_rps") for c in concs]
            echo = cases[name].get("kind") == "echo"
            ax.plot(
                xs,
                [float("nan") if y is None else y for y in ys],
                marker="o",
                linestyle="--" if echo else "-",
                color="black" if echo else None,
                label=short(name),
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, concs)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("concurrency")
        ax.set_ylabel("requests/s")
        ax.set_title(f"throughput vs {group[0]}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def _ratio_rows(ratios: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for r in ratios.values():
        label = f"{short(r['case'])} / {short(r['baseline'])}"
        for conc, x in r["concurrency"].items():
            cpu = x.get("backend_cpu_per_request") or x.get("server_cpu_per_request")
            rows.append(
                [
                    label,
                    conc,
                    fmt_num(x["throughput"], ".2f"),
                    fmt_num(x["p50"], ".2f"),
                    fmt_num(x["p99"], ".2f"),
                    fmt_num(cpu, ".2f"),
                ]
            )
            label = ""  # the comparison once per block
    return rows


def _table(
    ax: Any, header: list[str], rows: list[list[str]], colors: list[str] | None = None
) -> Any:
    ax.axis("off")
    if not rows:
        ax.text(0.5, 0.5, "(nothing to show)", ha="center", va="center")
        return None
    table = ax.table(cellText=rows, colLabels=header, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(header))))
    if colors:
        for i, color in enumerate(colors, 1):
            for j in range(len(header)):
                table[i, j].set_facecolor(color)
    return table


def _targets(ax: Any, targets: list[dict[str, Any]], memory: Mapping[str, Any] | None) -> None:
    rows = [
        [
            {True: "ok", False: "MISS", None: "n/a"}[t["ok"]],
            t["target"],
            fmt_num(t["value"], ".2f"),
            t["limit"],
        ]
        for t in targets
    ]
    _table(
        ax,
        ["", "target (benchmark-workload.md)", "value", "limit"],
        rows,
        [OK_COLORS[t["ok"]] for t in targets],
    )
    if memory:
        ax.set_title(
            f"Redis: {memory['keys']:,} keys (users + rooms), used_memory "
            f"+{memory['used_memory_mb']:.1f} MB, {fmt_num(memory.get('bytes_per_key'), '.0f')} B/key",
            fontsize=9,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.report", description=__doc__.splitlines()[0]
    )
    p.add_argument("json", type=Path, help="a report written by loadtest.bench")
    p.add_argument("-o", "--out", type=Path, help="the PNG (default: beside the JSON)")
    args = p.parse_args(argv)
    out = args.out or args.json.with_suffix(".png")
    render(json.loads(args.json.read_text()), out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
