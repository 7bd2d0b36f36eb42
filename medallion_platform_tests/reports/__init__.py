"""Gold and ml tables for report, analytics and notebook tests, with the columns the gold
models produce: a tiny hand-made dataset (figures checkable by hand) and a realistic one."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb

GOLD_DDL = """
CREATE SCHEMA IF NOT EXISTS gold;
CREATE TABLE gold.daily_revenue (
    date DATE, currency VARCHAR, orders BIGINT, customers BIGINT, new_customers BIGINT,
    returning_customers BIGINT, gross DECIMAL(18, 2), refunds DECIMAL(18, 2),
    net DECIMAL(18, 2), aov DECIMAL(18, 2)
);
CREATE TABLE gold.funnel_daily (
    date DATE, channel VARCHAR, sessions BIGINT, product_view_sessions BIGINT,
    add_to_cart_sessions BIGINT, checkout_sessions BIGINT, purchase_sessions BIGINT,
    purchases BIGINT, revenue DECIMAL(18, 2), view_to_cart_rate DOUBLE,
    cart_to_checkout_rate DOUBLE, checkout_to_purchase_rate DOUBLE, conversion_rate DOUBLE
);
CREATE TABLE gold.marketing_roas_daily (
    date DATE, channel VARCHAR, spend DECIMAL(18, 2), impressions BIGINT, clicks BIGINT,
    attributed_orders BIGINT, attributed_revenue DECIMAL(18, 2), roas DOUBLE
);
CREATE TABLE gold.customer_360 (
    customer_id VARCHAR, email VARCHAR, segment VARCHAR, country VARCHAR, currency VARCHAR,
    first_order_date DATE, last_order_date DATE, order_count BIGINT,
    lifetime_value DECIMAL(18, 2), gross_revenue DECIMAL(18, 2),
    refunded_amount DECIMAL(18, 2), average_order_value DECIMAL(18, 2),
    days_since_last_order INTEGER, sessions_last_30_days BIGINT, refund_rate DOUBLE,
    top_category VARCHAR, churn_risk VARCHAR, as_of_date DATE
);
"""

ML_DDL = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE ml.churn_scores (
    customer_id VARCHAR, churn_probability DOUBLE, risk_band VARCHAR, model_version VARCHAR,
    cutoff_date DATE, scored_at TIMESTAMP
);
"""

EVIL_CHANNEL = '<script>alert("x")</script>'
"""A channel name that must reach the page escaped."""


