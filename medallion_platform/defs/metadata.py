"""Materialization metadata in one shape for every table: the UI is a product surface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import MetadataValue, TableColumn, TableColumnConstraints, TableSchema
from dagster._core.definitions.metadata import TableMetadataSet

from medallion_platform.warehouse.tables import TableDescription


def table_metadata(
    desc: TableDescription, descriptions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Row count, column schema (with ``descriptions`` by column name, as the asset's
    definition declares them, so a materialization does not hide them) and a preview."""
    descriptions = descriptions or {}
    schema = TableSchema(
        columns=[
            TableColumn(
                name=c.name,
                type=c.type,
                description=descriptions.get(c.name),
                constraints=TableColumnConstraints(nullable=c.nullable),
            )
            for c in desc.columns
        ]
    )
    return {
        **TableMetadataSet(
            row_count=desc.row_count,
            column_schema=schema,
            table_name=f"{desc.schema_name}.{desc.table}",
        ),
        "preview": MetadataValue.md(desc.preview_markdown),
    }
