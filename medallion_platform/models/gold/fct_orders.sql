-- Grain: one row per order of the app database, deleted (purged) orders included. gross is
-- the order total; refunded_amount sums the succeeded refunds of the order's succeeded
-- charges; net = gross - refunded_amount. is_revenue marks the orders that count as sales
-- (not cancelled, not deleted): revenue KPIs read only those. Dates are UTC days.
WITH items AS (
    SELECT
        order_id,
        count(*) AS item_count,
        sum(quantity) AS units
    FROM silver.order_items
    GROUP BY order_id
),
payments AS (
    SELECT
        order_id,
        coalesce(sum(amount) FILTER (WHERE status = 'succeeded'), 0) AS paid_amount,
        coalesce(sum(refunded_amount) FILTER (WHERE status = 'succeeded'), 0) AS refunded_amount,
        bool_or(status = 'succeeded') AS any_succeeded,
        bool_or(status = 'pending') AS any_pending,
        bool_or(status = 'failed') AS any_failed
    FROM silver.payments
    WHERE order_id IS NOT NULL
    GROUP BY order_id
)
SELECT
    o.order_id,
    o.customer_id,
    CAST(timezone('UTC', o.placed_at) AS DATE) AS order_date,
    o.placed_at,
    o.status,
    o.currency,
    coalesce(i.item_count, 0) AS item_count,
    coalesce(i.units, 0) AS units,
    CAST(o.order_total AS DECIMAL(14, 2)) AS gross,
    CASE
        WHEN p.any_succeeded AND p.refunded_amount >= p.paid_amount THEN 'refunded'
        WHEN p.any_succeeded AND p.refunded_amount > 0 THEN 'partially_refunded'
        WHEN p.any_succeeded THEN 'paid'
        WHEN p.any_pending THEN 'pending'
        WHEN p.any_failed THEN 'failed'
        ELSE 'unpaid'
    END AS payment_status,
    CAST(coalesce(p.paid_amount, 0) AS DECIMAL(14, 2)) AS paid_amount,
    CAST(coalesce(p.refunded_amount, 0) AS DECIMAL(14, 2)) AS refunded_amount,
    CAST(o.order_total - coalesce(p.refunded_amount, 0) AS DECIMAL(14, 2)) AS net,
    o.status <> 'cancelled' AND NOT coalesce(o._deleted, FALSE) AS is_revenue,
    coalesce(o._deleted, FALSE) AS is_deleted,
    o.updated_at
FROM silver.orders AS o
LEFT JOIN items AS i ON i.order_id = o.order_id
LEFT JOIN payments AS p ON p.order_id = o.order_id
