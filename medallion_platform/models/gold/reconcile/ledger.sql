-- The money silver holds, for the reconciliation checks of gold: one row per order (its total)
-- and one per succeeded refund (its amount), computed from silver and quarantine only, never
-- from gold. A refund takes its order's attributes when its charge names a known order (the
-- charge valid, or quarantined: the order id survives in _raw); otherwise it stands alone on
-- its own day. Every figure is in the currency it was made in (a refund in its own).
WITH charge_orders AS (
    SELECT charge_id, order_id
    FROM silver.payments_charges
    UNION ALL
    SELECT
        (_raw ->> 'charge_id'),
        arg_max(_raw ->> 'order_id', (_batch_id, _row_number))
    FROM quarantine.payments_charges
    WHERE (_raw ->> 'charge_id') NOT IN (SELECT charge_id FROM silver.payments_charges)
    GROUP BY (_raw ->> 'charge_id')
),
orders AS (
    SELECT
        order_id,
        customer_id,
        currency,
        CAST(timezone('UTC', placed_at) AS DATE) AS day,
        status <> 'cancelled' AND NOT coalesce(_deleted, FALSE) AS is_revenue,
        order_total
    FROM silver.orders
)
SELECT
    'order' AS kind,
    order_id AS item_id,
    order_id,
    customer_id,
    currency,
    day,
    is_revenue,
    order_total AS amount
FROM orders
UNION ALL
SELECT
    'refund',
    r.refund_id,
    o.order_id,
    o.customer_id,
    upper(r.currency),
    coalesce(o.day, CAST(r.created_at AS DATE)),
    o.is_revenue,
    r.amount
FROM silver.payments_refunds AS r
LEFT JOIN charge_orders AS c ON c.charge_id = r.charge_id
LEFT JOIN orders AS o ON o.order_id = c.order_id
WHERE coalesce(r.status, 'succeeded') = 'succeeded'