def insert(conn: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    """Many rows per INSERT (``executemany`` runs one statement per row: slow)."""
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        values = ", ".join("(" + ", ".join("?" * len(row)) + ")" for row in chunk)
        conn.execute(f"INSERT INTO {table} VALUES {values}", [v for row in chunk for v in row])


def create_tables(conn: duckdb.DuckDBPyConnection, *, ml: bool = True) -> None:
    conn.execute(GOLD_DDL)
    if ml:
        conn.execute(ML_DDL)


def _funnel_row(day: date, channel: str, stages: tuple[int, int, int, int, int], revenue):
    sessions, views, carts, checkouts, purchases = stages

    def rate(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return (
        day,
        channel,
        *stages,
        purchases,
        Decimal(revenue),
        rate(carts, views),
        rate(checkouts, carts),
        rate(purchases, checkouts),
        rate(purchases, sessions),
    )


def load_tiny(conn: duckdb.DuckDBPyConnection, *, ml: bool = True) -> None:
    """Figures by hand: USD net 1,414.50 (AOV 286.90), EUR net 50.00, 6 orders, conversion
    8/200 = 4.00%, blended ROAS 500/250 = 2.00 (search 2.00, social 0.50), 3 customers with
    orders of 4 (1 high by rule: 33.3%), latest model scores in bins 0, 5 and 9."""
    create_tables(conn, ml=ml)
    d1, d2 = date(2026, 10, 1), date(2026, 10, 2)
    conn.executemany(
        "INSERT INTO gold.daily_revenue VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (d1, "USD", 2, 2, 2, 0, Decimal("200.00"), Decimal("20.00"), Decimal("180.00"),
             Decimal("100.00")),
            (d1, "EUR", 1, 1, 1, 0, Decimal("50.00"), Decimal("0.00"), Decimal("50.00"),
             Decimal("50.00")),
            (d2, "USD", 3, 3, 1, 2, Decimal("1234.50"), Decimal("0.00"), Decimal("1234.50"),
             Decimal("411.50")),
        ],
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO gold.funnel_daily VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            _funnel_row(d1, "search", (100, 60, 20, 10, 5), "300.00"),
            _funnel_row(d1, EVIL_CHANNEL, (100, 40, 10, 6, 3), "90.00"),
        ],
    )
    conn.executemany(
        "INSERT INTO gold.marketing_roas_daily VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (d1, "search", Decimal("100.00"), 1000, 50, 2, Decimal("250.00"), 2.5),
            (d2, "search", Decimal("100.00"), 1200, 40, 1, Decimal("150.00"), 1.5),
            (d1, "social", Decimal("50.00"), 5000, 20, 1, Decimal("25.00"), 0.5),
            (d2, "unattributed", Decimal("0.00"), 0, 0, 1, Decimal("75.00"), None),
        ],
    )
    as_of = d2
    customers = [
        ("c1", "low", 3, d2, 0.05, "low"),
        ("c2", "high", 1, d1 - timedelta(days=120), 0.92, "high"),
        ("c3", "medium", 1, d1 - timedelta(days=60), 0.55, "medium"),
        ("c4", "no_orders", 0, None, None, None),
    ]
    for customer_id, risk, orders, last, _, _ in customers:
        gross = Decimal("100.00") * orders
        conn.execute(
            "INSERT INTO gold.customer_360 VALUES "
            "(?, ?, 'consumer', 'US', ?, ?, ?, ?, ?, ?, 0, ?, ?, 2, ?, 'shoes', ?, ?)",
            [
                customer_id,
                f"{customer_id}@example.com",
                "USD" if orders else None,
                last,
                last,
                orders,
                gross,
                gross,
                Decimal("100.00") if orders else None,
                (as_of - last).days if last else None,
                0.0 if orders else None,
                risk,
                as_of,
            ],
        )
    if ml:
        scored = datetime(2026, 10, 3, 6, 0)
        rows = [
            (cid, p, band, "v1", as_of, scored)
            for cid, _, _, _, p, band in customers
            if p is not None
        ]
        rows.append(("c2", 0.15, "low", "v0", as_of, scored - timedelta(days=1)))  # superseded
        conn.executemany("INSERT INTO ml.churn_scores VALUES (?, ?, ?, ?, ?, ?)", rows)


CHANNELS = {  # channel: (daily spend USD, ROAS, conversion)
    "paid_search": (420.0, 3.1, 0.041),
    "paid_social": (310.0, 1.4, 0.022),
    "display": (150.0, 0.6, 0.011),
    "affiliate": (90.0, 2.2, 0.034),
    "email": (0.0, 0.0, 0.052),
    "organic": (0.0, 0.0, 0.028),
}
CURRENCIES = {"USD": 1.0, "EUR": 0.45, "GBP": 0.2}


