"""Point-in-time churn features and labels, computed by one SQL statement inside DuckDB.

Grain of ``ml.churn_features``: one row per (customer_id, cutoff_date). A cutoff is a UTC
midnight; "before the cutoff" means strictly earlier than that instant, and every feature of a
row reads only data from before its cutoff:

- orders (``gold.fct_orders``) with ``placed_at < cutoff``. Every placed order counts, whatever
  became of it: ``status`` and ``is_deleted`` are today's state, so filtering on them would
  let later events (a cancellation after the cutoff) leak into the past;
- refunds (``silver.payments_refunds``, succeeded, of succeeded charges) with
  ``created_at < cutoff``: a refund made after the cutoff changes nothing before it;
- segment, country and marketing_opt_in from the version of ``silver.customers_history`` in
  force at the cutoff: the live (not tombstone) version with the latest source ``updated_at``
  before it. ``valid_from`` is when the platform captured a version, which for customers
  snapshotted recently is long after they signed up, so it is not used for this. A customer
  with no version updated before the cutoff gets NULL (shown to the model as "unknown").

Label: ``churned`` = no order placed in ``[cutoff, cutoff + horizon_days)``. Cutoffs step back
``cutoff_step_days`` from the latest one whose label window is complete, ``cutoff +
horizon_days <= as_of_date``, where ``as_of_date`` is the UTC day of the latest ``placed_at`` in
``gold.fct_orders`` (never the wall clock, so a rebuild gives the same table).

Population at a training cutoff: customers who signed up (``created_at``) before it and were
not deleted (tombstone) by then. ``has_orders`` marks those with at least one order before
it: the model learns and is evaluated on those only (churn is defined for buyers). The others
are kept so their rate of "no first order within the horizon" can score current customers
who never ordered (see :mod:`medallion_platform.ml.scoring`).

Scoring rows (``is_scoring``, ``churned`` NULL): one per current customer (``NOT is_deleted``
in ``gold.dim_customer``) at the cutoff ``as_of_date + 1``, so every known order is before it;
their attributes are the current ones from ``gold.dim_customer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from medallion_platform.ml.spec import ChurnSpec
from medallion_platform.warehouse.identifiers import qualified, quote

ML_SCHEMA = "ml"
FEATURES_TABLE = "churn_features"

NUMERIC_FEATURES = (
    "orders_30d",
    "orders_90d",
    "orders_365d",
    "orders_lifetime",
    "days_since_last_order",
    "days_since_first_order",
    "days_since_signup",
    "gross_lifetime",
    "refunds_lifetime",
    "net_lifetime",
    "average_order_value",
    "refund_rate",
    "avg_days_between_orders",
)
CATEGORICAL_FEATURES = ("segment", "country", "marketing_opt_in")
FEATURES = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)

INPUT_TABLES = (
    "gold.fct_orders",
    "gold.dim_customer",
    "silver.customers_history",
    "silver.payments",
    "silver.payments_refunds",
)


def _cutoffs_cte(spec: ChurnSpec) -> str:
    """``cutoffs(cutoff_date, is_scoring)``: the training cutoffs and the scoring one."""
    horizon, step, n = int(spec.horizon_days), int(spec.cutoff_step_days), int(spec.max_cutoffs)
    return f"""
bounds AS (
    SELECT
        CAST(max(timezone('UTC', placed_at)) AS DATE) AS as_of_date,
        CAST(min(timezone('UTC', placed_at)) AS DATE) AS first_order_date
    FROM gold.fct_orders
),
cutoffs AS (
    SELECT CAST(b.as_of_date - CAST({horizon} + {step} * r.i AS INTEGER) AS DATE) AS cutoff_date,
           FALSE AS is_scoring
    FROM bounds AS b, range({n}) AS r(i)
    WHERE b.as_of_date - CAST({horizon} + {step} * r.i AS INTEGER) > b.first_order_date
    UNION ALL
    SELECT CAST(b.as_of_date + 1 AS DATE), TRUE
    FROM bounds AS b
    WHERE b.as_of_date IS NOT NULL
)"""


def cutoffs_sql(spec: ChurnSpec) -> str:
    """The planned cutoffs, newest first: ``(cutoff_date, is_scoring)``."""
    return (
        f"WITH {_cutoffs_cte(spec)}\nSELECT cutoff_date, is_scoring FROM cutoffs "
        "ORDER BY cutoff_date DESC"
    )


def features_sql(spec: ChurnSpec) -> str:
    """The SELECT that builds ``ml.churn_features`` (portable SQL, no Python in the loop)."""
    horizon = int(spec.horizon_days)
    return f"""
