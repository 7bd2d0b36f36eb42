"""Tables published as Parquet files for BI tools and notebooks that cannot open DuckDB.

Each file is written beside its final path and renamed over it, so a reader (Tableau, Power
BI, Metabase through DuckDB, pandas) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from medallion_platform.warehouse.identifiers import qualified


def parquet_path(export_dir: Path | str, schema: str, table: str) -> Path:
    """Where ``schema.table`` is published: ``<export_dir>/<schema>/<table>.parquet``."""
    return Path(export_dir) / schema / f"{table}.parquet"


def export_parquet(
    conn: duckdb.DuckDBPyConnection, schema: str, table: str, export_dir: Path | str
) -> Path:
    """Write the table to its Parquet path atomically (temp file, then rename); return it."""
    path = parquet_path(export_dir, schema, table)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        conn.execute(
            f"COPY (SELECT * FROM {qualified(schema, table)}) TO '{tmp}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
