"""Read gold (and ml) from a notebook or a BI script, without any way to change them.

    from medallion_platform import analytics

    with analytics.connect() as conn:           # the warehouse of MEDALLION_HOME, read-only
        print(analytics.tables(conn))           # gold and ml tables with row counts
        revenue = analytics.table("gold.daily_revenue", conn)   # a pandas DataFrame
        conn.sql("SELECT currency, sum(net) FROM gold.daily_revenue GROUP BY 1").df()

The connection is opened READ-ONLY: a notebook can never corrupt the warehouse, and several
notebooks can read at once. DuckDB's locking rule applies across processes, though: one
read-write process *or* any number of read-only ones. So

- while a Dagster run writes the warehouse, :func:`connect` waits (``lock_timeout_s``) and
  then raises :class:`~medallion_platform.warehouse.WarehouseBusyError`; retry once the run
  has finished (or read a copy of the file);
- while a notebook holds a connection open, Dagster runs wait for it (and fail after their
  own lock timeout): close it, or use ``with analytics.connect() as conn:``, when done.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pandas as pd

from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import WarehouseBusyError
from medallion_platform.warehouse.identifiers import qualified, validate_identifier

ANALYTICS_SCHEMAS = ("gold", "ml")
"""The schemas :func:`tables` lists: business tables and model outputs."""


def warehouse_path(home: Path | str | None = None) -> Path:
    """The warehouse file of ``home`` (default: ``MEDALLION_HOME``, else ``.medallion``)."""
    settings = PlatformSettings(home=Path(home)) if home else PlatformSettings.from_env()
    return settings.warehouse_path


def connect(
    home: Path | str | None = None, *, lock_timeout_s: float = 10.0
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the platform's warehouse (close it when done)."""
    path = warehouse_path(home)
    if not path.exists():
        raise FileNotFoundError(
            f"No warehouse at {path}. Build one with `make demo` (or `medallion demo`), or "
            "point MEDALLION_HOME at a platform home that has one."
        )
    settings = PlatformSettings.from_env()
    config: dict[str, str | int] = {}
    if settings.duckdb_memory_limit:
        config["memory_limit"] = settings.duckdb_memory_limit
    if settings.duckdb_threads:
        config["threads"] = settings.duckdb_threads
    deadline = time.monotonic() + lock_timeout_s
    delay = 0.1
    while True:
        try:
            return duckdb.connect(str(path), read_only=True, config=config)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"The warehouse {path} is being written (a Dagster run holds its lock). "
                    "DuckDB does not allow readers beside a writer in another process: retry "
                    "when the run has finished."
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _split(name: str) -> tuple[str, str]:
    """``"gold.daily_revenue"`` → ``("gold", "daily_revenue")``; a bare name is in gold."""
    parts = name.split(".")
    if len(parts) == 1:
        parts = ["gold", *parts]
    if len(parts) != 2:
        raise ValueError(f"{name!r}: expected 'schema.table', e.g. 'gold.daily_revenue'")
    schema, table = (validate_identifier(p) for p in parts)
    return schema, table


def _list(conn: duckdb.DuckDBPyConnection, schemas: tuple[str, ...]) -> list[tuple[str, str]]:
    placeholders = ", ".join("?" for _ in schemas)
    return conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        f"WHERE table_catalog = current_database() AND table_schema IN ({placeholders}) "
        "ORDER BY table_schema, table_name",
        list(schemas),
    ).fetchall()


def _quoted(schema: str, name: str) -> str:
    """Quote names read from the catalog (not user input, but not necessarily lower-case)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))


def table(
    name: str, conn: duckdb.DuckDBPyConnection | None = None, *, limit: int | None = None
) -> pd.DataFrame:
    """A whole table (or its first ``limit`` rows) as a DataFrame; ``name`` is ``schema.table``.

    Without ``conn``, a connection is opened and closed around the read.
    """
    schema, table_name = _split(name)
    if conn is None:
        with connect() as own:
            return table(name, own, limit=limit)
    if (schema, table_name) not in _list(conn, (schema,)):
        available = ", ".join(f"{s}.{t}" for s, t in _list(conn, ANALYTICS_SCHEMAS)) or "none"
        raise LookupError(f"No table {schema}.{table_name} in the warehouse (gold/ml: {available})")
    sql = f"SELECT * FROM {qualified(schema, table_name)}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return conn.sql(sql).df()


def tables(conn: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """The gold and ml tables with row counts: ``name`` (``gold.daily_revenue``, what
    :func:`table` takes), ``schema``, ``table``, ``rows``."""
    if conn is None:
        with connect() as own:
            return tables(own)
    rows = [
        (
            f"{schema}.{name}",
            schema,
            name,
            conn.execute(f"SELECT count(*) FROM {_quoted(schema, name)}").fetchone()[0],
        )
        for schema, name in _list(conn, ANALYTICS_SCHEMAS)
    ]
    return pd.DataFrame(rows, columns=["name", "schema", "table", "rows"])


__all__ = ["ANALYTICS_SCHEMAS", "connect", "table", "tables", "warehouse_path"]
