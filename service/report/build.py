"""`livefeat report`: sample each view through the core, measure, write report.json and .html.

The core is built as serving builds it (service.server.build_core), so the
statuses and ages in the report are the ones a ranker would get.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
from tqdm import tqdm

from service.core.codec import Feature
from service.core.registry import Registry, ViewPlan, load_registry
from service.core.service import FeatureService
from service.errors import DataDirBusy, LivefeatError
from service.report import plots, served, skew, stats
from service.report.html import render
from service.report.offline import OfflineView, read_offline
from service.report.options import ReportOptions
from service.report.sample import SampledRows, choose, parse_key, read_rows, stored_keys
from service.settings import Settings

FORMAT = 1
STORED = ("FOUND", "STALE")


async def write_report(settings: Settings, options: ReportOptions) -> dict[str, Any]:
    """Measure every view, write OUT/report.json and OUT/report.html; return the JSON document.

    Raises LivefeatError (a bad flag, an unreadable file, a busy data dir).
    """
    registry = load_registry(settings.registry)
    offline = {view: _read_offline(registry.views[view], path)
               for view, path in options.offline.items()}  # fmt: skip
    served_log = _read_served(options.served) if options.served else None
    started = time.time()
    from service.server import build_core  # the serving stack, once the inputs are read

    try:
        core = build_core(settings, registry)
    except DataDirBusy:
        raise LivefeatError(
            f"--data-dir {settings.data_dir}: in use by a running livefeat; give the report a "
            "data dir of its own with --redis-url, or a copy (livefeat snapshot, restore)"
        ) from None
    figures: dict[str, str] = {}
    try:
        views = {name: await _view(core, plan, offline.get(name), options, figures)
                 for name, plan in registry.views.items()}  # fmt: skip
    finally:
        await core.store.close()
    figures["status"] = plots.status_shares({v: r["status"] for v, r in views.items()},
                                            "status shares of the sample, per view")  # fmt: skip
    document = {
        "format": FORMAT,
        "generated_ms": int(started * 1000),
        "registry": str(settings.registry),
        "tiers": ["l1", *(t.name for t in core.store.tiers)],
        "sample": options.sample,
        "seed": options.seed,
        "thresholds": skew.THRESHOLDS,
        "views": views,
        "served": served_section(served_log, registry, figures) if served_log else None,
    }
    document["plots"] = sorted(figures)  # what report.html shows (checked by tests and CI)
    options.out.mkdir(parents=True, exist_ok=True)
    _replace(options.out / "report.html", render(document, figures).encode())
    _replace(
        options.out / "report.json",
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY),
    )
    return document


def _replace(path: Path, content: bytes) -> None:
    """Write `path` whole or not at all: a serving process reading it never sees half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def _read_offline(plan: ViewPlan, path: Path) -> OfflineView:
    try:
        total = pq.read_metadata(path).num_rows
    except Exception:  # unreadable: check_file (read_offline) names the problem
        total = None
    with tqdm(total=total, unit="rows", unit_scale=True, desc=f"offline {plan.name}",
              disable=None) as bar:  # fmt: skip
        return read_offline(plan, path, bar.update)


def _read_served(paths: list[Path]) -> served.ServedLog:
    files = served.served_files(paths)
    total = sum(f.stat().st_size for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="served log", disable=None) as bar:
        return served.read_served(files, bar.update)


async def _view(
    core: FeatureService,
    plan: ViewPlan,
    offline: OfflineView | None,
    options: ReportOptions,
    figures: dict[str, str],
) -> dict[str, Any]:
    if offline is not None:
        population = len(offline.ids)
        chosen = choose(offline.ids, options.sample, options.seed)
    else:
        keys = await stored_keys(core.store, plan)
        population = len(keys)
        chosen = [parse_key(plan, k) for k in choose(keys, options.sample, options.seed)]
    with tqdm(total=len(chosen), unit="ids", unit_scale=True, desc=f"read {plan.name}",
              disable=None) as bar:  # fmt: skip
        rows = await read_rows(core, plan, chosen, bar.update)
    age = stats.age_summary(rows.ages_ms)
    if age["count"]:
        hist = age["histogram_ms"]
        figures[f"{plan.name}/age"] = plots.histogram(
            [e / 1000 for e in hist["edges"]], hist["counts"], f"{plan.name}: value age", "seconds"
        )
    stored = [i for i, s in enumerate(rows.statuses) if s in STORED]
    index = offline.index() if offline is not None else {}
    features = {}
    for f in plan.codec.features:
        features[f.name] = _feature(plan, f, rows, stored, offline, index, figures)
    return {
        "entity": plan.entity,
        "id_source": "offline" if offline is not None else "store",
        "offline": None
        if offline is None
        else {
            "path": str(offline.path),
            "rows": offline.rows_read,
            "entities": len(offline.ids),
        },
        "population": population,
        "sampled": len(chosen),
        "status": stats.status_shares(rows.statuses),
        "age_ms": age,
        "features": features,
        "worst": _worst(features),
        "flagged": sorted(n for n, f in features.items() if f["skew"] and f["skew"]["flags"]),
    }


