"""The web console at /ui and the latest report at /ui/report, added to the HTTP app.

The console is one static page (service/http/static/: HTML and a little
JavaScript, no build step, no external assets) that calls the public routes
(/v1/registry, /v1/bundle, /v1/features, /debug/entity). The report is what
`livefeat report --out DIR` wrote into `--report-dir DIR`; its report.json
also feeds the livefeat_report_* gauges, re-read when scraped if it changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

from service import metrics
from service.errors import NotFound

log = logging.getLogger(__name__)
STATIC = resources.files("service.http") / "static"
ASSETS = {"console.html": "text/html; charset=utf-8", "console.js": "text/javascript"}


class ReportGauges:
    """Keeps the livefeat_report_* gauges equal to `report_dir/report.json`.

    `refresh()` costs one stat() when the file has not changed; a file that is
    missing or unreadable leaves the gauges absent (logged once per change).
    """

    def __init__(self, report_dir: Path | None) -> None:
        self.path = None if report_dir is None else Path(report_dir) / "report.json"
        self._seen: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"<ReportGauges {self.path} seen={self._seen}>"

    def refresh(self) -> None:
        """Re-read report.json if it changed since the last call."""
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except OSError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._seen:
            return
        self._seen = stamp
        self._clear()
        if stamp is not None:
            try:
                self._set(orjson.loads(self.path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self._clear()
                log.warning("report.json not usable: %s: %s", self.path, exc)

    @staticmethod
    def _clear() -> None:
        metrics.REPORT_WORST_PSI.clear()
        metrics.REPORT_FLAGGED_FEATURES.clear()
        metrics.REPORT_GENERATED_SECONDS.set(0)

    @staticmethod
    def _set(doc: dict[str, Any]) -> None:
        for name, view in doc["views"].items():
            psi = view["worst"]["psi"]
            if psi is not None:
                metrics.REPORT_WORST_PSI.labels(name).set(psi)
            metrics.REPORT_FLAGGED_FEATURES.labels(name).set(len(view["flagged"]))
        metrics.REPORT_GENERATED_SECONDS.set(doc["generated_ms"] / 1000)


def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def add_console(app: FastAPI, report_dir: Path | None) -> Callable[[], None]:
    """Add /ui, /ui/console.js, /ui/report, /ui/report.json and /ui/report/info to `app`.

    Returns the function that refreshes the report gauges (call it on scrape).
    /ui/report answers 404 (field "report_dir") when no report is there;
    /ui/report/info says whether one is.
    """
    pages = {name: _asset(name) for name in ASSETS}  # read once: packaged, immutable
    gauges = ReportGauges(report_dir)

    @app.get("/ui", include_in_schema=False)
    async def console() -> Response:
        return Response(pages["console.html"], media_type=ASSETS["console.html"])

    @app.get("/ui/console.js", include_in_schema=False)
    async def console_js() -> Response:
        return Response(pages["console.js"], media_type=ASSETS["console.js"])

    def report_file(name: str, media_type: str) -> Response:
        if report_dir is None:
            raise NotFound("report_dir", "no report directory (serve --report-dir DIR)")
        path = Path(report_dir) / name
        try:
            return Response(path.read_bytes(), media_type=media_type)
        except OSError:
            raise NotFound("report_dir", f"no {name} in {report_dir} yet "
                                         "(livefeat report --out DIR)") from None  # fmt: skip

    @app.get("/ui/report", include_in_schema=False)
    async def report_html() -> Response:
        return report_file("report.html", "text/html; charset=utf-8")

    @app.get("/ui/report.json", include_in_schema=False)
    async def report_json() -> Response:
        return report_file("report.json", "application/json")

    @app.get("/ui/report/info", include_in_schema=False)
    async def report_info() -> Response:
        # The console asks this instead of probing /ui/report: no 404 in the page's log.
        there = report_dir is not None and (Path(report_dir) / "report.html").is_file()
        return Response(orjson.dumps({"available": there}), media_type="application/json")

    gauges.refresh()
    return gauges.refresh
