-- Grain: one row per day and channel. Spend comes from the ad platforms (USD); revenue is
-- attributed last-touch: each USD revenue order goes to the channel of the customer's last
-- storefront session that started at or before the order, within 30 days; orders with no
-- such session are 'unattributed', and so are refunds whose order is not known (on the
-- refund's day, as daily_revenue counts them), so attributed revenue over all channels equals
-- USD net revenue. Orders in other currencies are counted (attributed_orders_other_currency)
-- but not added to the USD revenue. roas = attributed_revenue / spend (NULL without spend).
WITH touches AS (
    SELECT customer_id, started_at, channel
    FROM gold.sessions
    WHERE customer_id IS NOT NULL
),
orders AS (
    SELECT order_id, customer_id, order_date, currency, net,
           CAST(timezone('UTC', placed_at) AS TIMESTAMP) AS placed_at_utc
    FROM gold.fct_orders
    WHERE is_revenue
),
attributed AS (
    SELECT
        o.order_date AS date,
        CASE
            WHEN t.channel IS NOT NULL AND o.placed_at_utc - t.started_at <= INTERVAL 30 DAY
                THEN t.channel
            ELSE 'unattributed'
        END AS channel,
        o.currency,
        o.net,
        TRUE AS is_order
    FROM orders AS o
    ASOF LEFT JOIN touches AS t
        ON o.customer_id = t.customer_id AND o.placed_at_utc >= t.started_at
    UNION ALL
    SELECT refund_date, 'unattributed', currency, -amount, FALSE
    FROM gold.fct_refunds
    WHERE is_succeeded AND NOT has_order AND currency = 'USD'
),
revenue AS (
    SELECT
        date,
        channel,
        count(*) FILTER (WHERE currency = 'USD' AND is_order) AS attributed_orders,
        coalesce(sum(net) FILTER (WHERE currency = 'USD'), 0) AS attributed_revenue,
        count(*) FILTER (WHERE currency <> 'USD' AND is_order)
            AS attributed_orders_other_currency
    FROM attributed
    GROUP BY date, channel
)
SELECT
    coalesce(s.date, r.date) AS date,
    coalesce(s.channel, r.channel) AS channel,
    CAST(coalesce(s.spend, 0) AS DECIMAL(18, 2)) AS spend,
    coalesce(s.impressions, 0) AS impressions,
    coalesce(s.clicks, 0) AS clicks,
    coalesce(r.attributed_orders, 0) AS attributed_orders,
    CAST(coalesce(r.attributed_revenue, 0) AS DECIMAL(18, 2)) AS attributed_revenue,
    coalesce(r.attributed_orders_other_currency, 0) AS attributed_orders_other_currency,
    round(r.attributed_revenue / nullif(s.spend, 0), 4)::DOUBLE AS roas
FROM gold.marketing_spend_daily AS s
FULL OUTER JOIN revenue AS r ON r.date = s.date AND r.channel = s.channel
