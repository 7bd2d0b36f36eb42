-- Grain: one row per SKU. Current catalog attributes plus a price band for slicing in BI.
SELECT
    sku,
    name AS product_name,
    category,
    brand,
    unit_price,
    currency,
    weight_kg,
    coalesce(active, TRUE) AS is_active,
    CASE
        WHEN unit_price < 25 THEN 'under_25'
        WHEN unit_price < 100 THEN '25_to_100'
        WHEN unit_price < 250 THEN '100_to_250'
        ELSE '250_plus'
    END AS price_band,
    updated_at AS catalog_updated_at
FROM silver.products
