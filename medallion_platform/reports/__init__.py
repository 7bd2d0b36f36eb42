"""Reports built from gold: plain Python over a DuckDB connection, no Dagster."""

from medallion_platform.reports.kpi_report import (
    CHARTS,
    Headline,
    ReportSummary,
    build_kpi_report,
    write_kpi_report,
)

__all__ = ["CHARTS", "Headline", "ReportSummary", "build_kpi_report", "write_kpi_report"]
