"""Plots as inline SVG text (matplotlib, no pyplot: no global state, no display).

Text stays text in the SVG (`svg.fonttype: none`): small files, no glyph
definitions whose ids could clash between the many SVGs of one page.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

STATUS_COLOURS = {"FOUND": "#2e7d32", "STALE": "#f9a825", "DEFAULTED": "#78909c",
                  "UNAVAILABLE": "#c62828"}  # fmt: skip
SMALL = (4.2, 2.2)  # inches
WIDE = (8.4, 2.6)


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "livefeat"}):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or doctype


def _figure(
    size: tuple[float, float], title: str, left: float = 0.14, bottom: float = 0.24
) -> tuple[Figure, Axes]:
    # Fixed margins: a tight bounding box draws the figure twice (half of a report's time).
    fig = Figure(figsize=size)
    fig.subplots_adjust(left=left, right=0.97, bottom=bottom, top=0.88)
    ax: Axes = fig.subplots()
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    return fig, ax


def histogram(edges: Sequence[float], counts: Sequence[int], title: str, xlabel: str) -> str:
    """Bars of a histogram given its edges and counts."""
    fig, ax = _figure(SMALL, title)
    if counts:  # one filled step artist, not a rectangle per bin: half the drawing time
        ax.stairs(counts, edges, fill=True, color="#5c6bc0")
    ax.set_xlabel(xlabel, fontsize=8)
    return _svg(fig)


def compare(offline: np.ndarray, served: np.ndarray, title: str) -> str:
    """Offline and served distributions of one numeric feature, on shared bins (shares)."""
    fig, ax = _figure(SMALL, title)
    both = np.concatenate([offline, served])
    if len(both):
        low, high = float(both.min()), float(both.max())
        bins = np.linspace(low, high if high > low else low + 1, 21).tolist()
        for values, label, colour in (
            (offline, "offline", "#8d6e63"),
            (served, "served", "#1e88e5"),
        ):
            if len(values):
                weights = np.full(len(values), 1 / len(values))
                ax.hist(values, bins=bins, weights=weights, histtype="step", label=label,
                        color=colour, linewidth=1.5)  # fmt: skip
        ax.legend(fontsize=7)
    ax.set_ylabel("share", fontsize=8)
    return _svg(fig)


def top_values(top: Sequence[Sequence[Any]], title: str) -> str:
    """Horizontal bars of the most frequent values and their shares."""
    fig, ax = _figure(SMALL, title, left=0.3)
    labels = [repr(v[0])[:24] for v in top][::-1]
    shares = [float(v[1]) for v in top][::-1]
    ax.barh(labels, shares, color="#5c6bc0")
    ax.set_xlabel("share", fontsize=8)
    return _svg(fig)


def status_shares(shares: Mapping[str, Mapping[str, float]], title: str) -> str:
    """One stacked horizontal bar per view: its status shares."""
    fig, ax = _figure((8.4, 1.2 + 0.4 * max(len(shares), 1)), title, left=0.2)
    views = list(shares)
    left = np.zeros(len(views))
    for status, colour in STATUS_COLOURS.items():
        values = np.array([shares[v].get(status, 0.0) for v in views])
        ax.barh(views, values, left=left, color=colour, label=status)
        left += values
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return _svg(fig)


def status_over_time(series: Mapping[str, Any], title: str) -> str:
    """Status shares per time bucket of the served log, stacked (x: minutes from the first)."""
    fig, ax = _figure(WIDE, title, left=0.08, bottom=0.36)
    starts = np.asarray(series["start_ms"], dtype=np.float64)
    if len(starts):
        # One more point at the end of the last bucket: steps show every bucket whole.
        x = (np.append(starts, starts[-1] + 1000 * series["width_s"]) - starts[0]) / 60_000
        counts = np.array([series[s] for s in STATUS_COLOURS], dtype=np.float64)
        shares = counts / np.maximum(counts.sum(axis=0), 1)
        shares = np.concatenate([shares, shares[:, -1:]], axis=1)
        ax.stackplot(x, shares, labels=list(STATUS_COLOURS),
                     colors=list(STATUS_COLOURS.values()), step="post")  # fmt: skip
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.32))
    ax.set_ylim(0, 1)
    ax.set_xlabel("minutes from the first record", fontsize=8)
    return _svg(fig)