WITH {_cutoffs_cte(spec)},
customers AS (
    SELECT
        customer_id,
        min(timezone('UTC', created_at)) FILTER (WHERE NOT is_tombstone) AS signed_up_at,
        min(timezone('UTC', valid_from)) FILTER (WHERE is_tombstone) AS deleted_at
    FROM (
        SELECT *, coalesce(_op IN ('d', 't'), FALSE) AS is_tombstone
        FROM silver.customers_history
    )
    GROUP BY customer_id
),
population AS (
    SELECT c.customer_id, k.cutoff_date, CAST(k.cutoff_date AS TIMESTAMP) AS cutoff_ts,
           FALSE AS is_scoring, c.signed_up_at
    FROM cutoffs AS k
    JOIN customers AS c
      ON c.signed_up_at < CAST(k.cutoff_date AS TIMESTAMP)
     AND (c.deleted_at IS NULL OR c.deleted_at >= CAST(k.cutoff_date AS TIMESTAMP))
    WHERE NOT k.is_scoring
    UNION ALL
    SELECT d.customer_id, k.cutoff_date, CAST(k.cutoff_date AS TIMESTAMP),
           TRUE, timezone('UTC', d.signed_up_at)
    FROM cutoffs AS k
    JOIN gold.dim_customer AS d ON NOT coalesce(d.is_deleted, FALSE)
    WHERE k.is_scoring
),
orders AS (
    SELECT customer_id, timezone('UTC', placed_at) AS placed_at, CAST(gross AS DOUBLE) AS gross
    FROM gold.fct_orders
    WHERE customer_id IS NOT NULL AND placed_at IS NOT NULL
),
order_features AS (
    SELECT
        p.customer_id,
        p.cutoff_date,
        count(*) AS orders_lifetime,
        count(*) FILTER (WHERE o.placed_at >= p.cutoff_ts - INTERVAL 30 DAY) AS orders_30d,
        count(*) FILTER (WHERE o.placed_at >= p.cutoff_ts - INTERVAL 90 DAY) AS orders_90d,
        count(*) FILTER (WHERE o.placed_at >= p.cutoff_ts - INTERVAL 365 DAY) AS orders_365d,
        min(o.placed_at) AS first_order_at,
        max(o.placed_at) AS last_order_at,
        coalesce(sum(o.gross), 0) AS gross_lifetime
    FROM population AS p
    JOIN orders AS o ON o.customer_id = p.customer_id AND o.placed_at < p.cutoff_ts
    GROUP BY p.customer_id, p.cutoff_date
),
refunds AS (
    SELECT
        coalesce(o.customer_id, c.customer_id) AS customer_id,
        CAST(r.created_at AS TIMESTAMP) AS refunded_at,
        CAST(r.amount AS DOUBLE) AS amount
    FROM silver.payments_refunds AS r
    JOIN silver.payments AS c ON c.charge_id = r.charge_id
    LEFT JOIN gold.fct_orders AS o ON o.order_id = c.order_id
    WHERE r.status = 'succeeded' AND c.status = 'succeeded'
),
refund_features AS (
    SELECT p.customer_id, p.cutoff_date, sum(r.amount) AS refunds_lifetime
    FROM population AS p
    JOIN refunds AS r ON r.customer_id = p.customer_id AND r.refunded_at < p.cutoff_ts
    GROUP BY p.customer_id, p.cutoff_date
),
labels AS (
    SELECT p.customer_id, p.cutoff_date, count(*) AS orders_in_window
    FROM population AS p
    JOIN orders AS o
      ON o.customer_id = p.customer_id
     AND o.placed_at >= p.cutoff_ts
     AND o.placed_at < p.cutoff_ts + INTERVAL {horizon} DAY
    WHERE NOT p.is_scoring
    GROUP BY p.customer_id, p.cutoff_date
),
attributes AS (
    SELECT p.customer_id, p.cutoff_date, h.segment, h.country, h.marketing_opt_in
    FROM population AS p
    JOIN silver.customers_history AS h
      ON h.customer_id = p.customer_id
     AND NOT coalesce(h._op IN ('d', 't'), FALSE)
     AND timezone('UTC', coalesce(h.updated_at, h.created_at)) < p.cutoff_ts
    WHERE NOT p.is_scoring
    QUALIFY row_number() OVER (
        PARTITION BY p.customer_id, p.cutoff_date
        ORDER BY coalesce(h.updated_at, h.created_at) DESC, h.valid_from DESC
    ) = 1
)
SELECT
    p.customer_id,
    p.cutoff_date,
    p.is_scoring,
    f.customer_id IS NOT NULL AS has_orders,
    coalesce(f.orders_30d, 0) AS orders_30d,
    coalesce(f.orders_90d, 0) AS orders_90d,
    coalesce(f.orders_365d, 0) AS orders_365d,
    coalesce(f.orders_lifetime, 0) AS orders_lifetime,
    (epoch(p.cutoff_ts) - epoch(f.last_order_at)) / 86400.0 AS days_since_last_order,
    (epoch(p.cutoff_ts) - epoch(f.first_order_at)) / 86400.0 AS days_since_first_order,
    (epoch(p.cutoff_ts) - epoch(p.signed_up_at)) / 86400.0 AS days_since_signup,
    CAST(coalesce(f.gross_lifetime, 0) AS DOUBLE) AS gross_lifetime,
    CAST(coalesce(r.refunds_lifetime, 0) AS DOUBLE) AS refunds_lifetime,
    CAST(coalesce(f.gross_lifetime, 0) - coalesce(r.refunds_lifetime, 0) AS DOUBLE)
        AS net_lifetime,
    f.gross_lifetime / f.orders_lifetime AS average_order_value,
    coalesce(r.refunds_lifetime, 0) / nullif(f.gross_lifetime, 0) AS refund_rate,
    CASE WHEN f.orders_lifetime > 1
        THEN (epoch(f.last_order_at) - epoch(f.first_order_at)) / 86400.0
             / (f.orders_lifetime - 1)
    END AS avg_days_between_orders,
    CASE WHEN p.is_scoring THEN d.segment ELSE a.segment END AS segment,
    CASE WHEN p.is_scoring THEN d.country ELSE a.country END AS country,
    CASE WHEN p.is_scoring THEN d.marketing_opt_in ELSE a.marketing_opt_in END
        AS marketing_opt_in,
    CASE WHEN NOT p.is_scoring THEN coalesce(l.orders_in_window, 0) = 0 END AS churned,
    CAST({horizon} AS INTEGER) AS horizon_days
