"""Row-for-row comparison of a table as DuckDB built it and as Spark built it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal

import duckdb

from medallion_platform.contracts.spec import Contract
from medallion_platform.engines.duckdb_lake import lake_relation
from medallion_platform.engines.engine import contract_tables
from medallion_platform.engines.lake import Lake


def _value(value: object) -> object:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, float):
        return round(value, 9)  # doubles: the same to 9 places (money is DECIMAL, compared exact)
    if isinstance(value, Decimal):
        return value.normalize()
    return value


def table_rows(
    conn: duckdb.DuckDBPyConnection, relation: str, key: list[str]
) -> tuple[list[str], list[tuple]]:
    """Column names and rows (ordered by the key) of a table or ``read_parquet(...)``."""
    cursor = conn.execute(f"SELECT * FROM {relation} ORDER BY {', '.join(key)}")
    names = [d[0] for d in cursor.description]
    return names, [tuple(_value(v) for v in row) for row in cursor.fetchall()]


def differences(left: list[tuple], right: list[tuple], names: list[str]) -> list[str]:
    """Human-readable cell differences (at most 10), empty when the rows are equal."""
    found = []
    if len(left) != len(right):
        found.append(f"{len(left)} rows vs {len(right)}")
    for a, b in zip(left, right, strict=False):
        for name, x, y in zip(names, a, b, strict=True):
            same = x == y or (
                isinstance(x, float) and isinstance(y, float) and math.isclose(x, y, rel_tol=1e-9)
            )
            if not same:
                found.append(f"{name}: duckdb {x!r} != spark {y!r} (row {a[:2]})")
    return found[:10]


def quarantine_rows(conn: duckdb.DuckDBPyConnection, relation: str) -> list[tuple]:
    """A quarantine table's rows without the time they were quarantined; ``_raw`` parsed."""
    rows = conn.execute(
        f"SELECT _batch_id, _source, _row_number, _reason, CAST(_raw AS VARCHAR) FROM {relation} "
        "ORDER BY _batch_id, _row_number"
    ).fetchall()
    return [(*row[:4], json.loads(row[4])) for row in rows]


def contract_differences(
    conn: duckdb.DuckDBPyConnection, lake: Lake, contract: Contract
) -> dict[str, list[str]]:
    """Per table of the contract (silver, history, quarantine): how DuckDB's table and the
    lake's differ; empty lists when Spark built the same tables."""
    found: dict[str, list[str]] = {}
    for name in contract_tables(contract):
        layer, table = name.split(".")
        spark = lake_relation(lake, layer, table)
        if layer == "quarantine":
            duck_rows, spark_rows = (quarantine_rows(conn, r) for r in (name, spark))
            found[name] = [] if duck_rows == spark_rows else [f"{duck_rows} != {spark_rows}"]
            continue
        key = [*contract.business_key, "_batch_id", "_source"]
        if name != f"silver.{contract.name}":  # history: every version of a key
            key = [*contract.business_key, "_commit_lsn", "_seq"]
        names, duck = table_rows(conn, name, key)
        spark_names, spark_rows = table_rows(conn, spark, key)
        found[name] = (
            [f"columns {names} != {spark_names}"]
            if names != spark_names
            else differences(duck, spark_rows, names)
        )
    return found
