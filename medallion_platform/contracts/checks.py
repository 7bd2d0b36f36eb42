"""Data-quality checks derived from a contract, run against the silver table.

Silver is built to satisfy its contract, so these checks guard the table itself: a bug, a
hand edit or a changed contract that breaks a promise is caught before gold reads it.
"""

from __future__ import annotations

import duckdb
from pydantic import BaseModel

from medallion_platform.contracts.compile import _literal
from medallion_platform.contracts.spec import Contract
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.warehouse import table_exists


class CheckOutcome(BaseModel):
    name: str
    passed: bool
    description: str
    failing_rows: int
    sample: list[str] = []
    detail: dict[str, int] = {}


def _failing(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, list[str]]:
    count = conn.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
    sample = [str(r) for r in conn.execute(f"{sql} LIMIT 5").fetchall()] if count else []
    return int(count), sample


def check_names(contract: Contract) -> list[str]:
    """The checks a contract declares, known before any data exists (Dagster needs them)."""
    names = ["unique_key", "not_null"]
    if any(c.accepted_values is not None for c in contract.columns):
        names.append("accepted_values")
    return [*names, "row_count"]


def run_contract_checks(conn: duckdb.DuckDBPyConnection, contract: Contract) -> list[CheckOutcome]:
    table = qualified("silver", contract.name)
    keys = ", ".join(quote(k) for k in contract.business_key)
    outcomes = []

    count, sample = _failing(
        conn, f"SELECT {keys}, count(*) AS n FROM {table} GROUP BY ALL HAVING count(*) > 1"
    )
    outcomes.append(
        CheckOutcome(
            name="unique_key",
            passed=count == 0,
            failing_rows=count,
            sample=sample,
            description=f"business key ({keys.replace(chr(34), '')}) is unique",
        )
    )

    required = [c.name for c in contract.columns if contract.is_required(c)]
    where = " OR ".join(f"{quote(c)} IS NULL" for c in required)
    count, sample = _failing(conn, f"SELECT {keys} FROM {table} WHERE {where}")
    outcomes.append(
        CheckOutcome(
            name="not_null",
            passed=count == 0,
            failing_rows=count,
            sample=sample,
            description=f"no NULL in required columns {', '.join(required)}",
        )
    )

    enums = [c for c in contract.columns if c.accepted_values is not None]
    if enums:
        where = " OR ".join(
            f"CAST({quote(c.name)} AS VARCHAR) NOT IN "
            f"({', '.join(_literal(v) for v in c.accepted_values or [])})"
            for c in enums
        )
        count, sample = _failing(conn, f"SELECT {keys} FROM {table} WHERE {where}")
        outcomes.append(
            CheckOutcome(
                name="accepted_values",
                passed=count == 0,
                failing_rows=count,
                sample=sample,
                description="values within " + ", ".join(c.name for c in enums),
            )
        )

    rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    outcomes.append(
        CheckOutcome(
            name="row_count",
            passed=rows >= contract.min_rows,
            failing_rows=0 if rows >= contract.min_rows else 1,
            description=f"at least {contract.min_rows} row(s); found {rows}",
        )
    )
    return outcomes


HISTORY_CHECKS = {
    "one_current_version": "Each key has at most one current version.",
    "versions_in_order": "No version ends before it starts.",
    "current_matches_silver": "The current versions are exactly the keys in the silver table.",
}


def run_history_checks(conn: duckdb.DuckDBPyConnection, contract: Contract) -> list[CheckOutcome]:
    """Checks on a change-log contract's SCD2 table (``changes.history``)."""
    assert contract.changes is not None and contract.changes.history is not None
    history = qualified("silver", contract.changes.history)
    silver = qualified("silver", contract.name)
    keys = ", ".join(quote(k) for k in contract.business_key)
    live = "WHERE NOT _deleted" if contract.changes.deletes == "flag" else ""
    queries = {
        "one_current_version": (
            f"SELECT {keys}, count(*) FROM {history} WHERE is_current GROUP BY ALL "
            "HAVING count(*) > 1"
        ),
        "versions_in_order": f"SELECT {keys}, valid_from, valid_to FROM {history} "
        "WHERE valid_to < valid_from",
        "current_matches_silver": (
            f"(SELECT {keys} FROM {history} WHERE is_current EXCEPT SELECT {keys} FROM {silver} "
            f"{live}) UNION ALL (SELECT {keys} FROM {silver} {live} EXCEPT "
            f"SELECT {keys} FROM {history} WHERE is_current)"
        ),
    }
    outcomes = []
    for name, sql in queries.items():
        count, sample = _failing(conn, sql)
        outcomes.append(
            CheckOutcome(
                name=name,
                passed=count == 0,
                failing_rows=count,
                sample=sample,
                description=HISTORY_CHECKS[name],
            )
        )
    return outcomes


ORPHANS_CHECK = "no_orphans"


def orphan_references(conn: duckdb.DuckDBPyConnection, contract: Contract) -> CheckOutcome:
    """Rows whose declared parent is not in silver (quarantined, or not arrived yet), per
    reference: ``detail`` counts them, ``sample`` names the first few by business key.

    A missing parent table counts every non-NULL value as an orphan: nothing resolves."""
    table = qualified("silver", contract.name)
    detail: dict[str, int] = {}
    sample: list[str] = []
    absent: list[str] = []
    for column, target in contract.references.items():
        schema, parent, key = target.split(".")
        exists = table_exists(conn, schema, parent)
        if not exists:
            absent.append(f"{schema}.{parent}")
        resolves = (
            f"EXISTS (SELECT 1 FROM {qualified(schema, parent)} p "
            f"WHERE p.{quote(key)} = c.{quote(column)})"
            if exists
            else "FALSE"
        )
        named = ", ".join(
            f"{_literal(k + '=')} || CAST(c.{quote(k)} AS VARCHAR)"
            for k in dict.fromkeys([*contract.business_key, column])
        )
        orphans = (
            f"SELECT concat_ws(', ', {named}) FROM {table} c "
            f"WHERE c.{quote(column)} IS NOT NULL AND NOT {resolves}"
        )
        detail[f"{column} -> {target}"] = conn.execute(
            f"SELECT count(*) FROM ({orphans})"
        ).fetchone()[0]
        sample += [r[0] for r in conn.execute(f"{orphans} ORDER BY 1 LIMIT 5").fetchall()]
    described = ", ".join(f"{c} -> {t}" for c, t in contract.references.items())
    if absent:
        described += f"; {', '.join(dict.fromkeys(absent))} does not exist yet"
    return CheckOutcome(
        name=ORPHANS_CHECK,
        passed=not any(detail.values()),
        failing_rows=sum(detail.values()),
        sample=sample,
        detail=detail,
        description=f"every reference finds its parent in silver ({described})",
    )
