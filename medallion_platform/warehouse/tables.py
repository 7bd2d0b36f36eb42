"""Handles for warehouse tables and queries, so large data stays inside DuckDB.

``SqlQuery`` is what an asset returns to have a table built by the warehouse (CREATE TABLE …
AS SELECT); ``TableRef`` is what an asset receives for a table it only needs to query. Neither
carries rows through Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
from pydantic import BaseModel

from medallion_platform.warehouse.identifiers import qualified, quote


@dataclass(frozen=True)
class SqlQuery:
    """A SELECT whose result becomes the asset's table, computed inside the warehouse."""

    sql: str


@dataclass(frozen=True)
class TableRef:
    """A lazy reference to a warehouse table (optionally a slice of it)."""

    schema: str
    table: str
    select_sql: str

    @property
    def name(self) -> str:
        return qualified(self.schema, self.table)


class ColumnInfo(BaseModel):
    name: str
    type: str
    nullable: bool = True


class TableDescription(BaseModel):
    """What a person wants to see about a table: size, columns, a few rows."""

    schema_name: str
    table: str
    row_count: int
    columns: list[ColumnInfo]
    preview_markdown: str


def describe_table(
    conn: duckdb.DuckDBPyConnection, schema: str, table: str, preview_rows: int = 5
) -> TableDescription:
    columns = [
        ColumnInfo(name=name, type=dtype, nullable=nullable == "YES")
        for name, dtype, nullable in conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, table],
        ).fetchall()
    ]
    count = conn.execute(f"SELECT count(*) FROM {qualified(schema, table)}").fetchone()[0]
    shown = [c.name for c in columns if not c.name.startswith("_")][:8] or [
        c.name for c in columns
    ][:8]
    rows = []
    if shown:
        cols_sql = ", ".join(f"CAST({quote(c)} AS VARCHAR)" for c in shown)
        rows = conn.execute(
            f"SELECT {cols_sql} FROM {qualified(schema, table)} LIMIT {int(preview_rows)}"
        ).fetchall()
    return TableDescription(
        schema_name=schema,
        table=table,
        row_count=int(count),
        columns=columns,
        preview_markdown=markdown_table(shown, rows),
    )


def markdown_table(headers: list[str], rows: list[tuple]) -> str:
    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")[:60]

    if not headers:
        return "(no columns)"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
