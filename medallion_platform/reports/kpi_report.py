"""The KPI report: one self-contained HTML page built from gold (and ml) in DuckDB.

The page opens from disk with no server and no network: the CSS is inline, the charts are
SVG drawn here in Python (no JavaScript, no CDN), and a Content-Security-Policy forbids any
fetch. Aggregation happens in SQL; Python only formats and lays out.

Money is never added across currencies: revenue, refunds and AOV are shown per currency.
ROAS is in USD, like ``gold.marketing_roas_daily`` (ad spend is billed in USD and revenue is
attributed from USD orders only).

A table that is missing or empty does not break the page: its figure says "no data yet".
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from html import escape
from pathlib import Path

import duckdb
from pydantic import BaseModel, ConfigDict, Field

from medallion_platform.warehouse.warehouse import table_exists

CHARTS = ("daily_revenue", "funnel", "roas_by_channel", "churn_risk")
"""The figures of the report, in page order (each is ``<figure data-chart="…">``)."""

DAILY_REVENUE = ("gold", "daily_revenue")
FUNNEL_DAILY = ("gold", "funnel_daily")
MARKETING_ROAS = ("gold", "marketing_roas_daily")
CUSTOMER_360 = ("gold", "customer_360")
CHURN_SCORES = ("ml", "churn_scores")
SOURCES = (DAILY_REVENUE, FUNNEL_DAILY, MARKETING_ROAS, CUSTOMER_360, CHURN_SCORES)

FUNNEL_STAGES = (
    ("sessions", "Sessions"),
    ("product_view_sessions", "Product view"),
    ("add_to_cart_sessions", "Add to cart"),
    ("checkout_sessions", "Checkout"),
    ("purchase_sessions", "Purchase"),
)
RISK_BANDS = ("low", "medium", "high")
RULE_BANDS = (*RISK_BANDS, "no_orders")
UNATTRIBUTED = "unattributed"

SERIES_COLORS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2")
FUNNEL_COLORS = ("#1e3a8a", "#1d4ed8", "#2563eb", "#3b82f6", "#60a5fa")
SPEND_COLOR = "#94a3b8"
REVENUE_COLOR = "#059669"
TIMES, EN_DASH = "\u00d7", "\u2013"  # typography, spelled out for the linter

BAND_COLORS = {"low": "#16a34a", "medium": "#f59e0b", "high": "#dc2626", "no_orders": "#cbd5e1"}


# --- what the report returns ----------------------------------------------------------------


class Headline(BaseModel):
    """The headline KPIs of the report (money per currency, never summed across them)."""

    model_config = ConfigDict(frozen=True)

    period_start: date | None = None
    period_end: date | None = None
    net_revenue: dict[str, Decimal] = Field(default_factory=dict)
    refunds: dict[str, Decimal] = Field(default_factory=dict)
    aov: dict[str, Decimal] = Field(default_factory=dict)
    orders: int = 0
    customers: int | None = Field(
        default=None, description="Customers with at least one revenue order (customer_360)."
    )
    conversion_rate: float | None = Field(
        default=None, description="Purchase sessions / sessions over the whole funnel."
    )
    blended_roas: float | None = Field(
        default=None, description="All USD net revenue / all ad spend (USD)."
    )
    high_churn_share: float | None = Field(
        default=None,
        description="Share of customers with orders whose churn_risk rule says 'high'.",
    )
    high_churn_share_model: float | None = Field(
        default=None, description="Share of scored customers in the model's 'high' band."
    )


class ReportSummary(BaseModel):
    """What :func:`write_kpi_report` wrote."""

    model_config = ConfigDict(frozen=True)

    path: Path
    generated_at: datetime
    size_bytes: int
    headline: Headline
    charts: list[str]
    charts_without_data: list[str]


# --- reading the warehouse ------------------------------------------------------------------


@dataclass(frozen=True)
class _CurrencyTotals:
    currency: str
    orders: int
    gross: Decimal
    refunds: Decimal
    net: Decimal
    aov: Decimal | None


@dataclass(frozen=True)
class _DailyPoint:
    day: date
    currency: str
    net: Decimal
    orders: int


@dataclass(frozen=True)
class _FunnelChannel:
    channel: str
    sessions: int
    purchase_sessions: int
    conversion_rate: float | None


@dataclass(frozen=True)
class _Channel:
    channel: str
    spend: Decimal
    revenue: Decimal
    orders: int
    clicks: int
    roas: float | None


@dataclass
class _Data:
    status: dict[tuple[str, str], str]
    currencies: list[_CurrencyTotals] = field(default_factory=list)
    daily: list[_DailyPoint] = field(default_factory=list)
    revenue_grain: str = "day"
    funnel: list[tuple[str, int]] = field(default_factory=list)
    funnel_channels: list[_FunnelChannel] = field(default_factory=list)
    channels: list[_Channel] = field(default_factory=list)
    known_customers: int | None = None
    rule_bands: dict[str, int] = field(default_factory=dict)
    as_of_date: date | None = None
    churn_bins: list[int] = field(default_factory=list)
    model_bands: dict[str, int] = field(default_factory=dict)
    model_versions: list[str] = field(default_factory=list)
    scored_at: datetime | None = None
    headline: Headline = field(default_factory=Headline)

    def has(self, source: tuple[str, str]) -> bool:
        return self.status[source] == "ok"


def _grain(span_days: int) -> str:
    """Days for a quarter, weeks up to two years, then months: about 100 points at most."""
    return "day" if span_days <= 100 else "week" if span_days <= 731 else "month"


_GRAIN_LABEL = {"day": "Date", "week": "Week of", "month": "Month"}


def _period(day: date, grain: str) -> str:
    return day.strftime("%Y-%m") if grain == "month" else day.isoformat()


def _name(source: tuple[str, str]) -> str:
    return ".".join(source)


def _status(conn: duckdb.DuckDBPyConnection, source: tuple[str, str]) -> str:
    schema, table = source
    if not table_exists(conn, schema, table):
        return "missing"
    (rows,) = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
    return "ok" if rows else "empty"


def _collect(conn: duckdb.DuckDBPyConnection) -> _Data:
    data = _Data(status={source: _status(conn, source) for source in SOURCES})
    headline: dict = {}

    if data.has(DAILY_REVENUE):
        rows = conn.execute(
            """
            SELECT coalesce(currency, 'unknown') AS currency, coalesce(sum(orders), 0),
                   coalesce(sum(gross), 0), coalesce(sum(refunds), 0), coalesce(sum(net), 0),
                   CAST(round(sum(gross) / nullif(sum(orders), 0), 2) AS DECIMAL(18, 2)),
                   min(date), max(date)
            FROM gold.daily_revenue
            GROUP BY ALL
            ORDER BY sum(net) DESC, currency
            """
        ).fetchall()
        data.currencies = [_CurrencyTotals(*row[:6]) for row in rows]
        start, end = min(row[6] for row in rows), max(row[7] for row in rows)
        data.revenue_grain = _grain((end - start).days)
        data.daily = [
            _DailyPoint(*row)
            for row in conn.execute(
                "SELECT CAST(date_trunc(?, date) AS DATE) AS period, "
                "coalesce(currency, 'unknown') AS currency, coalesce(sum(net), 0), "
                "coalesce(sum(orders), 0) FROM gold.daily_revenue WHERE date IS NOT NULL "
                "GROUP BY ALL ORDER BY period, currency",
                [data.revenue_grain],
            ).fetchall()
        ]
        headline |= {
            "period_start": start,
            "period_end": end,
            "net_revenue": {c.currency: c.net for c in data.currencies},
            "refunds": {c.currency: c.refunds for c in data.currencies},
            "aov": {c.currency: c.aov for c in data.currencies if c.aov is not None},
            "orders": sum(c.orders for c in data.currencies),
        }

    if data.has(FUNNEL_DAILY):
        sums = ", ".join(f"coalesce(sum({column}), 0)" for column, _ in FUNNEL_STAGES)
        totals = conn.execute(f"SELECT {sums} FROM gold.funnel_daily").fetchone()
        data.funnel = [
            (label, int(value)) for (_, label), value in zip(FUNNEL_STAGES, totals, strict=True)
        ]
        data.funnel_channels = [
            _FunnelChannel(*row)
            for row in conn.execute(
                """
                SELECT coalesce(channel, 'unknown') AS channel, coalesce(sum(sessions), 0),
                       coalesce(sum(purchase_sessions), 0),
                       sum(purchase_sessions) / nullif(sum(sessions), 0)
                FROM gold.funnel_daily
                GROUP BY ALL
                ORDER BY sum(sessions) DESC NULLS LAST, channel
                """
            ).fetchall()
        ]
        sessions, purchases = data.funnel[0][1], data.funnel[-1][1]
        headline["conversion_rate"] = purchases / sessions if sessions else None

    if data.has(MARKETING_ROAS):
        data.channels = [
            _Channel(*row)
            for row in conn.execute(
                """
                SELECT coalesce(channel, 'unknown') AS channel, coalesce(sum(spend), 0),
                       coalesce(sum(attributed_revenue), 0), coalesce(sum(attributed_orders), 0),
                       coalesce(sum(clicks), 0), sum(attributed_revenue) / nullif(sum(spend), 0)
                FROM gold.marketing_roas_daily
                -- Over the days ad spend covers: revenue from before the first spend day (or
                -- after the last) was not bought by this spend and would inflate ROAS.
                WHERE date BETWEEN
                    coalesce((SELECT min(date) FROM gold.marketing_roas_daily WHERE spend > 0),
                             DATE '0001-01-01')
                    AND coalesce((SELECT max(date) FROM gold.marketing_roas_daily
                                  WHERE spend > 0), DATE '9999-12-31')
                GROUP BY ALL
                ORDER BY sum(spend) DESC NULLS LAST, sum(attributed_revenue) DESC NULLS LAST,
                         channel
                """
            ).fetchall()
        ]
        spend = sum(c.spend for c in data.channels)
        revenue = sum(c.revenue for c in data.channels)
        headline["blended_roas"] = float(revenue / spend) if spend else None

    if data.has(CUSTOMER_360):
        known, with_orders, high, as_of = conn.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE order_count > 0),
                   count(*) FILTER (WHERE churn_risk = 'high'), max(as_of_date)
            FROM gold.customer_360
            """
        ).fetchone()
        data.known_customers, data.as_of_date = known, as_of
        data.rule_bands = dict(
            conn.execute(
                "SELECT coalesce(churn_risk, 'unknown'), count(*) FROM gold.customer_360 "
                "GROUP BY ALL"
            ).fetchall()
        )
        headline["customers"] = with_orders
        headline["high_churn_share"] = high / with_orders if with_orders else None

    if data.has(CHURN_SCORES):
        # Scores accumulate run after run: the latest score of each customer is the view.
        latest = (
            "SELECT * FROM ml.churn_scores "
            "QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY scored_at DESC) = 1"
        )
        bins = dict(
            conn.execute(
                "SELECT greatest(least(CAST(floor(churn_probability * 10) AS INTEGER), 9), 0), "
                f"count(*) "
                f"FROM ({latest}) WHERE churn_probability IS NOT NULL GROUP BY 1"
            ).fetchall()
        )
        data.churn_bins = [int(bins.get(i, 0)) for i in range(10)]
        data.model_bands = dict(
            conn.execute(
                f"SELECT coalesce(risk_band, 'unknown'), count(*) FROM ({latest}) GROUP BY 1"
            ).fetchall()
        )
        data.model_versions = [
            str(v)
            for (v,) in conn.execute(
                f"SELECT DISTINCT model_version FROM ({latest}) ORDER BY 1"
            ).fetchall()
        ]
        (data.scored_at,) = conn.execute(f"SELECT max(scored_at) FROM ({latest})").fetchone()
        scored = sum(data.model_bands.values())
        headline["high_churn_share_model"] = (
            data.model_bands.get("high", 0) / scored if scored else None
        )

    data.headline = Headline(**headline)
    return data


