"""What the KPI report shows, read from gold (and ml) in DuckDB: plain data, no markup.

Aggregation happens in SQL; Python only picks the grain and the headline ratios. A table
that is missing or empty is recorded in :attr:`ReportData.status`, and what reads it stays
empty, so the page can say "no data yet" instead of failing.

Money is never added across currencies: revenue, refunds and AOV are per currency. ROAS is in
USD, like ``gold.marketing_roas_daily`` (ad spend is billed in USD and revenue is attributed
from USD orders only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

import duckdb
from pydantic import BaseModel, ConfigDict, Field

from medallion_platform.warehouse.warehouse import table_exists

Source = tuple[str, str]
DAILY_REVENUE: Source = ("gold", "daily_revenue")
FUNNEL_DAILY: Source = ("gold", "funnel_daily")
MARKETING_ROAS: Source = ("gold", "marketing_roas_daily")
CUSTOMER_360: Source = ("gold", "customer_360")
CHURN_SCORES: Source = ("ml", "churn_scores")
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


@dataclass(frozen=True)
class CurrencyTotals:
    currency: str
    orders: int
    gross: Decimal
    refunds: Decimal
    net: Decimal
    aov: Decimal | None


@dataclass(frozen=True)
class DailyPoint:
    day: date
    currency: str
    net: Decimal
    orders: int


@dataclass(frozen=True)
class FunnelChannel:
    channel: str
    sessions: int
    purchase_sessions: int
    conversion_rate: float | None


@dataclass(frozen=True)
class Channel:
    channel: str
    spend: Decimal
    revenue: Decimal
    orders: int
    clicks: int
    roas: float | None


@dataclass
class ReportData:
    """Everything the page shows; ``status`` says which source tables held rows."""

    status: dict[Source, str]
    currencies: list[CurrencyTotals] = field(default_factory=list)
    daily: list[DailyPoint] = field(default_factory=list)
    revenue_grain: str = "day"
    funnel: list[tuple[str, int]] = field(default_factory=list)
    funnel_channels: list[FunnelChannel] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    known_customers: int | None = None
    rule_bands: dict[str, int] = field(default_factory=dict)
    as_of_date: date | None = None
    churn_bins: list[int] = field(default_factory=list)
    model_bands: dict[str, int] = field(default_factory=dict)
    model_versions: list[str] = field(default_factory=list)
    scored_at: datetime | None = None
    headline: Headline = field(default_factory=Headline)

    def has(self, source: Source) -> bool:
        return self.status[source] == "ok"


def grain_for(span_days: int) -> str:
    """Days for a quarter, weeks up to two years, then months: about 100 points at most."""
    return "day" if span_days <= 100 else "week" if span_days <= 731 else "month"


def source_name(source: Source) -> str:
    return ".".join(source)


def _status(conn: duckdb.DuckDBPyConnection, source: Source) -> str:
    schema, table = source
    if not table_exists(conn, schema, table):
        return "missing"
    (rows,) = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
    return "ok" if rows else "empty"


def collect(conn: duckdb.DuckDBPyConnection) -> ReportData:
    """Read every source the report shows (one pass of aggregate queries)."""
    data = ReportData(status={source: _status(conn, source) for source in SOURCES})
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
        data.currencies = [CurrencyTotals(*row[:6]) for row in rows]
        start, end = min(row[6] for row in rows), max(row[7] for row in rows)
        data.revenue_grain = grain_for((end - start).days)
        data.daily = [
            DailyPoint(*row)
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
            FunnelChannel(*row)
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
            Channel(*row)
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
