-- Grain: one row per calendar day, covering whole years from the first to the last year any
-- order, clickstream event or ad-spend row falls in (UTC), so BI can join any fact to it.
WITH span AS (
    SELECT
        least(
            (SELECT min(CAST(timezone('UTC', placed_at) AS DATE)) FROM silver.orders),
            (SELECT min(CAST(occurred_at AS DATE)) FROM silver.events),
            (SELECT min(date) FROM silver.ad_spend)
        ) AS first_day,
        greatest(
            (SELECT max(CAST(timezone('UTC', placed_at) AS DATE)) FROM silver.orders),
            (SELECT max(CAST(occurred_at AS DATE)) FROM silver.events),
            (SELECT max(date) FROM silver.ad_spend)
        ) AS last_day
),
days AS (
    SELECT CAST(day AS DATE) AS date
    FROM span,
        range(
            CAST(date_trunc('year', first_day) AS TIMESTAMP),
            CAST(date_trunc('year', last_day) + INTERVAL 1 YEAR AS TIMESTAMP),
            INTERVAL 1 DAY
        ) AS t(day)
    WHERE first_day IS NOT NULL
)
SELECT
    date,
    CAST(year(date) AS INTEGER) AS year,
    CAST(quarter(date) AS INTEGER) AS quarter,
    CAST(month(date) AS INTEGER) AS month,
    monthname(date) AS month_name,
    CAST(day(date) AS INTEGER) AS day_of_month,
    CAST(isodow(date) AS INTEGER) AS day_of_week,
    dayname(date) AS day_name,
    CAST(week(date) AS INTEGER) AS iso_week,
    CAST(date_trunc('week', date) AS DATE) AS week_start,
    CAST(date_trunc('month', date) AS DATE) AS month_start,
    isodow(date) >= 6 AS is_weekend
FROM days
