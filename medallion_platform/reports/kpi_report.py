"""The KPI report: one self-contained HTML page built from gold (and ml) in DuckDB.

The page opens from disk with no server and no network: the CSS is inline, the charts are
SVG drawn in Python (no JavaScript, no CDN), and a Content-Security-Policy forbids any fetch.
Three parts, each in its own place: :mod:`~medallion_platform.reports.queries` reads the
warehouse into plain data (aggregation happens in SQL), :mod:`~medallion_platform.reports.charts`
draws the SVG charts, and ``templates/kpi_report.html`` lays out the page (Jinja2, every value
escaped). This module decides what each tile and figure says, and writes the file.

A table that is missing or empty does not break the page: its figure says "no data yet".
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib.resources import files
from pathlib import Path

import duckdb
import jinja2
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict

from medallion_platform.reports.charts import (
    bands_svg,
    churn_histogram_svg,
    daily_revenue_svg,
    funnel_svg,
    roas_svg,
)
from medallion_platform.reports.formats import (
    GRAIN_LABEL,
    fmt_int,
    fmt_money,
    fmt_pct,
    fmt_ratio,
    period,
    probability_bin,
)
from medallion_platform.reports.queries import (
    CHURN_SCORES,
    DAILY_REVENUE,
    FUNNEL_DAILY,
    MARKETING_ROAS,
    RISK_BANDS,
    RULE_BANDS,
    SOURCES,
    UNATTRIBUTED,
    Headline,
    ReportData,
    Source,
    collect,
    source_name,
)

CHARTS = ("daily_revenue", "funnel", "roas_by_channel", "churn_risk")
"""The figures of the report, in page order (each is ``<figure data-chart="…">``)."""

TEMPLATE = "kpi_report.html"


class ReportSummary(BaseModel):
    """What :func:`write_kpi_report` wrote."""

    model_config = ConfigDict(frozen=True)

    path: Path
    generated_at: datetime
    size_bytes: int
    headline: Headline
    charts: list[str]
    charts_without_data: list[str]


# --- what the page shows: tiles and figures, as data for the template ----------------------


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]


@dataclass(frozen=True)
class Tile:
    """A headline figure: one value, or one line per currency (``unit`` is the currency)."""

    title: str
    values: list[tuple[str, str]]  # (unit, value); none shows a dash
    sub: str
    kpi: str


@dataclass(frozen=True)
class Figure:
    chart: str
    title: str
    note: str
    charts: list[Markup] = field(default_factory=list)
    no_data: str | None = None  # why there is nothing to draw
    tables: list[Table] = field(default_factory=list)


def _no_data(data: ReportData, *sources: Source, otherwise: str = "") -> str:
    reasons = []
    for source in sources:
        state = data.status[source]
        if state == "missing":
            reasons.append(f"{source_name(source)} has not been built yet")
        elif state == "empty":
            reasons.append(f"{source_name(source)} is empty")
    return "; ".join(reasons or [otherwise or "nothing to show"])


def _daily_revenue_figure(data: ReportData) -> Figure:
    grain = data.revenue_grain
    note = "Net = gross - refunds, by order day; each currency on its own line, never summed."
    if grain != "day":
        note += f" Summed per {grain} over this long a period"
        note += "; weeks start on Monday" if grain == "week" else ""
        note += f", so the first and last {grain} may be partial."
    title = {"day": "Daily", "week": "Weekly", "month": "Monthly"}[grain] + " net revenue"
    if not data.daily:
        return Figure("daily_revenue", title, note, no_data=_no_data(data, DAILY_REVENUE))
    currencies = [c.currency for c in data.currencies]
    table = Table(
        [GRAIN_LABEL[grain], "Currency", "Orders", "Net revenue"],
        [
            (period(p.day, grain), p.currency, fmt_int(p.orders), fmt_money(p.net, p.currency))
            for p in data.daily
        ],
    )
    chart = daily_revenue_svg(data.daily, currencies, grain)
    return Figure("daily_revenue", title, note, charts=[chart], tables=[table])


def _funnel_figure(data: ReportData) -> Figure:
    note = "Sessions reaching each step, all days and channels; → is the rate from the step before."
    if not data.funnel:
        return Figure("funnel", "Conversion funnel", note, no_data=_no_data(data, FUNNEL_DAILY))
    table = Table(
        ["Channel", "Sessions", "Purchase sessions", "Conversion"],
        [
            (
                c.channel,
                fmt_int(c.sessions),
                fmt_int(c.purchase_sessions),
                fmt_pct(c.conversion_rate, 2),
            )
            for c in data.funnel_channels
        ],
    )
    return Figure(
        "funnel", "Conversion funnel", note, charts=[funnel_svg(data.funnel)], tables=[table]
    )


def _roas_figure(data: ReportData) -> Figure:
    plotted = [c for c in data.channels if c.channel != UNATTRIBUTED]
    unattributed = sum((c.revenue for c in data.channels if c.channel == UNATTRIBUTED), Decimal(0))
    note = "USD, last-touch attribution; the label over each pair is ROAS (revenue ÷ spend)."
    if unattributed:
        note += f" {fmt_money(unattributed, 'USD')} had no touch within 30 days (unattributed)."
    title = "ROAS by channel"
    if not plotted:
        reason = _no_data(data, MARKETING_ROAS, otherwise="no channel has spend or revenue")
        return Figure("roas_by_channel", title, note, no_data=reason)
    table = Table(
        ["Channel", "Spend", "Clicks", "Attributed orders", "Attributed revenue", "ROAS"],
        [
            (
                c.channel,
                fmt_money(c.spend, "USD"),
                fmt_int(c.clicks),
                fmt_int(c.orders),
                fmt_money(c.revenue, "USD"),
                fmt_ratio(c.roas),
            )
            for c in data.channels
        ],
    )
    return Figure("roas_by_channel", title, note, charts=[roas_svg(plotted)], tables=[table])


def _churn_figure(data: ReportData) -> Figure:
    note = "The churn model's latest probability per customer, and customers per risk band."
    if data.model_versions:
        scored = data.scored_at.strftime("%Y-%m-%d %H:%M") if data.scored_at else "—"
        note += f" Model {', '.join(data.model_versions)}, scored {scored}."
    rows: list[tuple[str, dict[str, int], Sequence[str]]] = []
    if data.model_bands:
        rows.append(("Model bands", data.model_bands, RISK_BANDS))
    if data.rule_bands:
        rows.append(("Rule (customer_360)", data.rule_bands, RULE_BANDS))
    charts = [churn_histogram_svg(data.churn_bins)] if data.churn_bins else []
    if rows:
        charts.append(bands_svg(rows))
    tables = []
    if data.churn_bins:
        bins = [(probability_bin(i), fmt_int(n)) for i, n in enumerate(data.churn_bins)]
        tables.append(Table(["Churn probability", "Customers"], bins))
    if rows:
        bands = [
            (label, band, fmt_int(counts.get(band, 0)))
            for label, counts, order in rows
            for band in [*order, *sorted(set(counts) - set(order), key=str)]
        ]
        tables.append(Table(["View", "Band", "Customers"], bands))
    no_data = None if data.churn_bins else _no_data(data, CHURN_SCORES)
    return Figure("churn_risk", "Churn risk", note, charts, no_data, tables)


def _money_values(amounts: dict[str, Decimal | None]) -> list[tuple[str, str]]:
    return [
        (currency, "—" if amount is None else f"{amount:,.2f}")
        for currency, amount in amounts.items()
    ]


def _tiles(data: ReportData) -> list[Tile]:
    h = data.headline
    currencies = data.currencies
    sessions = data.funnel[0][1] if data.funnel else 0
    purchasing = data.funnel[-1][1] if data.funnel else 0
    spend = sum((c.spend for c in data.channels), Decimal(0))
    revenue = sum((c.revenue for c in data.channels), Decimal(0))
    paid = [c for c in data.channels if c.spend]
    paid_roas = float(sum((c.revenue for c in paid), Decimal(0)) / spend) if spend else None
    no_orders = "gold.daily_revenue has no rows yet"
    roas_sub = "no ad spend yet"
    if spend:
        roas_sub = f"{fmt_money(revenue, 'USD')} revenue ÷ {fmt_money(spend, 'USD')} spend"
        if paid_roas is not None:
            roas_sub += f" · paid channels alone {fmt_ratio(paid_roas)}"
    churn_sub = "no customers with orders yet"
    if h.high_churn_share is not None:
        churn_sub = (
            f"{fmt_int(data.rule_bands.get('high', 0))} of {fmt_int(h.customers)} customers "
            "with orders, no order in 90 days"
        )
    if h.high_churn_share_model is not None:
        churn_sub += f" · model: {fmt_pct(h.high_churn_share_model)} in its high band"
    return [
        Tile(
            "Net revenue",
            _money_values({c.currency: c.net for c in currencies}),
            "gross - refunds, per currency" if currencies else no_orders,
            "net_revenue",
        ),
        Tile(
            "Orders",
            [("", fmt_int(h.orders))] if currencies else [],
            " · ".join(f"{c.currency} {fmt_int(c.orders)}" for c in currencies) or no_orders,
            "orders",
        ),
        Tile(
            "Average order value",
            _money_values({c.currency: c.aov for c in currencies}),
            "gross ÷ orders, per currency" if currencies else no_orders,
            "aov",
        ),
        Tile(
            "Refunds",
            _money_values({c.currency: c.refunds for c in currencies}),
            " · ".join(
                f"{c.currency} {fmt_pct(float(c.refunds / c.gross) if c.gross else None)}"
                for c in currencies
            )
            + " of gross"
            if currencies
            else no_orders,
            "refunds",
        ),
        Tile(
            "Customers",
            [("", fmt_int(h.customers))] if h.customers is not None else [],
            f"with a revenue order, of {fmt_int(data.known_customers)} known"
            if data.known_customers is not None
            else "gold.customer_360 has no rows yet",
            "customers",
        ),
        Tile(
            "Conversion rate",
            [("", fmt_pct(h.conversion_rate, 2))] if h.conversion_rate is not None else [],
            f"{fmt_int(purchasing)} purchasing of {fmt_int(sessions)} sessions"
            if sessions
            else "no sessions yet",
            "conversion_rate",
        ),
        Tile(
            "Blended ROAS",
            [("", fmt_ratio(h.blended_roas))] if h.blended_roas is not None else [],
            roas_sub,
            "blended_roas",
        ),
        Tile(
            "High churn risk",
            [("", fmt_pct(h.high_churn_share))] if h.high_churn_share is not None else [],
            churn_sub,
            "high_churn_share",
        ),
    ]


# --- the page --------------------------------------------------------------------------------


def _compact(source: str) -> str:
    """The template without its layout: a line break and the indentation after it, between
    one tag (HTML or Jinja) and the next, is there for the reader, not part of the page."""
    return re.sub(r"(?<=[>}])\n[ \t]+(?=[<{])", "", source)


@cache
def _template() -> jinja2.Template:
    templates = files("medallion_platform.reports") / "templates"

    def load(name: str) -> str:
        text = (templates / name).read_text(encoding="utf-8")
        return _compact(text) if name.endswith(".html") else text

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        autoescape=True,  # every value from the data is escaped; charts arrive as Markup
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE)


def _render(data: ReportData, generated_at: datetime) -> str:
    h = data.headline
    if h.period_start and h.period_end:
        span = f"Orders {h.period_start.isoformat()} → {h.period_end.isoformat()}"
    else:
        span = "No orders yet"
    if data.as_of_date:
        span += f" · customers as of {data.as_of_date.isoformat()}"
    return _template().render(
        period=span,
        tiles=_tiles(data),
        figures=[
            _daily_revenue_figure(data),
            _funnel_figure(data),
            _roas_figure(data),
            _churn_figure(data),
        ],
        generated=generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        sources=", ".join(
            f"{source_name(s)} ({'ok' if data.has(s) else data.status[s]})" for s in SOURCES
        ),
    )


# --- public API -----------------------------------------------------------------------------


def build_kpi_report(
    conn: duckdb.DuckDBPyConnection, *, generated_at: datetime | None = None
) -> str:
    """The report as one self-contained HTML document (tables missing or empty are noted)."""
    return _render(collect(conn), generated_at or datetime.now(UTC))


def headline_kpis(conn: duckdb.DuckDBPyConnection) -> Headline:
    """The report's headline figures, without rendering it (``medallion demo`` prints them)."""
    return collect(conn).headline


