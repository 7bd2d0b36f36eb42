-- gold.customer_360 from silver: each current customer's revenue orders net of their refunds.
SELECT
    customer_id,
    currency,
    sum(CASE WHEN kind = 'order' THEN amount ELSE -amount END) AS lifetime_value
FROM ledger
WHERE is_revenue AND customer_id IN (SELECT customer_id FROM silver.customers)
GROUP BY customer_id, currency
