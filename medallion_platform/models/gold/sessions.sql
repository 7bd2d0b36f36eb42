-- Grain: one row per session. A session is a visitor's (anonymous_id) run of events with no
-- gap longer than 30 minutes; the next event after a longer gap starts a new one. Events are
-- ordered by time, then event_id, so ties resolve the same way on every rebuild.
WITH ordered AS (
    SELECT
        *,
        lag(occurred_at) OVER (
            PARTITION BY anonymous_id ORDER BY occurred_at, event_id
        ) AS previous_at
    FROM silver.events
),
numbered AS (
    SELECT
        *,
        sum(CASE WHEN previous_at IS NULL
                   OR occurred_at - previous_at > INTERVAL 30 MINUTE THEN 1 ELSE 0 END)
            OVER (PARTITION BY anonymous_id ORDER BY occurred_at, event_id
                  ROWS UNBOUNDED PRECEDING) AS session_number
    FROM ordered
)
SELECT
    anonymous_id || '@' || CAST(epoch_ms(min(occurred_at)) AS VARCHAR) AS session_id,
    anonymous_id,
    arg_max(customer_id, occurred_at) FILTER (WHERE customer_id IS NOT NULL) AS customer_id,
    arg_min(channel, (occurred_at, event_id)) AS channel,
    CAST(min(occurred_at) AS DATE) AS session_date,
    min(occurred_at) AS started_at,
    max(occurred_at) AS ended_at,
    CAST(epoch(max(occurred_at) - min(occurred_at)) AS BIGINT) AS duration_seconds,
    count(*) AS events,
    count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
    count(*) FILTER (WHERE event_type = 'product_view') AS product_views,
    count(*) FILTER (WHERE event_type = 'add_to_cart') AS add_to_carts,
    count(*) FILTER (WHERE event_type = 'checkout_started') AS checkouts_started,
    count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
    coalesce(sum(revenue) FILTER (WHERE event_type = 'purchase'), 0) AS revenue
FROM numbered
GROUP BY anonymous_id, session_number