# --- formatting -----------------------------------------------------------------------------


def fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def fmt_money(amount: Decimal | float | None, currency: str) -> str:
    return "—" if amount is None else f"{currency} {Decimal(amount):,.2f}"


def fmt_pct(share: float | None, digits: int = 1) -> str:
    return "—" if share is None else f"{share * 100:.{digits}f}%"


def fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}{TIMES}"


def _customers(count: int) -> str:
    return f"{fmt_int(count)} customer{'' if count == 1 else 's'}"


def _fmt_compact(value: float) -> str:
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.1f}".removesuffix(".0") + suffix
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


# --- SVG ------------------------------------------------------------------------------------


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [min(lo, 0), max(hi, 0)]."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        hi = lo + 1
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    return [start + i * step for i in range(round((stop - start) / step) + 1)]


@dataclass(frozen=True)
class _Frame:
    """A plot area inside an SVG canvas, with a linear value axis."""

    ticks: Sequence[float]
    width: int = 640
    height: int = 300
    left: int = 64
    right: int = 16
    top: int = 36
    bottom: int = 52

    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom

    @property
    def baseline(self) -> float:
        return self.top + self.plot_height

    def y(self, value: float) -> float:
        lo, hi = self.ticks[0], self.ticks[-1]
        return self.top + self.plot_height * (1 - (value - lo) / (hi - lo))


