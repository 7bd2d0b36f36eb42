-- Grain: one row per charge. Refunds are attached by charge_id; only succeeded refunds
-- (or refunds without a status) count toward the refunded amount.
WITH refunds AS (
    SELECT
        charge_id,
        sum(amount) AS refunded_amount,
        count(*) AS refund_count,
        max(created_at) AS last_refunded_at
    FROM silver.payments_refunds
    WHERE coalesce(status, 'succeeded') = 'succeeded'
    GROUP BY charge_id
)
SELECT
    c.charge_id,
    c.order_id,
    c.customer_id,
    upper(c.currency) AS currency,
    c.status,
    c.paid,
    c.amount,
    coalesce(r.refunded_amount, 0) AS refunded_amount,
    c.amount - coalesce(r.refunded_amount, 0) AS net_amount,
    coalesce(r.refund_count, 0) AS refund_count,
    c.created_at,
    r.last_refunded_at
FROM silver.payments_charges AS c
LEFT JOIN refunds AS r ON r.charge_id = c.charge_id
