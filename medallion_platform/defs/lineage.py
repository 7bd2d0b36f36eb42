"""Column lineage of SQL models as Dagster metadata (``dagster/column_lineage``).

The lineage itself is derived from the model's SQL in :mod:`medallion_platform.lineage.columns`;
this only turns it into Dagster's types, with asset keys in the platform's ``[schema, table]``
scheme so the UI links each column to the column of the asset it comes from.
"""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, TableColumnDep, TableColumnLineage

from medallion_platform.gold import SqlModel
from medallion_platform.lineage.columns import ColumnLineage, Schemas, model_column_lineage

COLUMN_LINEAGE_KEY = "dagster/column_lineage"


def table_column_lineage(lineage: ColumnLineage) -> TableColumnLineage:
    """Every output column, with its source columns (none for a ``count(*)`` or a constant)."""
    return TableColumnLineage(
        deps_by_column={
            column: [
                TableColumnDep(asset_key=AssetKey(ref.table.split(".")), column_name=ref.column)
                for ref in sorted(refs)
            ]
            for column, refs in lineage.items()
        }
    )


def column_lineage_metadata(model: SqlModel, schemas: Schemas) -> dict[str, Any]:
    """``{"dagster/column_lineage": TableColumnLineage(...)}`` for a model's materialization.

    ``schemas`` are the columns of the tables the model reads (``read_schemas(conn,
    model.depends_on)``). Raises ``ColumnLineageError`` if the SQL cannot be analysed: every
    configured model is checked by the tests, so that means a model sqlglot cannot follow."""
    return {COLUMN_LINEAGE_KEY: table_column_lineage(model_column_lineage(model, schemas))}
