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

    outcomes.append(_row_count(conn, contract))
    return outcomes


ROW_COUNT_RULE = (
    "At least the contract's min_rows rows, once the source has delivered any: while bronze "
    "holds no rows (a feed that has delivered nothing, a table empty at its CDC snapshot), "
    "or a change log's table holds none as of its last captured change, it passes."
)


def _row_count(conn: duckdb.DuckDBPyConnection, contract: Contract) -> CheckOutcome:
    """``min_rows`` is a floor on what the source delivered, not a demand that it deliver: a
    source with no rows gives an empty silver table rightly. The source is only looked at
    when silver is below the floor, so the check costs one count on a healthy table."""
    floor = contract.min_rows
    rows = conn.execute(f"SELECT count(*) FROM {qualified('silver', contract.name)}").fetchone()[0]
    expected = f"at least {floor} row(s); found {rows}"
    if rows >= floor:
        return CheckOutcome(name="row_count", passed=True, failing_rows=0, description=expected)
    bronze = f"bronze.{contract.source}"
    held = _bronze_rows(conn, contract.source)
    why = (
        f"{bronze} holds no rows yet: min_rows ({floor}) applies once the source has delivered rows"
    )
    if held and contract.changes is not None:
        held = _change_log_rows(conn, contract.source)
        why = (
            f"the source table holds no rows as of its last captured change ({bronze}): "
            f"min_rows ({floor}) applies while it holds rows"
        )
    if held:
        source = bronze if contract.changes is None else "the source"
        return CheckOutcome(
            name="row_count",
            passed=False,
            failing_rows=1,
            description=f"{expected}, while {source} holds {held} row(s)",
        )
    return CheckOutcome(
        name="row_count", passed=True, failing_rows=0, description=f"{why}; found {rows}"
    )


def _bronze_rows(conn: duckdb.DuckDBPyConnection, source: str) -> int:
    if not table_exists(conn, "bronze", source):
        return 0
    return int(conn.execute(f"SELECT count(*) FROM {qualified('bronze', source)}").fetchone()[0])


def _change_log_rows(conn: duckdb.DuckDBPyConnection, source: str) -> int:
    """Rows the captured table holds as of its last change: the change log replayed by key
    in commit order (``commit_lsn``, ``seq``), from its last TRUNCATE on, deletes removed."""
    log = qualified("bronze", source)
    return int(
        conn.execute(
            f"""
            WITH last_truncate AS (
                SELECT commit_lsn, seq FROM {log} WHERE op = 't'
                ORDER BY commit_lsn DESC, seq DESC LIMIT 1
            ), latest AS (
                SELECT c.op FROM {log} c LEFT JOIN last_truncate t ON TRUE
                WHERE c.op <> 't' AND (t.commit_lsn IS NULL OR c.commit_lsn > t.commit_lsn
                    OR (c.commit_lsn = t.commit_lsn AND c.seq > t.seq))
                QUALIFY row_number() OVER (
                    PARTITION BY c.key ORDER BY c.commit_lsn DESC, c.seq DESC
                ) = 1
            )
            SELECT count(*) FROM latest WHERE op <> 'd'
            """
        ).fetchone()[0]
    )


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
