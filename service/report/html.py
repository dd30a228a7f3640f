"""report.html: one self-contained page (inline CSS and SVG, no script, no network)."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from service.report.plots import STATUS_COLOURS
from service.report.stats import STATUSES

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.flag { background: #ffebee; color: #b71c1c; font-weight: bold; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; }
figure.plot { margin: 0; border: 1px solid #eee; }
figure.plot svg { display: block; max-width: 100%; height: auto; }
code { background: #f5f5f5; padding: 0 3px; }
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.3e}"
    return escape(str(value))


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _figure(figures: dict[str, str], key: str) -> str:
    svg = figures.get(key)
    return f'<figure class="plot" data-plot="{escape(key)}">{svg}</figure>' if svg else ""


def _summary(dist: dict[str, Any]) -> str:
    kind = dist["type"]
    if kind == "string":
        top = ", ".join(f"{escape(repr(v))} {_pct(s)}" for v, s in dist["top"][:3])
        return f"{dist['cardinality']} distinct; {top}"
    if kind == "bool":
        return f"true {_pct(dist['true_share'])}"
    if kind == "float_vector":
        norm = dist["norm"]
        return f"dim {dist['dim']}; norm mean {_fmt(norm.get('mean'))}"
    if not dist.get("count"):
        return "no stored values"
    q = dist["quantiles"]
    return (f"mean {_fmt(dist['mean'])}; p1 {_fmt(q['p1'])} p50 {_fmt(q['p50'])} "
            f"p99 {_fmt(q['p99'])}")  # fmt: skip


def _skew_cells(skew: dict[str, Any] | None) -> str:
    if skew is None:
        return "<td>-</td><td>-</td><td>-</td>"
    cells = []
    for measure in ("psi", "ks", "mismatch"):
        flagged = ' class="flag"' if measure in skew["flags"] else ""
        cells.append(f"<td{flagged}>{_fmt(skew[measure])}</td>")
    return "".join(cells)


def _view(name: str, view: dict[str, Any], figures: dict[str, str]) -> str:
    rows = []
    for fname, f in view["features"].items():
        rows.append(f"<tr><td>{escape(fname)}</td><td>{f['distribution']['type']}</td>"
                    f"<td>{_pct(f['default_share'])}</td><td>{_summary(f['distribution'])}</td>"
                    f"{_skew_cells(f['skew'])}</tr>")  # fmt: skip
    plots = [_figure(figures, f"{name}/age")]
    plots += [_figure(figures, f"{name}/{fname}") for fname in view["features"]]
    source = ("ids from the offline file " + escape(view["offline"]["path"])
              if view["offline"] else "ids stored in the durable tiers")  # fmt: skip
    q = view["age_ms"]["quantiles_ms"]
    ages = (f"age p50 {_fmt(q['p50'] / 1000)} s, p99 {_fmt(q['p99'] / 1000)} s"
            if q else "no stored values")  # fmt: skip
    flagged = ", ".join(escape(f) for f in view["flagged"]) or "none"
    return f"""
<section id="view-{escape(name)}">
<h2>{escape(name)} <small>({escape(view["entity"])})</small></h2>
<p>{view["sampled"]} of {view["population"]} {source}; {ages}; flagged: {flagged}</p>
<table><tr><th>feature</th><th>type</th><th>default</th><th>distribution (stored values)</th>
<th>PSI</th><th>KS</th><th>mismatch</th></tr>{"".join(rows)}</table>
<div class="plots">{"".join(plots)}</div>
</section>"""


def _overview(doc: dict[str, Any]) -> str:
    head = "".join(f'<th style="color:{STATUS_COLOURS[s]}">{s}</th>' for s in STATUSES)
    rows = []
    for name, v in doc["views"].items():
        shares = "".join(f"<td>{_pct(v['status'][s])}</td>" for s in STATUSES)
        worst = v["worst"]
        flag = ' class="flag"' if v["flagged"] else ""
        rows.append(f'<tr><td><a href="#view-{escape(name)}">{escape(name)}</a></td>'
                    f"<td>{v['sampled']}</td>{shares}<td>{_fmt(worst['psi'])}</td>"
                    f"<td>{_fmt(worst['ks'])}</td><td>{_fmt(worst['mismatch'])}</td>"
                    f"<td{flag}>{len(v['flagged'])}</td></tr>")  # fmt: skip
    return (
        f"<table><tr><th>view</th><th>sampled</th>{head}<th>worst PSI</th><th>worst KS</th>"
        f"<th>worst mismatch</th><th>flagged</th></tr>{''.join(rows)}</table>"
    )


def _served(section: dict[str, Any] | None, figures: dict[str, str]) -> str:
    if section is None:
        return "<p>No served-feature log given (<code>--served</code>).</p>"
    errors = "".join(f"<li><code>{escape(e)}</code></li>" for e in section["errors"])
    parts = [f"<p>{section['records']} records from {len(section['files'])} files; "
             f"{section['bad_lines']} lines skipped.</p>"]  # fmt: skip
    if errors:
        parts.append(f"<ul>{errors}</ul>")
    for view, v in section["views"].items():
        shares = ", ".join(f"{s} {_pct(v['status'][s])}" for s in STATUSES)
        parts.append(f"<h3>{escape(view)}</h3><p>{shares}</p>"
                     f"<div class='plots'>{_figure(figures, 'served/' + view)}</div>")  # fmt: skip
    return "".join(parts)


def render(doc: dict[str, Any], figures: dict[str, str]) -> str:
    """The page for a report document and its figures (SVG text by plot key)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(doc["generated_ms"] / 1000))
    t = doc["thresholds"]
    views = "".join(_view(name, v, figures) for name, v in doc["views"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>livefeat report {when}</title>
<link rel="icon" href="data:,">
<style>{CSS}</style></head><body>
<h1>livefeat feature report</h1>
<p>{when}; registry <code>{escape(doc["registry"])}</code>; tiers {" &gt; ".join(doc["tiers"])};
sample {doc["sample"]} ids per view, seed {doc["seed"]}. Flags: PSI &gt; {t["psi"]},
KS &gt; {t["ks"]}, mismatch &gt; {t["mismatch"]} (at least {t["min_values"]} values).</p>
<h2>Overview</h2>{_overview(doc)}
<div class="plots">{_figure(figures, "status")}</div>
{views}
<h2>Served to rankers</h2>{_served(doc["served"], figures)}
</body></html>
"""