def _svg(frame: _Frame, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {frame.width} {frame.height}" '
        f'width="{frame.width}" height="{frame.height}" role="img" aria-label="{_e(label)}">'
        + "".join(body)
        + "</svg>"
    )


def _axes(
    frame: _Frame, *, y_title: str, x_title: str, y_format: Callable[[float], str]
) -> list[str]:
    right = frame.left + frame.plot_width
    parts = ['<g class="grid">']
    for tick in frame.ticks:
        y = frame.y(tick)
        parts.append(f'<line x1="{frame.left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{frame.left - 8}" y="{y:.1f}" dy="0.32em" '
            f'text-anchor="end">{_e(y_format(tick))}</text>'
        )
    parts.append("</g>")
    zero = frame.y(0.0)
    parts.append(
        f'<line class="axis" x1="{frame.left}" x2="{right}" y1="{zero:.1f}" y2="{zero:.1f}"/>'
    )
    middle = frame.top + frame.plot_height / 2
    parts.append(
        f'<text class="axis-title" transform="translate(14 {middle:.1f}) rotate(-90)" '
        f'text-anchor="middle">{_e(y_title)}</text>'
    )
    parts.append(
        f'<text class="axis-title" x="{frame.left + frame.plot_width / 2:.1f}" '
        f'y="{frame.height - 6}" text-anchor="middle">{_e(x_title)}</text>'
    )
    return parts


