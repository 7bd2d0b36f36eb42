"""Column and asset lineage tests, and a warehouse with every table the SQL models read."""

from __future__ import annotations

import duckdb

from medallion_platform.config import PlatformConfig
from medallion_platform.contracts.changes import history_columns
from medallion_platform.contracts.compile import QUARANTINE_COLUMNS, silver_columns
from medallion_platform.warehouse.identifiers import qualified, quote


def create_model_tables(conn: duckdb.DuckDBPyConnection, config: PlatformConfig) -> None:
    """Every silver contract table (and SCD2 history), empty, with the columns the contracts
    give them (``_`` bookkeeping columns included); then every SQL model built on them, in
    dependency order, so each table has exactly the columns a pipeline run would give it."""
    for schema in ("silver", "quarantine", "gold"):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    tables = []
    for contract in config.contracts:
        tables.append((contract.name, silver_columns(contract)))
        if contract.changes is not None and contract.changes.history:
            tables.append((contract.changes.history, history_columns(contract)))
    for name, columns in tables:
        ddl = ", ".join(f"{quote(c)} {t}" for c, t in columns.items())
        conn.execute(f"CREATE TABLE {qualified('silver', name)} ({ddl})")
    built = {f"silver.{name}" for name, _ in tables}
    quarantine_ddl = ", ".join(f"{quote(c)} {t}" for c, t in QUARANTINE_COLUMNS.items())
    for contract in config.contracts:  # gold reads a quarantine (a quarantined charge's order)
        conn.execute(f"CREATE TABLE {qualified('quarantine', contract.name)} ({quarantine_ddl})")
        built.add(f"quarantine.{contract.name}")
    for model in config.table_graph().models_in_order():
        assert set(model.depends_on) <= built, f"{model.name} has unbuildable inputs"
        conn.execute(f"CREATE TABLE {qualified(model.layer, model.name)} AS {model.sql}")
        built.add(f"{model.layer}.{model.name}")
