"""The KPI report from hand-made gold tables: figures, escaping, empty data, atomic writes,
and the Dagster asset that writes it under the platform home."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html import unescape
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from medallion_platform.defs.reports import (
    KPI_REPORT_DEPS,
    KPI_REPORT_KEY,
    build_kpi_report_asset,
    kpi_report_path,
)
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.reports import CHARTS, build_kpi_report, write_kpi_report
from medallion_platform.reports import kpi_report as kpi_module
from medallion_platform.reports.formats import EN_DASH, TIMES
from medallion_platform.settings import PlatformSettings
from medallion_platform_tests.reports import (
    EVIL_CHANNEL,
    create_tables,
    insert,
    load_tiny,
    make_warehouse,
)

X, DASH = TIMES, EN_DASH  # multiplication sign, en dash
GENERATED_AT = datetime(2026, 10, 3, 7, 30, tzinfo=UTC)


@pytest.fixture
def conn() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as conn:
        yield conn


@pytest.fixture
def tiny(conn: duckdb.DuckDBPyConnection) -> str:
    load_tiny(conn)
    return build_kpi_report(conn, generated_at=GENERATED_AT)


def text(fragment: str) -> str:
    """What a reader sees: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def tile(page: str, kpi: str) -> str:
    match = re.search(rf'<section class="tile" data-kpi="{kpi}">(.*?)</section>', page)
    assert match, kpi
    return text(match.group(1))


def figure(page: str, chart: str) -> str:
    match = re.search(rf'<figure data-chart="{chart}">(.*?)</figure>', page, re.S)
    assert match, chart
    return match.group(1)


def test_every_chart_is_a_figure_with_caption_svg_tooltips_and_data_table(tiny: str) -> None:
    assert tiny.startswith("<!DOCTYPE html>")
    assert [m for m in re.findall(r'<figure data-chart="([a-z_]+)">', tiny)] == list(CHARTS)
    for chart in CHARTS:
        body = figure(tiny, chart)
        assert "<figcaption>" in body, chart
        assert "<svg" in body and 'class="axis-title"' in body, chart
        assert re.search(r'<(rect|circle) class="(bar|point)"[^>]*><title>', body), chart
        assert "<details><summary>Data</summary><table>" in body, chart
        assert "No data yet" not in body, chart


def test_headline_tiles_show_figures_per_currency(tiny: str) -> None:
    assert tile(tiny, "net_revenue").startswith("Net revenue USD 1,414.50 EUR 50.00")
    assert tile(tiny, "orders").startswith("Orders 6 USD 5 · EUR 1")
    assert tile(tiny, "aov").startswith("Average order value USD 286.90 EUR 50.00")
    assert "USD 1.4% · EUR 0.0% of gross" in tile(tiny, "refunds")
    assert tile(tiny, "customers") == "Customers 3 with a revenue order, of 4 known"
    assert tile(tiny, "conversion_rate") == "Conversion rate 4.00% 8 purchasing of 200 sessions"
    roas = tile(tiny, "blended_roas")
    assert roas.startswith(f"Blended ROAS 2.00{X}")
    assert f"USD 500.00 revenue ÷ USD 250.00 spend · paid channels alone 1.70{X}" in roas
    churn = tile(tiny, "high_churn_share")
    assert churn.startswith("High churn risk 33.3% 1 of 3 customers with orders")
    assert "model: 33.3%" in churn
    assert "Orders 2026-10-01 → 2026-10-02 · customers as of 2026-10-02" in text(tiny)
    assert "Generated 2026-10-03 07:30 UTC" in text(tiny)


def test_charts_carry_the_aggregated_values(tiny: str) -> None:
    revenue = figure(tiny, "daily_revenue")
    assert "2026-10-02 · USD 1,234.50 net · 3 orders" in text(revenue)  # a point's tooltip
    assert "2026-10-02 USD 3 USD 1,234.50" in text(revenue)  # its row in the data table
    assert 'data-series="USD"' in revenue and 'data-series="EUR"' in revenue

    funnel = text(figure(tiny, "funnel"))
    assert "Product view: 100 sessions (50.0% of sessions, 50.0% of sessions)" in funnel
    assert "Checkout: 16 sessions (53.3% of add to cart, 8.0% of sessions)" in funnel
    assert "→ 30.0%" in funnel and "→ 50.0%" in funnel

    roas = text(figure(tiny, "roas_by_channel"))
    assert f"search · ROAS 2.00{X}" in roas and f"social · ROAS 0.50{X}" in roas
    assert "search · spend USD 200.00" in roas
    assert "USD 75.00 had no touch within 30 days (unattributed)" in roas
    assert "unattributed · ROAS" not in roas  # no spend: in the table, not among the bars

    churn = text(figure(tiny, "churn_risk"))
    # Latest score per customer: c2's older 0.15 does not count in the 0.1-0.2 bin.
    assert f"0.1{DASH}0.2: 0 customers" in churn and f"0.9{DASH}1.0: 1 customer" in churn
    assert "Model bands · high: 1 customer (33%)" in churn
    assert "Rule (customer_360) · no_orders: 1 customer (25%)" in churn
    assert "Model v1, scored 2026-10-03 06:00." in churn


