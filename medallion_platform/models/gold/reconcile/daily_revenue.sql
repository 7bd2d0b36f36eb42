-- gold.daily_revenue from silver: revenue orders and their refunds on the order's day; a
-- refund whose order is not known (is_revenue NULL) on its own day.
SELECT
    day AS date,
    currency,
    coalesce(sum(amount) FILTER (WHERE kind = 'order'), 0) AS gross,
    coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0) AS refunds,
    sum(CASE WHEN kind = 'order' THEN amount ELSE -amount END) AS net
FROM ledger
WHERE coalesce(is_revenue, TRUE)
GROUP BY day, currency