def _feature(
    plan: ViewPlan,
    f: Feature,
    rows: SampledRows,
    stored: list[int],
    offline: OfflineView | None,
    index: dict[Any, int],
    figures: dict[str, str],
) -> dict[str, Any]:
    values = [rows.values[i][f.name] for i in stored]
    summary = stats.feature_summary(f, values)
    out: dict[str, Any] = {
        "distribution": summary,
        "default_share": stats.default_share(f, [v[f.name] for v in rows.values]),
        "skew": None,
    }
    key = f"{plan.name}/{f.name}"
    title = f"{plan.name}.{f.name}"
    numeric = f.type in ("int64", "double", "float")
    if offline is not None:
        column = offline.columns[f.name]
        pairs = [(column[index[rows.ids[i]]], rows.values[i][f.name]) for i in stored
                 if rows.ids[i] in index]  # fmt: skip
        out["skew"] = skew.feature_skew(f, column, values, pairs)
        if numeric:
            figures[key] = plots.compare(np.asarray(column, np.float64),
                                         np.asarray(values, np.float64), title)  # fmt: skip
            return out
    if numeric and summary.get("count"):
        hist = summary["histogram"]
        figures[key] = plots.histogram(hist["edges"], hist["counts"], title, f.name)
    elif f.type == "float_vector" and summary["norm"].get("count"):
        hist = summary["norm"]["histogram"]
        figures[key] = plots.histogram(hist["edges"], hist["counts"], title, "L2 norm")
    elif f.type in ("string", "bool") and summary.get("count"):
        top = summary["top"] if f.type == "string" else [
            [True, summary["true_share"]], [False, summary["false_share"]]]  # fmt: skip
        figures[key] = plots.top_values(top, title)
    return out


def _served_values(f: Feature, values: list[Any]) -> dict[str, Any]:
    """The distribution of a feature's served values, or why there is none: the log is
    written by other processes (maybe under another registry), its values are not trusted."""
    try:
        return stats.feature_summary(f, values)
    except (ValueError, TypeError):
        return {"type": f.type, "error": f"served values are not all {f.type}"}


def _worst(features: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for measure in ("psi", "ks", "mismatch"):
        got = [f["skew"][measure] for f in features.values()
               if f["skew"] and f["skew"][measure] is not None]  # fmt: skip
        out[measure] = max(got) if got else None
    return out


def served_section(
    log: served.ServedLog, registry: Registry, figures: dict[str, str]
) -> dict[str, Any]:
    """The `served` part of report.json; adds a status-over-time plot per view to `figures`."""
    views: dict[str, Any] = {}
    for view in log.views():
        series = log.status_series(view)
        totals = {s: sum(series[s]) for s in stats.STATUSES}
        n = sum(totals.values()) or 1
        plan = registry.views.get(view)
        features = {}
        for f in plan.codec.features if plan else []:
            got = log.values.get(f"{view}.{f.name}", [])
            if got:
                features[f.name] = _served_values(f, got)
        views[view] = {
            "known_view": plan is not None,
            "status": {s: c / n for s, c in totals.items()},
            "series": series,
            "age_ms": stats.age_summary(log.ages_ms.get(view, [])),
            "features": features,
        }
        figures[f"served/{view}"] = plots.status_over_time(
            series, f"{view}: served statuses per {series['width_s']} s"
        )
    return {"files": log.files, "records": log.records, "bad_lines": log.bad_lines,
            "errors": log.errors, "first_ms": log.first_ms, "last_ms": log.last_ms,
            "views": views}  # fmt: skip
