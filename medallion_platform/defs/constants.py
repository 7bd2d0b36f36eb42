"""Names shared across the Dagster layer."""

WAREHOUSE_POOL = "warehouse"
"""Concurrency pool of every step that writes the warehouse: DuckDB allows one writer."""

ROOT_OWNER = "team:data-platform"