@pytest.mark.parametrize(("days", "title", "points"), [(90, "Daily", 90), (200, "Weekly", 29)])
def test_long_periods_are_summed_per_week(conn, days: int, title: str, points: int) -> None:
    create_tables(conn)
    rows = [
        (date(2026, 1, 5) + timedelta(days=i), "USD", 1, 1, 1, 0, 10, 0, 10, 10)
        for i in range(days)
    ]  # 2026-01-05 is a Monday: full weeks but the last
    insert(conn, "gold.daily_revenue", rows)
    body = figure(build_kpi_report(conn), "daily_revenue")
    assert text(body).startswith(f"{title} net revenue")
    assert body.count('<circle class="point"') == points
    if title == "Weekly":
        assert "Week of 2026-01-12 · USD 70.00 net · 7 orders" in text(body)
        assert "<th>Week of</th>" in body and "first and last week may be partial" in body


def test_values_from_the_data_are_escaped(tiny: str) -> None:
    assert EVIL_CHANNEL not in tiny
    assert "<script" not in tiny.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in figure(tiny, "funnel")


def test_values_drawn_in_the_charts_are_escaped(conn) -> None:
    """The chart kit writes SVG itself (not through the template): a channel name reaches a
    bar's tooltip and an axis label as text, never as markup."""
    load_tiny(conn)
    day = conn.execute("SELECT max(date) FROM gold.marketing_roas_daily").fetchone()[0]
    insert(conn, "gold.marketing_roas_daily", [(day, EVIL_CHANNEL, 10, 100, 5, 1, 30, 3.0)])
    page = build_kpi_report(conn)
    roas = figure(page, "roas_by_channel")
    assert "<script" not in page.lower()
    assert f"{EVIL_CHANNEL} · spend USD 10.00" in text(roas)  # the bar's tooltip
    assert re.search(r'<text class="tick"[^>]*>&lt;script&gt;alert…<title>&lt;script', roas)


def test_the_page_is_self_contained(tiny: str) -> None:
    assert "Content-Security-Policy" in tiny and "default-src 'none'" in tiny
    references = re.findall(r'\b(?:src|href)="([^"]*)"', tiny)
    assert references and all(ref.startswith("data:") for ref in references)
    urls = set(re.findall(r"https?://[^\s\"')]+", tiny))
    assert urls == {"http://www.w3.org/2000/svg"}  # the SVG namespace, never fetched
    assert "@media print" in tiny


@pytest.mark.parametrize("ml", [True, False])
def test_empty_tables_give_no_data_notes_not_a_crash(conn, ml: bool) -> None:
    create_tables(conn, ml=ml)
    page = build_kpi_report(conn)
    for chart, table in [
        ("daily_revenue", "gold.daily_revenue is empty"),
        ("funnel", "gold.funnel_daily is empty"),
        ("roas_by_channel", "gold.marketing_roas_daily is empty"),
        (
            "churn_risk",
            "ml.churn_scores is empty" if ml else "ml.churn_scores has not been built yet",
        ),
    ]:
        body = text(figure(page, chart))
        assert f"No data yet. {table}." in body, chart
    assert "<svg" not in page
    assert tile(page, "net_revenue").startswith("Net revenue — ")
    assert tile(page, "conversion_rate") == "Conversion rate — no sessions yet"


def test_a_warehouse_without_gold_still_renders(conn) -> None:
    page = build_kpi_report(conn)
    assert text(figure(page, "funnel")).endswith(
        "No data yet. gold.funnel_daily has not been built yet."
    )
    assert "gold.customer_360 (missing)" in text(page)


