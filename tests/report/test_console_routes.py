"""The console's routes on a server started without --report-dir (the session's demo server)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.process


def test_console_page_and_script_are_served(client: httpx.Client) -> None:
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/ui/console.js"></script>' in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
    script = client.get("/ui/console.js")
    assert script.status_code == 200 and "lookupBundle" in script.text


def test_no_report_is_a_named_404(client: httpx.Client) -> None:
    assert client.get("/ui/report/info").json() == {"available": False}
    for path in ("/ui/report", "/ui/report.json"):
        got = client.get(path)
        assert got.status_code == 404
        assert got.json()["field"] == "report_dir" and "--report-dir" in got.json()["reason"]
    metrics = client.get("/metrics").text
    assert "livefeat_report_generated_timestamp_seconds 0.0" in metrics
    assert "livefeat_report_worst_psi{" not in metrics