def format_headline(headline: Headline) -> str:
    """The headline KPIs as a few plain-text lines for a terminal."""

    def money(values: dict[str, Decimal]) -> str:
        return ", ".join(fmt_money(v, c) for c, v in sorted(values.items())) or "-"

    period = (
        f"{headline.period_start} to {headline.period_end}" if headline.period_start else "no data"
    )
    lines = [
        f"Headline KPIs ({period}):",
        f"  net revenue      {money(headline.net_revenue)}  (refunds {money(headline.refunds)})",
        f"  orders           {fmt_int(headline.orders)}, average order {money(headline.aov)}",
        f"  customers        {fmt_int(headline.customers)} with an order",
        f"  conversion rate  {fmt_pct(headline.conversion_rate)} of storefront sessions",
        f"  blended ROAS     {fmt_ratio(headline.blended_roas)} (USD revenue / ad spend)",
        f"  high churn risk  {fmt_pct(headline.high_churn_share)} of buyers (rule), "
        f"{fmt_pct(headline.high_churn_share_model)} (model)",
    ]
    return "\n".join(lines)


def write_kpi_report(
    conn: duckdb.DuckDBPyConnection,
    path: Path | str,
    *,
    generated_at: datetime | None = None,
) -> ReportSummary:
    """Write the report to ``path`` atomically: a reader sees the old page or the new one."""
    path = Path(path)
    generated_at = generated_at or datetime.now(UTC)
    data = collect(conn)
    document = _render(data, generated_at).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(document)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    empty = [
        chart
        for chart, has_data in zip(
            CHARTS,
            (
                bool(data.daily),
                bool(data.funnel),
                any(c.channel != UNATTRIBUTED for c in data.channels),
                bool(data.churn_bins),
            ),
            strict=True,
        )
        if not has_data
    ]
    return ReportSummary(
        path=path,
        generated_at=generated_at,
        size_bytes=len(document),
        headline=data.headline,
        charts=list(CHARTS),
        charts_without_data=empty,
    )


__all__ = [
    "CHARTS",
    "Headline",
    "ReportSummary",
    "build_kpi_report",
    "format_headline",
    "headline_kpis",
    "write_kpi_report",
]
