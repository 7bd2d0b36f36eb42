"""Lineage: column lineage of SQL models derived from their SQL (``columns``, no Dagster),
and the lineage of an asset through the definitions (``graph``, behind ``medallion lineage``).

Only ``columns`` is re-exported here, so importing this package does not import Dagster."""

from medallion_platform.lineage.columns import (
    ColumnLineage,
    ColumnLineageError,
    ColumnRef,
    MissingTablesError,
    column_lineage,
    model_column_lineage,
    read_schemas,
)

__all__ = [
    "ColumnLineage",
    "ColumnLineageError",
    "ColumnRef",
    "MissingTablesError",
    "column_lineage",
    "model_column_lineage",
    "read_schemas",
]
