-- Grain: one row per order of the app database, deleted (purged) orders included. gross is
-- the order total; refunded_amount sums the order's succeeded refunds (gold.fct_refunds: every
-- refund whose charge names the order, its charge valid or quarantined); net = gross -
-- refunded_amount. is_revenue marks the orders that count as sales (not cancelled, not
-- deleted): revenue KPIs read only those. Dates are UTC days.
-- payment_status, from the order's charges:
--   unknown            a charge of the order is in quarantine (paid_amount is NULL: not known)
--   refunded           a charge succeeded and the refunds reach what was paid
--   partially_refunded a charge succeeded and some of it was refunded
--   paid               a charge succeeded
--   pending / failed   no charge succeeded; one is pending / they failed
--   unpaid             no charge at all (none made yet, or not arrived yet)
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
        bool_or(status = 'succeeded') AS any_succeeded,
        bool_or(status = 'pending') AS any_pending,
        bool_or(status = 'failed') AS any_failed
    FROM silver.payments
    WHERE order_id IS NOT NULL
    GROUP BY order_id
),
quarantined AS (
    -- Orders with a charge that is only in quarantine: what was paid is not known.
    SELECT DISTINCT (q._raw ->> 'order_id') AS order_id
    FROM quarantine.payments_charges AS q
    WHERE (q._raw ->> 'order_id') IS NOT NULL
      AND NOT EXISTS (
          SELECT 1
          FROM silver.payments AS p
          WHERE p.charge_id = (q._raw ->> 'charge_id')
      )
),
refunds AS (
    SELECT order_id, sum(amount) AS refunded_amount
    FROM gold.fct_refunds
    WHERE is_succeeded AND has_order
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
        WHEN q.order_id IS NOT NULL THEN 'unknown'
        WHEN p.any_succeeded AND coalesce(r.refunded_amount, 0) >= p.paid_amount
            THEN 'refunded'
        WHEN p.any_succeeded AND r.refunded_amount > 0 THEN 'partially_refunded'
        WHEN p.any_succeeded THEN 'paid'
        WHEN p.any_pending THEN 'pending'
        WHEN p.any_failed THEN 'failed'
        ELSE 'unpaid'
    END AS payment_status,
    CAST(CASE WHEN q.order_id IS NULL THEN coalesce(p.paid_amount, 0) END AS DECIMAL(14, 2))
        AS paid_amount,
    CAST(coalesce(r.refunded_amount, 0) AS DECIMAL(14, 2)) AS refunded_amount,
    CAST(o.order_total - coalesce(r.refunded_amount, 0) AS DECIMAL(14, 2)) AS net,
    o.status <> 'cancelled' AND NOT coalesce(o._deleted, FALSE) AS is_revenue,
    coalesce(o._deleted, FALSE) AS is_deleted,
    o.updated_at
FROM silver.orders AS o
LEFT JOIN items AS i ON i.order_id = o.order_id
LEFT JOIN payments AS p ON p.order_id = o.order_id
LEFT JOIN quarantined AS q ON q.order_id = o.order_id
LEFT JOIN refunds AS r ON r.order_id = o.order_id