def _legend(frame: _Frame, items: Sequence[tuple[str, str]], *, line: bool = False) -> list[str]:
    """Swatches along the top edge, right-aligned-ish from the plot's left."""
    parts = ['<g class="legend">']
    x = frame.left
    for label, color in items:
        if line:
            parts.append(
                f'<line x1="{x}" x2="{x + 16}" y1="14" y2="14" stroke="{color}" stroke-width="3" '
                'stroke-linecap="round"/>'
            )
        else:
            parts.append(f'<rect x="{x}" y="8" width="12" height="12" rx="2" fill="{color}"/>')
        text_x = x + (22 if line else 17)
        parts.append(f'<text x="{text_x}" y="14" dy="0.32em">{_e(label)}</text>')
        x = text_x + 7 * len(label) + 20
    parts.append("</g>")
    return parts


def _daily_revenue_svg(points: list[_DailyPoint], currencies: list[str], grain: str) -> str:
    days = sorted({p.day for p in points})
    first, span = days[0], (days[-1] - days[0]).days
    values = [float(p.net) for p in points]
    frame = _Frame(ticks=_ticks(min(values), max(values)))

    def x(day: date) -> float:
        if span == 0:
            return frame.left + frame.plot_width / 2
        return frame.left + frame.plot_width * (day - first).days / span

    body = _axes(
        frame,
        y_title=f"Net revenue per {grain} (own currency)",
        x_title="Order date" if grain == "day" else f"Order {grain}",
        y_format=_fmt_compact,
    )
    label_count = min(len(days), 6)
    picks = sorted(
        {round(i * (len(days) - 1) / max(label_count - 1, 1)) for i in range(label_count)}
    )
    date_format = "%b %d" if span < 330 else "%b %Y"
    for i in picks:
        day = days[i]
        body.append(
            f'<line class="axis" x1="{x(day):.1f}" x2="{x(day):.1f}" y1="{frame.baseline}" '
            f'y2="{frame.baseline + 4}"/>'
            f'<text class="tick" x="{x(day):.1f}" y="{frame.baseline + 18}" '
            f'text-anchor="middle">{_e(day.strftime(date_format))}</text>'
        )
    colors = {c: SERIES_COLORS[i % len(SERIES_COLORS)] for i, c in enumerate(currencies)}
    for currency in currencies:
        series = [p for p in points if p.currency == currency]
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{x(p.day):.1f},{frame.y(float(p.net)):.1f}"
            for i, p in enumerate(series)
        )
        color = colors[currency]
        body.append(
            f'<g class="series" data-series="{_e(currency)}">'
            f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2" '
            'stroke-linejoin="round" stroke-linecap="round"/>'
        )
        radius = 3 if len(series) <= 60 else 2
        for p in series:
            body.append(
                f'<circle class="point" cx="{x(p.day):.1f}" cy="{frame.y(float(p.net)):.1f}" '
                f'r="{radius}" fill="{color}"><title>'
                f"{_e(_GRAIN_LABEL[grain] + ' ' if grain == 'week' else '')}"
                f"{_e(_period(p.day, grain))} · "
                f"{_e(fmt_money(p.net, currency))} net · {_e(fmt_int(p.orders))} orders"
                "</title></circle>"
            )
        body.append("</g>")
    body += _legend(frame, [(c, colors[c]) for c in currencies], line=True)
    return _svg(frame, f"Net revenue per {grain} and currency", body)


