"""Reports in Dagster: the static KPI page, rebuilt from gold and the churn scores."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, AssetsDefinition, MaterializeResult, MetadataValue, asset

from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.reports import ReportSummary, write_kpi_report
from medallion_platform.reports.kpi_report import fmt_int, fmt_money, fmt_pct, fmt_ratio
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse.tables import markdown_table

KPI_REPORT_KEY = AssetKey(["reports", "kpi_report"])
KPI_REPORT_DEPS = [
    AssetKey(["gold", "daily_revenue"]),
    AssetKey(["gold", "funnel_daily"]),
    AssetKey(["gold", "marketing_roas_daily"]),
    AssetKey(["gold", "customer_360"]),
    AssetKey(["ml", "churn_scores"]),
]


def kpi_report_path(settings: PlatformSettings) -> Path:
    """``<home>/reports/kpi_report.html``: beside the warehouse, so a fresh home starts empty."""
    return settings.reports_dir / "kpi_report.html"


def kpi_report_metadata(summary: ReportSummary) -> dict:
    """Path and link to open the page, and the headline KPIs as numbers the UI can plot."""
    h = summary.headline
    figures: dict = {
        "orders": h.orders,
        "customers": h.customers,
        "conversion_rate": h.conversion_rate,
        "blended_roas": h.blended_roas,
        "high_churn_share": h.high_churn_share,
        "high_churn_share_model": h.high_churn_share_model,
    }
    for currency, amount in sorted(h.net_revenue.items()):
        figures[f"net_revenue_{currency.lower()}"] = float(amount)
    for currency, amount in sorted(h.aov.items()):
        figures[f"aov_{currency.lower()}"] = float(amount)
    rows = [
        ("orders", fmt_int(h.orders)),
        ("customers", fmt_int(h.customers)),
        ("conversion rate", fmt_pct(h.conversion_rate, 2)),
        ("blended ROAS (USD)", fmt_ratio(h.blended_roas)),
        ("high churn risk (rule)", fmt_pct(h.high_churn_share)),
        ("high churn risk (model)", fmt_pct(h.high_churn_share_model)),
        *((f"net revenue {c}", fmt_money(v, c)) for c, v in sorted(h.net_revenue.items())),
        *((f"AOV {c}", fmt_money(v, c)) for c, v in sorted(h.aov.items())),
    ]
    return {
        "path": MetadataValue.path(str(summary.path)),
        "url": MetadataValue.url(summary.path.resolve().as_uri()),
        "size_bytes": summary.size_bytes,
        "period": f"{h.period_start} → {h.period_end}" if h.period_start else "no orders yet",
        "charts_without_data": ", ".join(summary.charts_without_data) or "none",
        "headline": MetadataValue.md(markdown_table(["kpi", "value"], rows)),
        **{name: value for name, value in figures.items() if value is not None},
    }


def build_kpi_report_asset(settings: PlatformSettings) -> AssetsDefinition:
    """``reports/kpi_report``: one self-contained HTML page under the platform home."""
    path = kpi_report_path(settings)

    @asset(
        key=KPI_REPORT_KEY,
        deps=KPI_REPORT_DEPS,
        group_name="reports",
        description=(
            "The KPI report: one self-contained HTML page (inline SVG charts, no server, no "
            "network) with net revenue and AOV per currency, orders, customers, conversion, "
            "blended ROAS and churn risk, plus daily revenue, funnel, ROAS-by-channel and "
            "churn-distribution charts. Written to <MEDALLION_HOME>/reports/kpi_report.html."
        ),
        owners=["team:analytics"],
        kinds={"html", "duckdb"},
        tags={"layer": "reports"},
    )
    def kpi_report(warehouse: WarehouseResource) -> MaterializeResult:
        with warehouse.warehouse().connect() as conn:
            summary = write_kpi_report(conn, path)
        return MaterializeResult(metadata=kpi_report_metadata(summary))

    return kpi_report