def test_missing_scores_keep_the_rule_bands(conn) -> None:
    load_tiny(conn, ml=False)
    churn = figure(build_kpi_report(conn), "churn_risk")
    assert "ml.churn_scores has not been built yet" in text(churn)
    assert "Rule (customer_360) · high: 1 customer (25%)" in text(churn)
    assert "Model bands" not in churn


def test_write_is_atomic_and_returns_the_summary(conn, tmp_path: Path) -> None:
    load_tiny(conn)
    target = tmp_path / "out" / "kpi_report.html"
    summary = write_kpi_report(conn, target, generated_at=GENERATED_AT)
    again = write_kpi_report(conn, target, generated_at=GENERATED_AT)
    assert sorted(p.name for p in target.parent.iterdir()) == ["kpi_report.html"]
    assert target.read_text(encoding="utf-8") == build_kpi_report(conn, generated_at=GENERATED_AT)
    assert summary == again
    assert summary.path == target and summary.size_bytes == target.stat().st_size
    assert target.stat().st_mode & 0o777 == 0o644
    assert summary.charts == list(CHARTS) and summary.charts_without_data == []
    h = summary.headline
    assert h.net_revenue == {"USD": Decimal("1414.50"), "EUR": Decimal("50.00")}
    assert h.aov == {"USD": Decimal("286.90"), "EUR": Decimal("50.00")}
    assert h.refunds == {"USD": Decimal("20.00"), "EUR": Decimal("0.00")}
    assert (h.orders, h.customers) == (6, 3)
    assert h.conversion_rate == pytest.approx(0.04)
    assert h.blended_roas == pytest.approx(2.0)
    assert h.high_churn_share == pytest.approx(1 / 3)
    assert h.high_churn_share_model == pytest.approx(1 / 3)
    assert str(h.period_start) == "2026-10-01" and str(h.period_end) == "2026-10-02"
    assert summary.model_dump(mode="json")["headline"]["net_revenue"] == {
        "USD": "1414.50",
        "EUR": "50.00",
    }


def test_a_failed_write_keeps_the_old_page_and_no_temp_file(
    conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "kpi_report.html"
    target.write_text("old page", encoding="utf-8")
    load_tiny(conn)

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(kpi_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_kpi_report(conn, target)
    assert target.read_text(encoding="utf-8") == "old page"
    assert os.listdir(tmp_path) == ["kpi_report.html"]


# --- the Dagster asset ---------------------------------------------------------------------


def test_asset_is_described_for_the_ui(settings: PlatformSettings) -> None:
    asset = build_kpi_report_asset(settings)
    spec = next(iter(asset.specs))
    assert spec.key == KPI_REPORT_KEY == dg.AssetKey(["reports", "kpi_report"])
    assert spec.group_name == "reports"
    assert spec.kinds == {"html", "duckdb"}
    assert spec.owners == ["team:analytics"]
    assert spec.tags.get("layer") == "reports"
    assert len(spec.description or "") > 40
    assert {dep.asset_key for dep in spec.deps} == set(KPI_REPORT_DEPS)
    assert asset.get_op_def_for_asset_key(KPI_REPORT_KEY).pool is None  # no pool: the lock


def test_asset_writes_the_report_under_the_home(settings: PlatformSettings) -> None:
    make_warehouse(settings.warehouse_path, "tiny")
    result = dg.materialize(
        [build_kpi_report_asset(settings)],
        resources={"warehouse": WarehouseResource(path=str(settings.warehouse_path))},
    )
    assert result.success
    path = kpi_report_path(settings)
    assert path == settings.home / "reports" / "kpi_report.html"
    assert "USD 1,414.50" in text(path.read_text(encoding="utf-8"))
    (materialization,) = result.asset_materializations_for_node("reports__kpi_report")
    meta = materialization.metadata
    assert isinstance(meta["path"], dg.PathMetadataValue) and meta["path"].value == str(path)
    assert isinstance(meta["url"], dg.UrlMetadataValue)
    assert meta["url"].value == path.as_uri() and meta["url"].value.startswith("file://")
    assert meta["size_bytes"].value == path.stat().st_size
    assert meta["net_revenue_usd"].value == pytest.approx(1414.5)
    assert meta["net_revenue_eur"].value == pytest.approx(50.0)
    assert meta["orders"].value == 6
    assert meta["blended_roas"].value == pytest.approx(2.0)
    assert f"| blended ROAS (USD) | 2.00{X} |" in meta["headline"].value
    assert meta["charts_without_data"].value == "none"
