-- Grain: one row per current customer (erased customers excluded). Figures count revenue
-- orders only. as_of_date is the newest day the data reaches (orders or sessions), not the
-- wall clock, so a stalled source does not age every customer and rebuilds are repeatable.
--   lifetime_value        = sum of net (gross - refunds) over the customer's orders
--   average_order_value   = gross / orders
--   refund_rate           = refunded / gross
--   sessions_last_30_days = storefront sessions in (as_of_date - 30, as_of_date]
--   top_category          = category with the most spend (ties: alphabetical)
--   churn_risk            = no_orders; high if the last order is > 90 days old; medium > 45;
--                           else low (a rule for BI; ml/churn_scores is the model's view)
WITH as_of AS (
    SELECT greatest(
        (SELECT max(order_date) FROM gold.fct_orders),
        (SELECT max(session_date) FROM gold.sessions)
    ) AS as_of_date
),
orders AS (
    SELECT
        customer_id,
        arg_max(currency, placed_at) AS currency,
        min(order_date) AS first_order_date,
        max(order_date) AS last_order_date,
        count(*) AS order_count,
        sum(gross) AS gross_revenue,
        sum(refunded_amount) AS refunded_amount,
        sum(net) AS lifetime_value
    FROM gold.fct_orders
    WHERE is_revenue
    GROUP BY customer_id
),
sessions AS (
    SELECT s.customer_id, count(*) AS sessions_last_30_days
    FROM gold.sessions AS s, as_of
    WHERE s.customer_id IS NOT NULL
      AND s.session_date > as_of.as_of_date - 30
      AND s.session_date <= as_of.as_of_date
    GROUP BY s.customer_id
),
categories AS (
    SELECT customer_id, category
    FROM (
        SELECT customer_id, category, sum(line_total) AS spend
        FROM gold.fct_order_items
        WHERE is_revenue AND category IS NOT NULL
        GROUP BY customer_id, category
    )
    QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY spend DESC, category) = 1
)
SELECT
    c.customer_id,
    c.email,
    c.segment,
    c.country,
    o.currency,
    o.first_order_date,
    o.last_order_date,
    coalesce(o.order_count, 0) AS order_count,
    CAST(coalesce(o.lifetime_value, 0) AS DECIMAL(18, 2)) AS lifetime_value,
    CAST(coalesce(o.gross_revenue, 0) AS DECIMAL(18, 2)) AS gross_revenue,
    CAST(coalesce(o.refunded_amount, 0) AS DECIMAL(18, 2)) AS refunded_amount,
    CAST(round(o.gross_revenue / o.order_count, 2) AS DECIMAL(18, 2)) AS average_order_value,
    CAST(a.as_of_date - o.last_order_date AS INTEGER) AS days_since_last_order,
    coalesce(s.sessions_last_30_days, 0) AS sessions_last_30_days,
    round(o.refunded_amount / nullif(o.gross_revenue, 0), 4)::DOUBLE AS refund_rate,
    t.category AS top_category,
    CASE
        WHEN o.order_count IS NULL THEN 'no_orders'
        WHEN a.as_of_date - o.last_order_date > 90 THEN 'high'
        WHEN a.as_of_date - o.last_order_date > 45 THEN 'medium'
        ELSE 'low'
    END AS churn_risk,
    a.as_of_date
FROM gold.dim_customer AS c
CROSS JOIN as_of AS a
LEFT JOIN orders AS o ON o.customer_id = c.customer_id
LEFT JOIN sessions AS s ON s.customer_id = c.customer_id
LEFT JOIN categories AS t ON t.customer_id = c.customer_id
WHERE NOT c.is_deleted
