"""Row-for-row comparison of a table as DuckDB built it and as Spark built it."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import duckdb


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
