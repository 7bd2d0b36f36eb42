-- Grain: one row per date and channel. CTR = clicks / impressions, CPC = spend / clicks
-- (NULL when the denominator is zero, never a division error).
SELECT
    date,
    channel,
    count(DISTINCT campaign) AS campaigns,
    sum(spend) AS spend,
    sum(impressions) AS impressions,
    sum(clicks) AS clicks,
    round(sum(clicks) / nullif(sum(impressions), 0), 6) AS ctr,
    round(sum(spend) / nullif(sum(clicks), 0), 4) AS cpc
FROM silver.ad_spend
GROUP BY date, channel
