-- Grain: one row per customer the app database ever had, built from the SCD2 history.
-- Current attributes come from the customer's latest live version; a customer erased since
-- (GDPR) keeps a row, so their past orders still resolve, with is_deleted = true and the
-- personal data (email, names) blanked. first_seen_at is when the platform first captured
-- the customer; signed_up_at is the account's own creation time in the app.
WITH versions AS (
    SELECT
        customer_id,
        min(valid_from) AS first_seen_at,
        max(valid_from) AS last_changed_at,
        count(*) FILTER (WHERE _op NOT IN ('d', 't')) AS versions,
        arg_max(_op, (valid_from, _commit_lsn, _seq)) IN ('d', 't') AS is_deleted
    FROM silver.customers_history
    GROUP BY customer_id
),
live AS (
    SELECT *
    FROM silver.customers_history
    WHERE _op NOT IN ('d', 't')
    QUALIFY row_number() OVER (
        PARTITION BY customer_id ORDER BY valid_from DESC, _commit_lsn DESC, _seq DESC
    ) = 1
)
SELECT
    v.customer_id,
    CASE WHEN v.is_deleted THEN NULL ELSE l.email END AS email,
    CASE WHEN v.is_deleted THEN NULL ELSE l.first_name END AS first_name,
    CASE WHEN v.is_deleted THEN NULL ELSE l.last_name END AS last_name,
    l.country,
    l.segment,
    l.marketing_opt_in,
    l.created_at AS signed_up_at,
    v.first_seen_at,
    v.last_changed_at,
    v.versions,
    v.is_deleted
FROM versions AS v
LEFT JOIN live AS l ON l.customer_id = v.customer_id
