-- Grain: one row per refund in silver, whatever became of its charge: a refund is money paid
-- back, so it counts even when its charge broke the contract or has not arrived.
-- The order is the one the charge names (its metadata.order_id): read from the charge in
-- silver or, when the charge was quarantined, from its latest quarantined row (_raw keeps the
-- order id, even when the currency was not valid).
--   charge_state = 'valid' (the charge is in silver), 'quarantined' (only in quarantine) or
--                  'missing' (no such charge yet: the order is not known)
--   has_order    = the order is in silver.orders, so fct_orders carries the refund; the
--                  others are counted by daily_revenue on the refund's own day
--   is_succeeded = the refund counts (succeeded, or no status), as silver.payments counts them
WITH quarantined AS (
    SELECT
        (_raw ->> 'charge_id') AS charge_id,
        arg_max(_raw ->> 'order_id', (_batch_id, _row_number)) AS order_id
    FROM quarantine.payments_charges
    WHERE (_raw ->> 'charge_id') IS NOT NULL
    GROUP BY (_raw ->> 'charge_id')
),
resolved AS (
    SELECT
        r.refund_id,
        r.charge_id,
        r.currency,
        r.amount,
        r.status,
        r.reason,
        r.created_at,
        CASE
            WHEN c.charge_id IS NOT NULL THEN 'valid'
            WHEN q.charge_id IS NOT NULL THEN 'quarantined'
            ELSE 'missing'
        END AS charge_state,
        CASE WHEN c.charge_id IS NOT NULL THEN c.order_id ELSE q.order_id END AS order_id
    FROM silver.payments_refunds AS r
    LEFT JOIN silver.payments_charges AS c ON c.charge_id = r.charge_id
    LEFT JOIN quarantined AS q ON q.charge_id = r.charge_id
)
SELECT
    r.refund_id,
    r.charge_id,
    r.charge_state,
    r.order_id,
    o.order_id IS NOT NULL AS has_order,
    upper(r.currency) AS currency,
    CAST(r.amount AS DECIMAL(14, 2)) AS amount,
    r.status,
    coalesce(r.status, 'succeeded') = 'succeeded' AS is_succeeded,
    r.reason,
    r.created_at AS refunded_at,
    CAST(r.created_at AS DATE) AS refund_date
FROM resolved AS r
LEFT JOIN silver.orders AS o ON o.order_id = r.order_id
