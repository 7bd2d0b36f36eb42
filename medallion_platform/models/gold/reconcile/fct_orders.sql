-- gold.fct_orders from silver: every order's total and the succeeded refunds of it.
SELECT
    order_id,
    currency,
    coalesce(sum(amount) FILTER (WHERE kind = 'order'), 0) AS gross,
    coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0) AS refunded_amount,
    sum(CASE WHEN kind = 'order' THEN amount ELSE -amount END) AS net
FROM ledger
WHERE order_id IS NOT NULL
GROUP BY order_id, currency
