"""Build SQL models in dependency order, without Dagster: for tests, benchmarks and scripts.

Dagster builds the same SQL through the IO manager (one asset per model); this runs the
models straight in a DuckDB connection, so a hand-built dataset can be checked end to end.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from medallion_platform.gold.graph import TableGraph
from medallion_platform.gold.spec import SqlModel
from medallion_platform.warehouse.identifiers import qualified, quote


def in_dependency_order(models: Iterable[SqlModel]) -> list[SqlModel]:
    """Models sorted so each comes after the models it reads (a cycle is a ``ValueError``)."""
    return TableGraph(models=models).models_in_order()


def build_models(conn: duckdb.DuckDBPyConnection, models: Iterable[SqlModel]) -> dict[str, int]:
    """Create or replace every model's table; returns rows per ``schema.table``."""
    rows: dict[str, int] = {}
    for model in in_dependency_order(models):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(model.layer)}")
        table = qualified(model.layer, model.name)
        conn.execute(f"CREATE OR REPLACE TABLE {table} AS {model.sql}")
        rows[f"{model.layer}.{model.name}"] = conn.execute(
            f"SELECT count(*) FROM {table}"
        ).fetchone()[0]
    return rows