def _funnel_svg(stages: list[tuple[str, int]]) -> str:
    frame = _Frame(ticks=_ticks(0, max(v for _, v in stages)), bottom=66, top=28)
    body = _axes(frame, y_title="Sessions", x_title="Funnel stage", y_format=_fmt_compact)
    slot = frame.plot_width / len(stages)
    width = slot * 0.62
    first = stages[0][1]
    for i, (label, value) in enumerate(stages):
        left = frame.left + slot * i + (slot - width) / 2
        top = frame.y(value)
        center = left + width / 2
        previous = stages[i - 1][1] if i else None
        of_previous = value / previous if previous else None
        tooltip = f"{label}: {fmt_int(value)} sessions"
        if i:
            tooltip += (
                f" ({fmt_pct(of_previous)} of {stages[i - 1][0].lower()}, "
                f"{fmt_pct(value / first if first else None)} of sessions)"
            )
        body.append(
            f'<rect class="bar" x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{max(frame.baseline - top, 0):.1f}" rx="3" '
            f'fill="{FUNNEL_COLORS[i % len(FUNNEL_COLORS)]}"><title>{_e(tooltip)}</title></rect>'
            f'<text class="value" x="{center:.1f}" y="{top - 6:.1f}" text-anchor="middle">'
            f"{_e(fmt_int(value))}</text>"
            f'<text class="tick" x="{center:.1f}" y="{frame.baseline + 16}" '
            f'text-anchor="middle">{_e(label)}</text>'
        )
        if i:
            body.append(
                f'<text class="rate" x="{center:.1f}" y="{frame.baseline + 31}" '
                f'text-anchor="middle">{_e("→ " + fmt_pct(of_previous))}</text>'
            )
    return _svg(frame, "Conversion funnel, all channels", body)


def _roas_svg(channels: list[_Channel]) -> str:
    peak = max(max(float(c.spend), float(c.revenue)) for c in channels)
    frame = _Frame(ticks=_ticks(0, peak), top=48, bottom=56)
    body = _axes(frame, y_title="USD", x_title="Channel", y_format=_fmt_compact)
    slot = frame.plot_width / len(channels)
    group = min(slot * 0.72, 120)
    bar = group / 2
    for i, c in enumerate(channels):
        left = frame.left + slot * i + (slot - group) / 2
        center = left + group / 2
        tops = []
        for j, (what, amount, color) in enumerate(
            (("spend", c.spend, SPEND_COLOR), ("attributed revenue", c.revenue, REVENUE_COLOR))
        ):
            top = frame.y(float(amount))
            tops.append(top)
            body.append(
                f'<rect class="bar" x="{left + j * bar + 1:.1f}" y="{top:.1f}" '
                f'width="{bar - 2:.1f}" height="{max(frame.baseline - top, 0):.1f}" rx="2" '
                f'fill="{color}"><title>{_e(c.channel)} · {what} '
                f"{_e(fmt_money(amount, 'USD'))}</title></rect>"
            )
        roas = fmt_ratio(c.roas) if c.roas is not None else "no spend"
        body.append(
            f'<text class="value" x="{center:.1f}" y="{min(tops) - 7:.1f}" text-anchor="middle">'
            f"{_e(roas)}<title>{_e(c.channel)} · ROAS {_e(roas)}</title></text>"
        )
        name = c.channel if len(c.channel) <= 14 else c.channel[:13] + "…"
        body.append(
            f'<text class="tick" x="{center:.1f}" y="{frame.baseline + 16}" '
            f'text-anchor="middle">{_e(name)}<title>{_e(c.channel)}</title></text>'
        )
    body += _legend(frame, [("Ad spend", SPEND_COLOR), ("Attributed revenue", REVENUE_COLOR)])
    return _svg(frame, "Spend and attributed revenue by channel, USD", body)


def _histogram_color(index: int) -> str:
    """Green → amber → red over the ten probability bins."""
    stops = ((22, 163, 74), (245, 158, 11), (220, 38, 38))
    t = index / 9 * 2
    a, b = stops[min(int(t), 1)], stops[min(int(t), 1) + 1]
    f = t - min(int(t), 1)
    return "#" + "".join(f"{round(a[k] + (b[k] - a[k]) * f):02x}" for k in range(3))


def _churn_histogram_svg(bins: list[int]) -> str:
    frame = _Frame(ticks=_ticks(0, max(bins)), height=260, top=20, bottom=50)
    body = _axes(
        frame,
        y_title="Customers",
        x_title="Churn probability (latest score per customer)",
        y_format=_fmt_compact,
    )
    slot = frame.plot_width / len(bins)
    for i, count in enumerate(bins):
        top = frame.y(count)
        body.append(
            f'<rect class="bar" x="{frame.left + slot * i + 1:.1f}" y="{top:.1f}" '
            f'width="{slot - 2:.1f}" height="{max(frame.baseline - top, 0):.1f}" '
            f'fill="{_histogram_color(i)}"><title>{i / 10:.1f}{EN_DASH}{(i + 1) / 10:.1f}: '
            f"{_e(_customers(count))}</title></rect>"
        )
        if count:
            body.append(
                f'<text class="value" x="{frame.left + slot * (i + 0.5):.1f}" '
                f'y="{top - 5:.1f}" text-anchor="middle">{_e(fmt_int(count))}</text>'
            )
    for i in range(0, 11, 2):
        body.append(
            f'<text class="tick" x="{frame.left + slot * i:.1f}" y="{frame.baseline + 16}" '
            f'text-anchor="middle">{i / 10:.1f}</text>'
        )
    return _svg(frame, "Histogram of churn probability in ten bins", body)


