"""The DuckDB warehouse: connections, transactions, layout and bookkeeping (no Dagster)."""

from medallion_platform.warehouse.warehouse import (
    LAYER_SCHEMAS,
    Warehouse,
    WarehouseBusyError,
)

__all__ = ["LAYER_SCHEMAS", "Warehouse", "WarehouseBusyError"]
