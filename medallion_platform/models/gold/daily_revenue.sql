-- Grain: one row per day and currency (USD and EUR are never added together).
-- Revenue orders only; their refunds are counted on the order's day. A succeeded refund whose
-- order is not known (its charge is missing, or names no order silver has) is counted on the
-- refund's own day as refunds_without_order (part of refunds), so net revenue is never
-- overstated by a parent that did not arrive; such a day may have refunds and no orders.
-- net = gross - refunds on every row. A customer is new on the day of their first revenue order
-- in the data and returning on later days: new_customers + returning_customers = customers.
WITH orders AS (
    SELECT * FROM gold.fct_orders WHERE is_revenue
),
firsts AS (
    SELECT customer_id, min(order_date) AS first_order_date
    FROM orders
    GROUP BY customer_id
),
order_days AS (
    SELECT
        o.order_date AS date,
        o.currency,
        count(*) AS orders,
        count(DISTINCT o.customer_id) AS customers,
        count(DISTINCT o.customer_id) FILTER (WHERE f.first_order_date = o.order_date)
            AS new_customers,
        count(DISTINCT o.customer_id) FILTER (WHERE f.first_order_date < o.order_date)
            AS returning_customers,
        sum(o.gross) AS gross,
        sum(o.refunded_amount) AS refunds
    FROM orders AS o
    JOIN firsts AS f ON f.customer_id = o.customer_id
    GROUP BY o.order_date, o.currency
),
orphan_refunds AS (
    SELECT refund_date AS date, currency, sum(amount) AS refunds
    FROM gold.fct_refunds
    WHERE is_succeeded AND NOT has_order
    GROUP BY refund_date, currency
),
days AS (
    SELECT
        coalesce(d.date, r.date) AS date,
        coalesce(d.currency, r.currency) AS currency,
        coalesce(d.orders, 0) AS orders,
        coalesce(d.customers, 0) AS customers,
        coalesce(d.new_customers, 0) AS new_customers,
        coalesce(d.returning_customers, 0) AS returning_customers,
        coalesce(d.gross, 0) AS gross,
        coalesce(d.refunds, 0) + coalesce(r.refunds, 0) AS refunds,
        coalesce(r.refunds, 0) AS refunds_without_order
    FROM order_days AS d
    FULL OUTER JOIN orphan_refunds AS r ON r.date = d.date AND r.currency = d.currency
)
SELECT
    date,
    currency,
    orders,
    customers,
    new_customers,
    returning_customers,
    CAST(gross AS DECIMAL(18, 2)) AS gross,
    CAST(refunds AS DECIMAL(18, 2)) AS refunds,
    CAST(gross - refunds AS DECIMAL(18, 2)) AS net,
    CAST(round(gross / nullif(orders, 0), 2) AS DECIMAL(18, 2)) AS aov,
    CAST(refunds_without_order AS DECIMAL(18, 2)) AS refunds_without_order
FROM days