FROM population AS p
LEFT JOIN order_features AS f
  ON f.customer_id = p.customer_id AND f.cutoff_date = p.cutoff_date
LEFT JOIN refund_features AS r
  ON r.customer_id = p.customer_id AND r.cutoff_date = p.cutoff_date
LEFT JOIN labels AS l
  ON l.customer_id = p.customer_id AND l.cutoff_date = p.cutoff_date
LEFT JOIN attributes AS a
  ON a.customer_id = p.customer_id AND a.cutoff_date = p.cutoff_date
LEFT JOIN gold.dim_customer AS d
  ON p.is_scoring AND d.customer_id = p.customer_id
"""


@dataclass(frozen=True)
class CutoffSummary:
    """One cutoff of the features table: how many rows, buyers, and churned buyers."""

    cutoff_date: date
    is_scoring: bool
    rows: int
    buyers: int
    churn_rate: float | None  # among buyers; None for the scoring cutoff


def plan_cutoffs(conn: duckdb.DuckDBPyConnection, spec: ChurnSpec) -> list[tuple[date, bool]]:
    """The cutoffs the features table will have, newest (the scoring one) first."""
    return [(d, bool(s)) for d, s in conn.execute(cutoffs_sql(spec)).fetchall()]


def build_features(conn: duckdb.DuckDBPyConnection, spec: ChurnSpec) -> list[CutoffSummary]:
    """(Re)build ``ml.churn_features`` on ``conn`` (the caller owns the transaction)."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(ML_SCHEMA)}")
    conn.execute(f"CREATE OR REPLACE TABLE {features_table()} AS {features_sql(spec)}")
    return summarize_features(conn)


def features_table() -> str:
    return qualified(ML_SCHEMA, FEATURES_TABLE)


def summarize_features(conn: duckdb.DuckDBPyConnection) -> list[CutoffSummary]:
    rows = conn.execute(
        f"""SELECT cutoff_date, is_scoring, count(*), count(*) FILTER (WHERE has_orders),
               avg(CAST(churned AS DOUBLE)) FILTER (WHERE has_orders)
        FROM {features_table()} GROUP BY ALL ORDER BY cutoff_date DESC"""
    ).fetchall()
    return [
        CutoffSummary(
            cutoff_date=d,
            is_scoring=bool(s),
            rows=int(n),
            buyers=int(b),
            churn_rate=None if rate is None else float(rate),
        )
        for d, s, n, b, rate in rows
    ]