def load_realistic(
    conn: duckdb.DuckDBPyConnection, *, days: int = 60, customers: int = 400, seed: int = 7
) -> None:
    """A small shop over ``days`` days: weekly rhythm, growth, three currencies, six channels,
    refunds, and churn scores loosely agreeing with the customer_360 rule."""
    rng = random.Random(seed)
    create_tables(conn)
    start = date(2026, 9, 1)
    revenue_rows, funnel_rows, roas_rows = [], [], []
    for i in range(days):
        day = start + timedelta(days=i)
        rhythm = (1.25 if day.weekday() >= 5 else 1.0) * (1 + i / days * 0.4)
        for currency, weight in CURRENCIES.items():
            orders = max(1, round(rng.gauss(38 * weight * rhythm, 4 * weight)))
            aov = Decimal(str(round(rng.gauss(72, 6), 2)))
            gross = aov * orders
            refunds = (gross * Decimal(str(round(rng.uniform(0.0, 0.07), 3)))).quantize(
                Decimal("0.01")
            )
            new = round(orders * rng.uniform(0.3, 0.5))
            revenue_rows.append(
                (day, currency, orders, orders, new, orders - new, gross, refunds,
                 gross - refunds, aov)
            )  # fmt: skip
        for channel, (spend, roas, conversion) in CHANNELS.items():
            sessions = round(rng.gauss(260, 25) * rhythm * (1.6 if channel == "organic" else 1))
            views = round(sessions * rng.uniform(0.55, 0.7))
            carts = round(views * rng.uniform(0.22, 0.3))
            checkouts = round(carts * rng.uniform(0.5, 0.65))
            purchases = min(checkouts, round(sessions * conversion * rng.uniform(0.8, 1.2)))
            funnel_rows.append(
                _funnel_row(day, channel, (sessions, views, carts, checkouts, purchases),
                            f"{purchases * 71.5:.2f}")
            )  # fmt: skip
            day_spend = Decimal(f"{spend * rhythm * rng.uniform(0.8, 1.2):.2f}")
            revenue = Decimal(f"{float(day_spend) * roas * rng.uniform(0.7, 1.3):.2f}")
            if channel in ("email", "organic"):
                revenue = Decimal(f"{rng.uniform(300, 900) * rhythm:.2f}")
            clicks = round(float(day_spend) * rng.uniform(0.8, 1.6))
            roas_rows.append(
                (day, channel, day_spend, clicks * 40, clicks, round(float(revenue) / 72),
                 revenue, float(revenue / day_spend) if day_spend else None)
            )  # fmt: skip
        roas_rows.append(
            (day, "unattributed", Decimal("0.00"), 0, 0, 9, Decimal(f"{rng.uniform(400, 800):.2f}"),
             None)
        )  # fmt: skip
    insert(conn, "gold.daily_revenue", revenue_rows)
    insert(conn, "gold.funnel_daily", funnel_rows)
    insert(conn, "gold.marketing_roas_daily", roas_rows)

    as_of = start + timedelta(days=days - 1)
    customer_rows, score_rows = [], []
    for n in range(customers):
        cid = f"cus_{n:05d}"
        currency = rng.choices(list(CURRENCIES), weights=list(CURRENCIES.values()))[0]
        orders = 0 if rng.random() < 0.12 else 1 + int(rng.expovariate(0.45))
        if orders:
            idle = int(rng.expovariate(1 / 40))
            last = as_of - timedelta(days=idle)
            first = last - timedelta(days=int(rng.uniform(0, 200)) if orders > 1 else 0)
            gross = Decimal(f"{orders * rng.gauss(72, 15):.2f}")
            refunded = (gross * Decimal(rng.choice(["0", "0", "0", "0.1", "0.5"]))).quantize(
                Decimal("0.01")
            )
            risk = "high" if idle > 90 else "medium" if idle > 45 else "low"
            logit = (idle - 60) / 18 - 0.25 * orders + rng.gauss(0, 0.8)
            probability = 1 / (1 + math.exp(-logit))
        else:
            idle = last = first = gross = refunded = None
            risk = "no_orders"
            probability = rng.uniform(0.45, 0.95)
        customer_rows.append(
            (cid, f"{cid}@example.com", rng.choice(["consumer", "business"]),
             rng.choice(["US", "DE", "FR", "GB", "NL"]), currency if orders else None, first, last,
             orders, (gross - refunded) if orders else Decimal(0), gross or Decimal(0),
             refunded or Decimal(0), (gross / orders).quantize(Decimal("0.01")) if orders else None,
             idle, rng.randint(0, 9), float(refunded / gross) if orders and gross else None,
             rng.choice(["shoes", "outerwear", "accessories", "knitwear"]) if orders else None,
             risk, as_of)
        )  # fmt: skip
        band = "high" if probability >= 0.6 else "medium" if probability >= 0.3 else "low"
        score_rows.append(
            (cid, round(probability, 4), band, "gbm-2026.10", as_of, datetime(2026, 10, 31, 2))
        )
    insert(conn, "gold.customer_360", customer_rows)
    insert(conn, "ml.churn_scores", score_rows)


def make_warehouse(path: Path, dataset: str = "tiny", *, ml: bool = True) -> Path:
    """A DuckDB file holding the dataset (``tiny``, ``realistic`` or ``empty`` tables)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as conn:
        if dataset == "tiny":
            load_tiny(conn, ml=ml)
        elif dataset == "realistic":
            load_realistic(conn)
        elif dataset == "empty":
            create_tables(conn, ml=ml)
        else:
            raise ValueError(dataset)
    return path
