"""A synthetic shop with known churn behaviour, as the gold and silver tables the model reads.

Each customer signs up on some day, orders as a Poisson process at their own rate, and stops
for good at their own churn time (shorter lives for some segments and for customers who did not
opt into marketing), so the recency and frequency features carry real signal. Some customers
never order, some change segment (a second SCD2 version), some are erased (a tombstone), and
some orders are refunded days later. The tables have exactly the columns of the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 540  # ~18 months
SEGMENTS = ("consumer", "pro", "club")
COUNTRIES = ("US", "GB", "DE", "FR")

DDL = """
CREATE SCHEMA IF NOT EXISTS gold;
CREATE SCHEMA IF NOT EXISTS silver;
CREATE OR REPLACE TABLE gold.fct_orders (
    order_id VARCHAR, customer_id VARCHAR, order_date DATE, placed_at TIMESTAMPTZ,
    status VARCHAR, currency VARCHAR, item_count BIGINT, units BIGINT, gross DECIMAL(14, 2),
    payment_status VARCHAR, paid_amount DECIMAL(14, 2), refunded_amount DECIMAL(14, 2),
    net DECIMAL(14, 2), is_revenue BOOLEAN, is_deleted BOOLEAN, updated_at TIMESTAMPTZ
);
CREATE OR REPLACE TABLE silver.payments (
    charge_id VARCHAR, order_id VARCHAR, customer_id VARCHAR, currency VARCHAR,
    status VARCHAR, paid BOOLEAN, amount DECIMAL(14, 2), refunded_amount DECIMAL(14, 2),
    net_amount DECIMAL(14, 2), refund_count BIGINT, created_at TIMESTAMP,
    last_refunded_at TIMESTAMP
);
CREATE OR REPLACE TABLE silver.payments_refunds (
    refund_id VARCHAR, charge_id VARCHAR, amount DECIMAL(14, 2), currency VARCHAR,
    status VARCHAR, reason VARCHAR, created_at TIMESTAMP
);
CREATE OR REPLACE TABLE silver.customers_history (
    customer_id VARCHAR, email VARCHAR, first_name VARCHAR, last_name VARCHAR,
    country VARCHAR, segment VARCHAR, marketing_opt_in BOOLEAN, created_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ, valid_from TIMESTAMPTZ, valid_to TIMESTAMPTZ, is_current BOOLEAN,
    _op VARCHAR
);
CREATE OR REPLACE TABLE gold.dim_customer (
    customer_id VARCHAR, email VARCHAR, first_name VARCHAR, last_name VARCHAR,
    country VARCHAR, segment VARCHAR, marketing_opt_in BOOLEAN, signed_up_at TIMESTAMPTZ,
    first_seen_at TIMESTAMPTZ, last_changed_at TIMESTAMPTZ, versions BIGINT,
    is_deleted BOOLEAN
);
"""


@dataclass
class Shop:
    """Rows of the five input tables (lists of tuples in DDL column order)."""

    orders: list[tuple] = field(default_factory=list)
    payments: list[tuple] = field(default_factory=list)
    refunds: list[tuple] = field(default_factory=list)
    history: list[tuple] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    never_ordered: set[str] = field(default_factory=set)


def day(d: float) -> datetime:
    return START + timedelta(days=float(d))


def generate_shop(customers: int = 400, seed: int = 7, signal: bool = True) -> Shop:
    """The shop; with ``signal=False`` every customer orders at random until the end."""
    rng = np.random.default_rng(seed)
    shop = Shop()
    snapshot = day(120)  # the platform captured the app database then (valid_from)
    for i in range(customers):
        cid = f"cus_{i:06d}"
        segment = SEGMENTS[rng.choice(3, p=[0.6, 0.25, 0.15])]
        country = COUNTRIES[rng.integers(len(COUNTRIES))]
        opt_in = bool(rng.random() < 0.5)
        signup = float(rng.uniform(0, DAYS - 60))
        gap = float(np.clip(rng.lognormal(np.log(18 if segment == "pro" else 28), 0.5), 4, 90))
        life = float(rng.exponential(500 if segment != "consumer" or opt_in else 200))
        end = min(signup + life, DAYS) if signal else DAYS
        if not signal:
            gap = 30.0
        if rng.random() < 0.08:
            shop.never_ordered.add(cid)
            end = signup
        erased = bool(rng.random() < 0.04)
        if erased:  # erased five days before the data ends: no orders after that
            end = min(end, DAYS - 5)
        t = signup + rng.exponential(gap / 2)
        n = 0
        while t < end:
            n += 1
            oid = f"ord_{i:06d}{n:03d}"
            gross = round(float(rng.lognormal(4.0, 0.5)), 2)
            refund = round(gross * float(rng.uniform(0.2, 1.0)), 2) if rng.random() < 0.1 else 0
            placed = day(t)
            shop.orders.append(
                (
                    oid, cid, placed.date(), placed, "delivered", "USD", 1, 1, gross,
                    "partially_refunded" if refund else "paid", gross, refund,
                    round(gross - refund, 2), True, False, placed,
                )
            )  # fmt: skip
            charged = placed.replace(tzinfo=None) + timedelta(minutes=1)
            refunded_at = charged + timedelta(days=float(rng.uniform(1, 12)))
            shop.payments.append(
                (
                    f"ch_{oid}", oid, cid, "USD", "succeeded", True, gross, refund,
                    round(gross - refund, 2), 1 if refund else 0, charged,
                    refunded_at if refund else None,
                )
            )  # fmt: skip
            if refund:
                shop.refunds.append(
                    (f"re_{oid}", f"ch_{oid}", refund, "usd", "succeeded", None, refunded_at)
                )
            t += rng.exponential(gap)
        created = day(signup)
        names = (f"{cid}@example.com", "First", "Last", country)
        if rng.random() < 0.2:  # changed segment later: two versions
            changed = day(signup + rng.uniform(1, DAYS - 10 - signup))
            first_from = max(created, snapshot) if created < snapshot else created
            first_from = min(first_from, changed)
            shop.history.append(
                (cid, *names, "consumer", opt_in, created, created, first_from, changed, False, "c")
            )
            shop.history.append(
                (cid, *names, segment, opt_in, created, changed, changed, None, True, "u")
            )
        else:
            shop.history.append(
                (cid, *names, segment, opt_in, created, created, max(created, snapshot), None,
                 True, "r" if created < snapshot else "c")
            )  # fmt: skip
        if erased:
            shop.deleted.add(cid)
            gone = day(DAYS - 5)
            last = shop.history[-1]
            shop.history[-1] = (*last[:10], gone, False, last[12])
            shop.history.append(
                (cid, None, None, None, None, None, None, None, None, gone, None, False, "d")
            )
    return shop


DIM_CUSTOMER = """
INSERT INTO gold.dim_customer
WITH versions AS (
    SELECT customer_id, min(valid_from) AS first_seen_at, max(valid_from) AS last_changed_at,
           count(*) FILTER (WHERE _op <> 'd') AS versions,
           arg_max(_op, valid_from) = 'd' AS is_deleted
    FROM silver.customers_history GROUP BY customer_id
), live AS (
    SELECT * FROM silver.customers_history WHERE _op <> 'd'
    QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY valid_from DESC) = 1
)
SELECT v.customer_id, l.email, l.first_name, l.last_name, l.country, l.segment,
       l.marketing_opt_in, l.created_at, v.first_seen_at, v.last_changed_at, v.versions,
       v.is_deleted
FROM versions v LEFT JOIN live l USING (customer_id)
"""


def write_shop(conn: duckdb.DuckDBPyConnection, shop: Shop) -> None:
    """Create the five input tables on ``conn`` and fill them with ``shop``."""
    conn.execute(DDL)
    for table, rows in (
        ("gold.fct_orders", shop.orders),
        ("silver.payments", shop.payments),
        ("silver.payments_refunds", shop.refunds),
        ("silver.customers_history", shop.history),
    ):
        insert_rows(conn, table, rows)
    conn.execute(DIM_CUSTOMER)


def insert_rows(conn: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    if not rows:
        return
    columns = [r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall()]
    frame = pd.DataFrame(rows, columns=columns)
    conn.register("_rows", frame)
    try:
        conn.execute(f"INSERT INTO {table} SELECT * FROM _rows")
    finally:
        conn.unregister("_rows")
