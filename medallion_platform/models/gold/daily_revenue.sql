-- Grain: one row per order day and currency (USD and EUR are never added together).
-- Revenue orders only; refunds are counted on their order's day (net = gross - refunds on
-- every row). A customer is new on the day of their first revenue order in the data and
-- returning on later days: new_customers + returning_customers = customers.
WITH orders AS (
    SELECT * FROM gold.fct_orders WHERE is_revenue
),
firsts AS (
    SELECT customer_id, min(order_date) AS first_order_date
    FROM orders
    GROUP BY customer_id
)
SELECT
    o.order_date AS date,
    o.currency,
    count(*) AS orders,
    count(DISTINCT o.customer_id) AS customers,
    count(DISTINCT o.customer_id) FILTER (WHERE f.first_order_date = o.order_date)
        AS new_customers,
    count(DISTINCT o.customer_id) FILTER (WHERE f.first_order_date < o.order_date)
        AS returning_customers,
    CAST(sum(o.gross) AS DECIMAL(18, 2)) AS gross,
    CAST(sum(o.refunded_amount) AS DECIMAL(18, 2)) AS refunds,
    CAST(sum(o.net) AS DECIMAL(18, 2)) AS net,
    CAST(round(sum(o.gross) / count(*), 2) AS DECIMAL(18, 2)) AS aov
FROM orders AS o
JOIN firsts AS f ON f.customer_id = o.customer_id
GROUP BY o.order_date, o.currency
