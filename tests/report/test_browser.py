"""report.html and the /ui console in headless Chromium (Debian's, driven by Playwright).

Served by a real `livefeat serve --report-dir` over the data dir of the report
run. Screenshots go to build/test-artifacts/ (gitignored) for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveServer
from tests.report import dataset
from tests.report.conftest import ReportRun, run_livefeat

pytestmark = pytest.mark.process

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"


@pytest.fixture(scope="module")
def live(report_run: ReportRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    logs = tmp_path_factory.mktemp("report-serve")
    extra = ["--registry", str(report_run.data.registry), "--report-dir", str(report_run.out)]
    server = LiveServer(report_run.data_dir, logs, extra)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run scripts/system-deps.sh chromium")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A fresh page and the errors it logs (console errors, uncaught exceptions, requests
    that left the loopback)."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(f"console: {msg.text}")

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: errors.append(f"page: {exc}"))
    pg.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:"))
          else errors.append(f"outside request: {r.url}"))  # fmt: skip
    yield pg, errors
    context.close()


def screenshot(pg: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_report_page_has_every_plot_and_no_errors(
    live: LiveServer, report_run: ReportRun, page: tuple[Page, list[str]]
) -> None:
    pg, errors = page
    pg.goto(f"{live.url}/ui/report")
    shown = pg.eval_on_selector_all(
        "figure.plot", "els => els.map(e => [e.dataset.plot, e.querySelectorAll('svg').length])"
    )
    assert sorted(key for key, _ in shown) == report_run.doc["plots"]
    assert all(n == 1 for _, n in shown)
    flagged = pg.locator("#view-room_stats td.flag")
    assert flagged.count() == 3  # score: PSI, KS and mismatch
    screenshot(pg, "report.png")
    assert errors == []


def _lookup_entity(pg: Page, view: str, entity: str) -> dict[str, str]:
    pg.select_option("#entity-view", view)
    pg.fill("#entity-id", entity)
    pg.click("#entity-form button")
    pg.wait_for_selector("#entity-result")
    rows = pg.eval_on_selector_all(
        "#entity-features tr[data-feature]",
        "els => els.map(e => [e.dataset.feature, e.querySelector('.value').textContent])",
    )
    return {name.removeprefix(f"{view}."): value for name, value in rows}  # view.feature


def test_console_shows_a_known_entity_as_stored(
    live: LiveServer, report_run: ReportRun, page: tuple[Page, list[str]]
) -> None:
    pg, errors = page
    pg.goto(f"{live.url}/ui")
    pg.wait_for_selector("body[data-ready=true]")
    assert pg.locator("#report-anchor").get_attribute("href") == "/ui/report"
    data = report_run.data
    room = next(i for i, s in data.status.items() if s == "FOUND")
    values = _lookup_entity(pg, "room_stats", str(room))
    source = {k: v[room - 1] for k, v in data.rooms.items()}
    assert int(values["viewer_count"]) == source["viewer_count"]
    assert float(values["score"]) == pytest.approx(source["score"] + dataset.SCORE_SHIFT)
    assert float(values["stable"]) == pytest.approx(float(source["stable"]), rel=1e-6)
    assert values["live"] == str(bool(source["live"])).lower()
    assert values["category"] == f'"{source["category"]}"'
    assert pg.locator("#entity-result [data-status]").get_attribute("data-status") == "FOUND"
    assert pg.locator("#answered-by").text_content() in {"l1", "rocksdb"}
    assert pg.locator(".tiers tr[data-tier=rocksdb]").count() == 1
    screenshot(pg, "console-entity.png")
    assert errors == []


def test_console_bundle_colours_each_status(
    live: LiveServer, report_run: ReportRun, page: tuple[Page, list[str]]
) -> None:
    pg, errors = page
    pg.goto(f"{live.url}/ui")
    pg.wait_for_selector("body[data-ready=true]")
    by_status = {s: next(i for i, got in report_run.data.status.items() if got == s)
                 for s in ("FOUND", "STALE", "DEFAULTED")}  # fmt: skip
    pg.fill("#bundle-user", "7")
    pg.fill("#bundle-rooms", " ".join(str(i) for i in by_status.values()))
    pg.click("#bundle-form button")
    pg.wait_for_selector("#bundle-result")
    for status, room in by_status.items():
        badge = pg.locator(f"table[data-role=rooms] tr[data-id='{room}'] [data-status]")
        assert badge.get_attribute("data-status") == status
        colour = badge.evaluate("e => getComputedStyle(e).backgroundColor")
        assert colour != "rgba(0, 0, 0, 0)"
    assert "no user views" in pg.locator("#bundle-result").text_content()
    screenshot(pg, "console-bundle.png")
    # An id opens that entity, tier by tier.
    pg.click(f"table[data-role=rooms] tr[data-id='{by_status['STALE']}'] button")
    pg.wait_for_selector("#entity-result")
    assert pg.locator("#entity-result [data-status]").get_attribute("data-status") == "STALE"
    assert pg.locator(".tiers tr[data-tier=rocksdb]").count() == 1
    # A bad id is named, not a crash.
    pg.fill("#bundle-rooms", "1 x")
    pg.click("#bundle-form button")
    assert "room_ids" in pg.locator("#error").text_content()
    assert pg.locator("#entity-result").count() == 0
    assert errors == []


def test_report_gauges_follow_report_json(live: LiveServer, report_run: ReportRun) -> None:
    text = httpx.get(f"{live.url}/metrics", timeout=5).text
    got = {(s.name, s.labels.get("view")): s.value
           for family in text_string_to_metric_families(text) for s in family.samples
           if s.name.startswith("livefeat_report_")}  # fmt: skip
    views = report_run.doc["views"]
    assert got[("livefeat_report_worst_psi", "room_stats")] == pytest.approx(
        views["room_stats"]["worst"]["psi"]
    )
    assert ("livefeat_report_worst_psi", "user_room_affinity") not in got  # no offline data
    assert got[("livefeat_report_flagged_features", "room_stats")] == 1
    assert got[("livefeat_report_flagged_features", "user_room_affinity")] == 0
    assert got[("livefeat_report_generated_timestamp_seconds", None)] == pytest.approx(
        report_run.doc["generated_ms"] / 1000
    )


def test_report_refuses_a_data_dir_in_use(live: LiveServer, report_run: ReportRun) -> None:
    done = run_livefeat("report", "--registry", str(report_run.data.registry), "--data-dir",
                        str(live.data_dir), "--out", str(report_run.out.parent / "busy"))  # fmt: skip
    assert done.returncode == 2
    assert f"--data-dir {live.data_dir}: in use by a running livefeat" in done.stderr
    assert not (report_run.out.parent / "busy" / "report.json").exists()