def _bands_svg(rows: list[tuple[str, dict[str, int], Sequence[str]]]) -> str:
    """One stacked bar per view of churn risk (model bands, the customer_360 rule)."""
    row_height, gap = 24, 14
    height = 30 + len(rows) * (row_height + gap) + 26
    frame = _Frame(ticks=(0.0, 1.0), height=height, left=150, top=30, bottom=26)
    body = []
    bands = [b for b in RULE_BANDS if any(b in counts for _, counts, _ in rows)]
    body += _legend(
        _Frame(ticks=(0.0, 1.0), left=frame.left),
        [(b.replace("_", " "), BAND_COLORS[b]) for b in bands],
    )
    for r, (label, counts, order) in enumerate(rows):
        y = frame.top + r * (row_height + gap)
        total = sum(counts.values())
        body.append(
            f'<text class="row-label" x="{frame.left - 10}" y="{y + row_height / 2:.1f}" '
            f'dy="0.32em" text-anchor="end">{_e(label)}</text>'
        )
        x = float(frame.left)
        for band in [*order, *sorted(set(counts) - set(order), key=str)]:
            count = counts.get(band, 0)
            if not count:
                continue
            width = frame.plot_width * count / total
            share = fmt_pct(count / total, 0)
            color = BAND_COLORS.get(band, SPEND_COLOR)
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{y}" width="{width:.1f}" '
                f'height="{row_height}" fill="{color}"><title>{_e(label)} · {_e(band)}: '
                f"{_e(_customers(count))} ({_e(share)})</title></rect>"
            )
            text = f"{fmt_int(count)} · {share}" if width > 72 else share if width > 30 else ""
            if text:
                body.append(
                    f'<text class="in-bar{" on-light" if band == "no_orders" else ""}" '
                    f'x="{x + 6:.1f}" y="{y + row_height / 2:.1f}" '
                    f'dy="0.32em">{_e(text)}</text>'
                )
            x += width
    body.append(
        f'<text class="axis-title" x="{frame.left + frame.plot_width / 2:.1f}" '
        f'y="{height - 6}" text-anchor="middle">Share of customers per risk band</text>'
    )
    return _svg(frame, "Customers per churn risk band", body)


# --- HTML -----------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return f"<details><summary>Data</summary>{_table(headers, rows)}</details>"


def _no_data(data: _Data, *sources: tuple[str, str], otherwise: str = "") -> str:
    reasons = []
    for source in sources:
        state = data.status[source]
        if state == "missing":
            reasons.append(f"{_name(source)} has not been built yet")
        elif state == "empty":
            reasons.append(f"{_name(source)} is empty")
    if not reasons:
        reasons.append(otherwise or "nothing to show")
    return f'<p class="no-data"><strong>No data yet.</strong> {_e("; ".join(reasons))}.</p>'


def _figure(chart: str, title: str, note: str, content: str) -> str:
    return (
        f'<figure data-chart="{_e(chart)}"><figcaption>{_e(title)}'
        f'<span class="note">{_e(note)}</span></figcaption>{content}</figure>'
    )


def _daily_revenue_figure(data: _Data) -> str:
    grain = data.revenue_grain
    note = "Net = gross - refunds, by order day; each currency on its own line, never summed."
    if grain != "day":
        note += f" Summed per {grain} over this long a period"
        note += "; weeks start on Monday" if grain == "week" else ""
        note += f", so the first and last {grain} may be partial."
    if not data.daily:
        content = _no_data(data, DAILY_REVENUE)
    else:
        currencies = [c.currency for c in data.currencies]
        content = _daily_revenue_svg(data.daily, currencies, grain) + _details(
            [_GRAIN_LABEL[grain], "Currency", "Orders", "Net revenue"],
            [
                (
                    _period(p.day, grain),
                    p.currency,
                    fmt_int(p.orders),
                    fmt_money(p.net, p.currency),
                )
                for p in data.daily
            ],
        )
    title = {"day": "Daily", "week": "Weekly", "month": "Monthly"}[grain] + " net revenue"
    return _figure("daily_revenue", title, note, content)


