-- Grain: one row per order line. The order's customer, day, currency and revenue flag are
-- carried onto the line, and the product's category from the catalog, so item-level
-- questions (what sells, to whom) need no further join.
SELECT
    i.order_id,
    i.line_no,
    o.customer_id,
    CAST(timezone('UTC', o.placed_at) AS DATE) AS order_date,
    i.sku,
    p.category,
    i.quantity,
    i.unit_price,
    CAST(i.quantity * i.unit_price AS DECIMAL(14, 2)) AS line_total,
    o.currency,
    o.status <> 'cancelled' AND NOT coalesce(o._deleted, FALSE) AS is_revenue
FROM silver.order_items AS i
LEFT JOIN silver.orders AS o ON o.order_id = i.order_id
LEFT JOIN gold.dim_product AS p ON p.sku = i.sku
