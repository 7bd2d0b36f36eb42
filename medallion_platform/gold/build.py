"""Build SQL models in dependency order, without Dagster: for tests, benchmarks and scripts.

Dagster builds the same SQL through the IO manager (one asset per model); this runs the
models straight in a DuckDB connection, so a hand-built dataset can be checked end to end.
Both go through :func:`~medallion_platform.gold.incremental.build_model`: a model declared
``incremental`` rebuilds only its changed keys when that is safe, here as in Dagster.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from medallion_platform.gold.graph import TableGraph
from medallion_platform.gold.incremental import BuildResult, build_model
from medallion_platform.gold.spec import SqlModel
from medallion_platform.warehouse.identifiers import qualified
from medallion_platform.warehouse.warehouse import transaction


def in_dependency_order(models: Iterable[SqlModel]) -> list[SqlModel]:
    """Models sorted so each comes after the models it reads (a cycle is a ``ValueError``)."""
    return TableGraph(models=models).models_in_order()


def build_models(
    conn: duckdb.DuckDBPyConnection,
    models: Iterable[SqlModel],
    *,
    full_refresh: bool = False,
    results: dict[str, BuildResult] | None = None,
) -> dict[str, int]:
    """Build every model, each in its own transaction; returns rows per ``schema.table``.
    ``results``, when given, receives how each was built (full or incremental, and why)."""
    rows: dict[str, int] = {}
    for model in in_dependency_order(models):
        name = f"{model.layer}.{model.name}"
        with transaction(conn):
            result = build_model(conn, model, full_refresh=full_refresh)
        if results is not None:
            results[name] = result
        table = qualified(model.layer, model.name)
        rows[name] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return rows
