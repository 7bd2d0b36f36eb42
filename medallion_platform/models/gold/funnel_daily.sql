-- Grain: one row per session date and channel. Each stage counts the sessions that reached
-- it (had at least one such event), so a session counts once per stage however many products
-- it viewed. Rates divide consecutive stages; NULL when the earlier stage is zero.
WITH stages AS (
    SELECT
        session_date AS date,
        channel,
        count(*) AS sessions,
        count(*) FILTER (WHERE product_views > 0) AS product_view_sessions,
        count(*) FILTER (WHERE add_to_carts > 0) AS add_to_cart_sessions,
        count(*) FILTER (WHERE checkouts_started > 0) AS checkout_sessions,
        count(*) FILTER (WHERE purchases > 0) AS purchase_sessions,
        sum(purchases) AS purchases,
        sum(revenue) AS revenue
    FROM gold.sessions
    GROUP BY session_date, channel
)
SELECT
    *,
    round(add_to_cart_sessions / nullif(product_view_sessions, 0), 4) AS view_to_cart_rate,
    round(checkout_sessions / nullif(add_to_cart_sessions, 0), 4) AS cart_to_checkout_rate,
    round(purchase_sessions / nullif(checkout_sessions, 0), 4) AS checkout_to_purchase_rate,
    round(purchase_sessions / nullif(sessions, 0), 4) AS conversion_rate
FROM stages
