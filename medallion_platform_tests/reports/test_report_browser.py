"""The written KPI report in a real headless Chromium (Debian's, through Playwright), opened
from disk: no console or page error, no request beyond the file, every chart drawn."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from medallion_platform.reports import CHARTS, write_kpi_report
from medallion_platform_tests.reports import make_warehouse

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("MEDALLION_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MEDALLION_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(f"{reason}; set MEDALLION_REQUIRE_BROWSER=1 to make this a failure")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def report(tmp_path: Path, dataset: str) -> Path:
    warehouse = make_warehouse(tmp_path / "warehouse.duckdb", dataset)
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return write_kpi_report(conn, tmp_path / "reports" / "kpi_report.html").path


def open_page(browser, path: Path):
    """The page, loaded, with what went wrong (console errors, page errors, requests)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else 0)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "request",
        lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(r.url),
    )
    page.goto(path.as_uri(), wait_until="load")
    return page, problems


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_renders_every_chart_without_errors(browser, tmp_path: Path) -> None:
    page, problems = open_page(browser, report(tmp_path, "realistic"))
    try:
        assert page.title().startswith("KPI report")
        figures = page.locator("figure[data-chart]")
        assert [figures.nth(i).get_attribute("data-chart") for i in range(figures.count())] == (
            list(CHARTS)
        )
        for chart in CHARTS:
            figure = page.locator(f'figure[data-chart="{chart}"]')
            assert figure.locator("figcaption").is_visible(), chart
            svg = figure.locator("svg").first
            box = svg.bounding_box()
            assert box and box["width"] > 200 and box["height"] > 100, (chart, box)
            marks = svg.locator("rect.bar, g.series path")
            assert marks.count() > 0, chart
            mark = marks.first.bounding_box()
            assert mark and mark["width"] > 0 and mark["height"] > 0, (chart, mark)
            assert figure.locator("details table tr").count() > 1, chart
            assert figure.locator(".no-data").count() == 0, chart
        assert page.locator('figure[data-chart="funnel"] rect.bar title').count() == 5
        assert page.locator('figure[data-chart="churn_risk"] svg').first.locator(
            "rect.bar"
        ).count() == (10)
        shot = tmp_path / "kpi_report.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    assert problems == []
    data = shot.read_bytes()
    width, height = png_size(data)
    assert width == 1280 and height >= 900, (width, height)
    assert len(data) > 50_000  # a blank page compresses to a few kB


def test_empty_warehouse_shows_no_data_notes(browser, tmp_path: Path) -> None:
    page, problems = open_page(browser, report(tmp_path, "empty"))
    try:
        for chart in CHARTS:
            note = page.locator(f'figure[data-chart="{chart}"] .no-data')
            assert note.is_visible(), chart
            assert "No data yet" in note.inner_text(), chart
    finally:
        page.close()
    assert problems == []
