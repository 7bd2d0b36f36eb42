"""The truths every gold table is checked for after a build, as plain SQL over the warehouse.

Each function returns a :class:`CheckOutcome` (how many rows break it, a few examples), so the
Dagster checks stay thin and the same checks can run in a test or a script.
"""

from __future__ import annotations

import duckdb
from pydantic import BaseModel

from medallion_platform.gold.spec import ModelRule, SqlModel
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.warehouse import table_columns

SAMPLE = 5
COUNT_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT")


class CheckOutcome(BaseModel):
    failed_rows: int
    examples: list[str] = []
    detail: dict[str, int] = {}

    @property
    def passed(self) -> bool:
        return self.failed_rows == 0


def _table(model: SqlModel) -> str:
    return qualified(model.layer, model.name)


def _examples(conn: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [
        ", ".join(str(v) for v in row) for row in conn.execute(f"{sql} LIMIT {SAMPLE}").fetchall()
    ]


def unresolved_references(conn: duckdb.DuckDBPyConnection, model: SqlModel) -> CheckOutcome:
    """Foreign keys: non-NULL values with no row in the referenced table, per column."""
    detail: dict[str, int] = {}
    examples: list[str] = []
    for column, target in model.references.items():
        schema, table, key = target.split(".")
        missing = (
            f"SELECT DISTINCT m.{quote(column)} FROM {_table(model)} m "
            f"WHERE m.{quote(column)} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
            f"{qualified(schema, table)} d WHERE d.{quote(key)} = m.{quote(column)})"
        )
        detail[column] = conn.execute(f"SELECT count(*) FROM ({missing})").fetchone()[0]
        if detail[column]:
            examples += [f"{column}={v}" for v in _examples(conn, missing)]
    return CheckOutcome(failed_rows=sum(detail.values()), examples=examples, detail=detail)


def rule_violations(
    conn: duckdb.DuckDBPyConnection, model: SqlModel, rule: ModelRule
) -> CheckOutcome:
    """Rows where the rule is false or unknown (NULL counts as broken: it was not shown true)."""
    keys = ", ".join(quote(k) for k in model.key)
    broken = f"SELECT {keys} FROM {_table(model)} WHERE NOT coalesce(({rule.sql}), FALSE)"
    failed = conn.execute(f"SELECT count(*) FROM ({broken})").fetchone()[0]
    return CheckOutcome(failed_rows=failed, examples=_examples(conn, broken) if failed else [])


def negative_counts(conn: duckdb.DuckDBPyConnection, model: SqlModel) -> CheckOutcome:
    """Integer columns (counts) below zero; a count can never be negative."""
    columns = [
        name
        for name, dtype in table_columns(conn, model.layer, model.name).items()
        if dtype.upper() in COUNT_TYPES and not name.startswith("_")
    ]
    detail = {
        c: conn.execute(f"SELECT count(*) FROM {_table(model)} WHERE {quote(c)} < 0").fetchone()[0]
        for c in columns
    }
    return CheckOutcome(
        failed_rows=sum(detail.values()),
        examples=[f"{c}: {n} rows" for c, n in detail.items() if n],
        detail=detail,
    )
