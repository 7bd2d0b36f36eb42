"""DuckDB's side of the lake: bronze batches and silver tables out, any lake table in.

Bronze stays ingested by DuckDB (the connectors commit rows and source position in one
DuckDB transaction, unchanged); :func:`export_bronze` then copies each committed batch to its
own deterministically named file. It only ever copies committed batches, and a rerun rewrites
the same file with the same rows, so the lake's bronze is exactly-once because DuckDB's is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import duckdb

from medallion_platform.engines.lake import Lake
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.warehouse import table_columns

# DuckDB types Spark cannot read from Parquet, as the type they are written as instead.
_PORTABLE = {
    "JSON": "VARCHAR",
    "HUGEINT": "DECIMAL(38,0)",
    "UUID": "VARCHAR",
    "UHUGEINT": "DECIMAL(38,0)",
}


def _portable_select(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> str:
    columns = table_columns(conn, schema, table)
    if not columns:
        raise LookupError(f"{schema}.{table} does not exist in the warehouse")
    return ", ".join(
        f"CAST({quote(name)} AS {_PORTABLE[dtype]}) AS {quote(name)}"
        if dtype in _PORTABLE
        else quote(name)
        for name, dtype in columns.items()
    )


def _copy(
    conn: duckdb.DuckDBPyConnection, select: str, path: Path, params: list | None = None
) -> None:
    """COPY to a temp name beside ``path``, then rename over it (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        conn.execute(f"COPY ({select}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)", params)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_bronze(
    conn: duckdb.DuckDBPyConnection, lake: Lake, source: str, *, rewrite: bool = False
) -> list[int]:
    """Write every committed batch of ``bronze.<source>`` that has no file yet (or all, with
    ``rewrite``) as ``batch_id=<id>.parquet``; returns the batch ids written."""
    select = _portable_select(conn, "bronze", source)
    have = set() if rewrite else set(lake.bronze_batches(source))
    batch_ids = [
        int(b)
        for (b,) in conn.execute(
            f"SELECT DISTINCT _batch_id FROM {qualified('bronze', source)} ORDER BY 1"
        ).fetchall()
    ]
    written = []
    for batch_id in batch_ids:
        if batch_id in have:
            continue
        _copy(
            conn,
            f"SELECT {select} FROM {qualified('bronze', source)} WHERE _batch_id = $1 "
            "ORDER BY _row_number",
            lake.bronze_batch_path(source, batch_id),
            [batch_id],
        )
        written.append(batch_id)
    return written


def publish_table(conn: duckdb.DuckDBPyConnection, lake: Lake, schema: str, table: str) -> Path:
    """Copy a warehouse table into a new lake snapshot and commit it as its own unit (silver
    built by DuckDB, read by Spark's gold); a quarantine table commits under its silver."""
    folder = lake.new_snapshot(schema, table)
    folder.mkdir(parents=True)
    _copy(
        conn,
        f"SELECT {_portable_select(conn, schema, table)} FROM {qualified(schema, table)}",
        folder / "part-00000.parquet",
    )
    unit = lake.unit_of(schema, table)
    current = lake.read_commit(unit)
    tables = {name: lake.root / rel for name, rel in (current.tables.items() if current else [])}
    tables[f"{schema}.{table}"] = folder
    lake.commit(unit, tables, current.position if current else None)
    return folder


def lake_relation(lake: Lake, layer: str, table: str) -> str:
    """SQL that reads a lake table from DuckDB (``read_parquet`` over its current snapshot)."""
    path = lake.require(layer, table)
    pattern = path / "*.parquet"
    return f"read_parquet('{str(pattern).replace(chr(39), chr(39) * 2)}')"


def _object_type(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> str | None:
    """``BASE TABLE``, ``VIEW`` or None: what the warehouse holds under ``schema.table``."""
    row = conn.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = ? "
        "AND table_name = ? AND table_catalog = current_database()",
        [schema, table],
    ).fetchone()
    return row[0] if row else None


def attach_lake_table(
    conn: duckdb.DuckDBPyConnection,
    lake: Lake,
    schema: str,
    table: str,
    columns: Mapping[str, str] | None = None,
) -> None:
    """Make the warehouse's ``schema.table`` a view of the lake's current snapshot, so what
    reads the warehouse (checks, ML, reports, syncs, the CLI) reads what Spark built. With
    ``columns`` (name → DuckDB type) the view casts to them: the types the DuckDB engine
    would have given (JSON, DECIMAL(38,2) …). A table of that name, left by the DuckDB
    engine, is dropped: the lake owns the table now."""
    folder = lake.require(schema, table)
    pattern = str(folder / "*.parquet").replace("'", "''")
    select = (
        ", ".join(f"CAST({quote(c)} AS {t}) AS {quote(c)}" for c, t in columns.items())
        if columns
        else "*"
    )
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    if _object_type(conn, schema, table) == "BASE TABLE":
        conn.execute(f"DROP TABLE {qualified(schema, table)}")
    conn.execute(
        f"CREATE OR REPLACE VIEW {qualified(schema, table)} AS "
        f"SELECT {select} FROM read_parquet('{pattern}')"
    )


def detach_lake_table(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Drop the view the Spark engine left under ``schema.table`` (the DuckDB engine then
    builds its own table); True if there was one."""
    if _object_type(conn, schema, table) != "VIEW":
        return False
    conn.execute(f"DROP VIEW {qualified(schema, table)}")
    return True


def is_warehouse_table(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """True when DuckDB owns ``schema.table`` (a table it built), not a view of the lake."""
    return _object_type(conn, schema, table) == "BASE TABLE"


def result_types(conn: duckdb.DuckDBPyConnection, sql: str) -> dict[str, str]:
    """The columns and DuckDB types a SELECT gives (planned, not run)."""
    return {row[0]: row[1] for row in conn.execute(f"DESCRIBE ({sql})").fetchall()}