def _funnel_figure(data: _Data) -> str:
    note = "Sessions reaching each step, all days and channels; → is the rate from the step before."
    if not data.funnel:
        content = _no_data(data, FUNNEL_DAILY)
    else:
        content = _funnel_svg(data.funnel) + _details(
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
    return _figure("funnel", "Conversion funnel", note, content)


def _roas_figure(data: _Data) -> str:
    plotted = [c for c in data.channels if c.channel != UNATTRIBUTED]
    unattributed = sum((c.revenue for c in data.channels if c.channel == UNATTRIBUTED), Decimal(0))
    note = "USD, last-touch attribution; the label over each pair is ROAS (revenue ÷ spend)."
    if unattributed:
        note += f" {fmt_money(unattributed, 'USD')} had no touch within 30 days (unattributed)."
    if not plotted:
        content = _no_data(data, MARKETING_ROAS, otherwise="no channel has spend or revenue")
    else:
        content = _roas_svg(plotted) + _details(
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
    return _figure("roas_by_channel", "ROAS by channel", note, content)


def _churn_figure(data: _Data) -> str:
    note = "The churn model's latest probability per customer, and customers per risk band."
    if data.model_versions:
        scored = data.scored_at.strftime("%Y-%m-%d %H:%M") if data.scored_at else "—"
        note += f" Model {', '.join(data.model_versions)}, scored {scored}."
    rows: list[tuple[str, dict[str, int], Sequence[str]]] = []
    if data.model_bands:
        rows.append(("Model bands", data.model_bands, RISK_BANDS))
    if data.rule_bands:
        rows.append(("Rule (customer_360)", data.rule_bands, RULE_BANDS))
    parts = []
    if data.churn_bins:
        parts.append(_churn_histogram_svg(data.churn_bins))
    else:
        parts.append(_no_data(data, CHURN_SCORES))
    if rows:
        parts.append(_bands_svg(rows))
    table_rows = [
        (f"{i / 10:.1f}{EN_DASH}{(i + 1) / 10:.1f}", fmt_int(n))
        for i, n in enumerate(data.churn_bins)
    ]
    band_rows = [
        (label, band, fmt_int(counts.get(band, 0)))
        for label, counts, order in rows
        for band in [*order, *sorted(set(counts) - set(order), key=str)]
    ]
    if table_rows or band_rows:
        parts.append(
            "<details><summary>Data</summary>"
            + (_table(["Churn probability", "Customers"], table_rows) if table_rows else "")
            + (_table(["View", "Band", "Customers"], band_rows) if band_rows else "")
            + "</details>"
        )
    return _figure("churn_risk", "Churn risk", note, "".join(parts))


def _money_values(amounts: dict[str, Decimal | None]) -> list[tuple[str, str]]:
    return [
        (currency, "—" if amount is None else f"{amount:,.2f}")
        for currency, amount in amounts.items()
    ]


def _tile(title: str, values: list[tuple[str, str]], sub: str, kpi: str) -> str:
    """A headline figure: one value, or one line per currency (``unit`` is the currency)."""
    lines = "".join(
        '<div class="value">'
        + (f'<span class="unit">{_e(unit)}</span> ' if unit else "")
        + f"{_e(value)}</div>"
        for unit, value in values or [("", "—")]
    )
    return (
        f'<section class="tile" data-kpi="{_e(kpi)}"><h2>{_e(title)}</h2>{lines}'
        f'<p class="sub">{_e(sub)}</p></section>'
    )


def _tiles(data: _Data) -> str:
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
    tiles = [
        _tile(
            "Net revenue",
            _money_values({c.currency: c.net for c in currencies}),
            "gross - refunds, per currency" if currencies else no_orders,
            "net_revenue",
        ),
        _tile(
            "Orders",
            [("", fmt_int(h.orders))] if currencies else [],
            " · ".join(f"{c.currency} {fmt_int(c.orders)}" for c in currencies) or no_orders,
            "orders",
        ),
        _tile(
            "Average order value",
            _money_values({c.currency: c.aov for c in currencies}),
            "gross ÷ orders, per currency" if currencies else no_orders,
            "aov",
        ),
        _tile(
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
        _tile(
            "Customers",
            [("", fmt_int(h.customers))] if h.customers is not None else [],
            f"with a revenue order, of {fmt_int(data.known_customers)} known"
            if data.known_customers is not None
            else "gold.customer_360 has no rows yet",
            "customers",
        ),
        _tile(
            "Conversion rate",
            [("", fmt_pct(h.conversion_rate, 2))] if h.conversion_rate is not None else [],
            f"{fmt_int(purchasing)} purchasing of {fmt_int(sessions)} sessions"
            if sessions
            else "no sessions yet",
            "conversion_rate",
        ),
        _tile(
            "Blended ROAS",
            [("", fmt_ratio(h.blended_roas))] if h.blended_roas is not None else [],
            roas_sub,
            "blended_roas",
        ),
        _tile(
            "High churn risk",
            [("", fmt_pct(h.high_churn_share))] if h.high_churn_share is not None else [],
            churn_sub,
            "high_churn_share",
        ),
    ]
    return '<div class="tiles">' + "".join(tiles) + "</div>"


_CSS = """
:root { --ink: #0f172a; --muted: #64748b; --line: #e2e8f0; --bg: #f6f7f9; --card: #fff;
  --accent: #2563eb; color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 32px 24px 40px; }
header { display: flex; flex-wrap: wrap; align-items: baseline; justify-content: space-between;
  gap: 4px 24px; border-bottom: 1px solid var(--line); padding-bottom: 16px; }
h1 { font-size: 22px; margin: 0; letter-spacing: -0.01em; }
header p { margin: 0; color: var(--muted); }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px;
  margin: 20px 0 24px; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 16px; }
.tile h2 { margin: 0 0 4px; font-size: 11px; font-weight: 600; letter-spacing: 0.06em;
  text-transform: uppercase; color: var(--muted); }
.tile .value { font-size: 22px; font-weight: 650; line-height: 1.25;
  font-variant-numeric: tabular-nums; }
.tile .unit { font-size: 13px; font-weight: 600; color: var(--muted); letter-spacing: 0.04em; }
.tile .sub { margin: 6px 0 0; font-size: 12px; color: var(--muted); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 16px 12px; break-inside: avoid; }
figcaption { font-weight: 650; font-size: 15px; margin-bottom: 8px; }
figcaption .note { display: block; font-weight: 400; font-size: 12px; color: var(--muted); }
figure svg { display: block; width: 100%; height: auto; overflow: visible; }
figure svg + svg { margin-top: 8px; }
svg text { font-size: 11px; fill: var(--muted); font-variant-numeric: tabular-nums; }
svg .legend text, svg .row-label { fill: var(--ink); font-size: 12px; }
svg .value { fill: var(--ink); font-weight: 600; }
svg .rate { fill: var(--accent); font-weight: 600; }
svg .in-bar { fill: #fff; font-weight: 600; }
svg .in-bar.on-light { fill: var(--ink); }
svg .axis-title { font-size: 11px; fill: var(--muted); letter-spacing: 0.02em; }
svg .grid line { stroke: var(--line); }
svg .axis { stroke: #94a3b8; }
svg .bar:hover, svg .point:hover { opacity: 0.75; }
.no-data { margin: 8px 0; padding: 40px 16px; text-align: center; color: var(--muted);
  border: 1px dashed #cbd5e1; border-radius: 8px; background: #fafafa; }
.no-data strong { color: var(--ink); }
details { margin-top: 10px; font-size: 12px; }
summary { cursor: pointer; color: var(--accent); }
table { border-collapse: collapse; width: 100%; margin-top: 6px;
  font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: right; }
th { color: var(--muted); font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
footer { margin-top: 24px; font-size: 12px; color: var(--muted); }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { background: #fff; font-size: 12px; }
  main { max-width: none; padding: 0; }
  .tiles { grid-template-columns: repeat(4, 1fr); }
  .charts { grid-template-columns: 1fr 1fr; }
  .tile, figure { border-color: #cbd5e1; break-inside: avoid; page-break-inside: avoid; }
  details { display: none; }
}
"""

# No network, no script: the page is data, and the browser is told so.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _render(data: _Data, generated_at: datetime) -> str:
    h = data.headline
    if h.period_start and h.period_end:
        period = f"Orders {h.period_start.isoformat()} → {h.period_end.isoformat()}"
    else:
        period = "No orders yet"
    if data.as_of_date:
        period += f" · customers as of {data.as_of_date.isoformat()}"
    stamp = generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sources = ", ".join(f"{_name(s)} ({'ok' if data.has(s) else data.status[s]})" for s in SOURCES)
    figures = (
        _daily_revenue_figure(data)
        + _funnel_figure(data)
        + _roas_figure(data)
        + _churn_figure(data)
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        "<title>KPI report · medallion platform</title>"
        f"<style>{_CSS}</style></head><body><main>"
        f"<header><h1>KPI report</h1><p>{_e(period)}</p></header>"
        f"{_tiles(data)}"
        f'<div class="charts">{figures}</div>'
        f"<footer>Generated {_e(stamp)} from the warehouse: {_e(sources)}. Money is shown per "
        "currency and never converted; ROAS is USD.</footer>"
        "</main></body></html>\n"
    )


# --- public API -----------------------------------------------------------------------------


def build_kpi_report(
    conn: duckdb.DuckDBPyConnection, *, generated_at: datetime | None = None
) -> str:
    """The report as one self-contained HTML document (tables missing or empty are noted)."""
    return _render(_collect(conn), generated_at or datetime.now(UTC))


def headline_kpis(conn: duckdb.DuckDBPyConnection) -> Headline:
    """The report's headline figures, without rendering it (``medallion demo`` prints them)."""
    return _collect(conn).headline


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
    data = _collect(conn)
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
