"""Incremental SQL models: rebuild only the keys whose input rows changed (no Dagster).

A model that declares ``incremental: {from: silver.x}`` promises that its rows for a key
depend only on the rows of ``silver.x`` with the same key values (``dim_product`` by SKU,
``marketing_spend_daily`` by day and channel). Silver rows carry the bronze ``_batch_id``
they came from, so the keys changed since the model's last build are those of the rows past
the model's watermark; in one transaction (the caller's) the build then

1. deletes the model's rows for those keys,
2. inserts the model's SQL over the input rows of those keys only (the input table is read
   through a key filter, so DuckDB scans and computes just them), and
3. advances the watermark and records what the table was built from.

That equals a full rebuild only while nothing else changed, so the build is full instead
(:func:`plan_build` says why, and the asset's metadata shows it) when: the table or its
record is missing (first build), the model's SQL, key or output columns changed, the input has
no watermark (it was not built by its contract), the input's silver was rebuilt or lost rows
other than replacements (deletes, tombstones, absence from a snapshot: counted by
:mod:`~medallion_platform.warehouse.resets`, which ``apply_contract`` keeps in its own
transaction), the run
asks for a full refresh, or the engine is not DuckDB (Spark rebuilds whole tables).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import sqlglot
from pydantic import BaseModel
from sqlglot import exp

from medallion_platform.contracts.compile import silver_columns
from medallion_platform.contracts.spec import Contract
from medallion_platform.gold.spec import SqlModel
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.resets import resets
from medallion_platform.warehouse.tables import SqlQuery
from medallion_platform.warehouse.warehouse import (
    set_position,
    set_watermark,
    table_columns,
    table_exists,
)

FULL_REFRESH_TAG = "medallion/full_refresh"
"""Run tag (``true``) that makes every SQL model of the run rebuild whole."""
MODEL_POSITION = "model"
"""``_meta.positions`` key of a model's build record (source ``layer.name``)."""
_CHANGED = "_changed_keys"


@dataclass(frozen=True)
class ModelQuery(SqlQuery):
    """What a SQL model's asset returns: its SELECT, the model (so the IO manager can build
    it incrementally) and whether the run asked for a full refresh."""

    model: SqlModel | None = None
    full_refresh: bool = False


class BuildResult(BaseModel):
    """How a model's table was built, for the asset's metadata and the benches."""

    build: Literal["full", "incremental"]
    reason: str
    watermark: int | None = None
    """The input's batch id the table is now built up to (None: no record kept)."""
    changed_keys: int | None = None
    rows_deleted: int | None = None
    rows_inserted: int | None = None

    def metadata(self) -> dict[str, Any]:
        shown = {"build": self.build, "build_reason": self.reason}
        for name in ("watermark", "changed_keys", "rows_deleted", "rows_inserted"):
            value = getattr(self, name)
            if value is not None:
                shown[f"build_{name}"] = value
        return shown


class _Plan(BaseModel):
    build: Literal["full", "incremental"]
    reason: str
    fingerprint: str = ""
    resets: int = 0
    low: int = 0
    """The watermark of the last build: input rows past it are the changed ones."""
    high: int | None = None
    """The input's watermark now (None: no record is kept for this model)."""


def check_incremental(model: SqlModel, contracts: list[Contract]) -> None:
    """What config loading can check of ``incremental:`` against the contracts: the input is
    a contract's silver table whose business key includes the model's key (so a replaced
    version of a silver row keeps its gold key), not one that flags deleted snapshot keys,
    and each key column passes the input's column of that name through. Raises
    ``ValueError`` naming the model."""
    from medallion_platform.lineage.columns import ColumnRef, model_column_lineage

    assert model.incremental is not None
    where = f"{model.layer} model {model.name}: incremental.from {model.incremental.from_}"
    schema, table = model.incremental.from_.split(".")
    contract = next((c for c in contracts if c.name == table), None)
    if schema != "silver" or contract is None:
        raise ValueError(f"{where} is not a contract's silver table")
    if contract.mode == "snapshot" and contract.snapshot_deletes == "flag":
        # A flagged key that comes back keeps the _batch_id of its first delivery, so the
        # watermark would not see it return.
        raise ValueError(
            f"{where}: contract {contract.name} flags deleted snapshot keys "
            "(snapshot_deletes: flag); incremental needs snapshot_deletes: remove"
        )
    outside = [k for k in model.key if k not in contract.business_key]
    if outside:
        raise ValueError(
            f"{where}: key columns {outside} are not in contract {contract.name}'s business "
            f"key {contract.business_key}"
        )
    lineage = model_column_lineage(model, {model.incremental.from_: list(silver_columns(contract))})
    for column in model.key:
        if lineage.get(column) != frozenset({ColumnRef(model.incremental.from_, column)}):
            raise ValueError(
                f"{where}: key column {column} must be the input's {column} passed through "
                f"(it comes from {sorted(map(str, lineage.get(column, ())))})"
            )


def _meta_ready(conn: duckdb.DuckDBPyConnection) -> bool:
    return table_exists(conn, "_meta", "watermarks") and table_exists(conn, "_meta", "positions")


def _name(model: SqlModel) -> str:
    return f"{model.layer}.{model.name}"


def _described(conn: duckdb.DuckDBPyConnection, model: SqlModel) -> dict[str, str]:
    """The model's output columns and types, as DuckDB binds its SQL now."""
    return {c[0]: c[1] for c in conn.execute(f"DESCRIBE (\n{model.sql}\n)").fetchall()}


def _fingerprint(model: SqlModel, columns: dict[str, str]) -> str:
    """What the table's rows are a function of, besides the input's rows: the SQL, the key,
    the declaration and the output columns (a retyped input column changes them)."""
    decisive = {
        "sql": model.sql,
        "key": model.key,
        "from": model.incremental.from_ if model.incremental else None,
        "columns": list(columns.items()),
    }
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()


def _stored(conn: duckdb.DuckDBPyConnection, model: SqlModel) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT position, batch_id FROM _meta.positions WHERE source = ? AND key = ?",
        [_name(model), MODEL_POSITION],
    ).fetchone()
    if row is None:
        return None
    return {**json.loads(row[0]), "watermark": row[1]}


def forget_build(conn: duckdb.DuckDBPyConnection, model: SqlModel) -> None:
    """Drop the model's build record: its next DuckDB build is full (after another engine)."""
    if _meta_ready(conn):
        conn.execute(
            "DELETE FROM _meta.positions WHERE source = ? AND key = ?",
            [_name(model), MODEL_POSITION],
        )
        conn.execute("DELETE FROM _meta.watermarks WHERE consumer = ?", [_name(model)])


def plan_build(
    conn: duckdb.DuckDBPyConnection, model: SqlModel, *, full_refresh: bool = False
) -> _Plan:
    """Whether ``model`` can be built incrementally now, and if not, why not."""
    if model.incremental is None:
        return _Plan(build="full", reason="not declared incremental")
    source = model.incremental.from_
    if not _meta_ready(conn):
        return _Plan(build="full", reason=f"{source} has no watermark (no _meta)")
    row = conn.execute(
        "SELECT last_batch_id FROM _meta.watermarks WHERE consumer = ?", [source]
    ).fetchone()
    if row is None:
        return _Plan(build="full", reason=f"{source} has no watermark (not built by a contract)")
    if "_batch_id" not in table_columns(conn, *source.split(".")):
        return _Plan(build="full", reason=f"{source} has no _batch_id column")
    columns = _described(conn, model)
    plan = _Plan(
        build="full",
        reason="",
        fingerprint=_fingerprint(model, columns),
        resets=resets(conn, source),
        high=int(row[0]),
    )
    stored = _stored(conn, model)
    if full_refresh:
        plan.reason = f"full refresh asked ({FULL_REFRESH_TAG})"
    elif not table_exists(conn, model.layer, model.name):
        plan.reason = "first build (no table)"
    elif stored is None:
        plan.reason = "first build (no record of the last one)"
    elif stored.get("fingerprint") != plan.fingerprint:
        plan.reason = "the model's SQL, key or columns changed since the last build"
    elif stored.get("resets") != plan.resets:
        plan.reason = f"{source} was rebuilt or lost rows (deletes) since the last build"
    elif plan.high < stored["watermark"]:
        plan.reason = f"{source}'s watermark went back (rebuilt)"
    elif table_columns(conn, model.layer, model.name) != columns:
        plan.reason = "the table's columns are not the model's"
    else:
        plan.build, plan.reason = "incremental", f"{source} rows past batch {stored['watermark']}"
        plan.low = int(stored["watermark"])
    return plan


def build_model(
    conn: duckdb.DuckDBPyConnection,
    model: SqlModel,
    *,
    full_refresh: bool = False,
) -> BuildResult:
    """Make ``layer.name`` the result of the model's SQL: only the changed keys when the model
    is declared incremental and that is safe, else the whole table. Call inside a transaction
    (the caller's): the delete, the insert and the new watermark commit together."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(model.layer)}")
    plan = plan_build(conn, model, full_refresh=full_refresh)
    target = qualified(model.layer, model.name)
    result = BuildResult(build=plan.build, reason=plan.reason, watermark=plan.high)
    if plan.build == "full":
        conn.execute(f"CREATE OR REPLACE TABLE {target} AS\n{model.sql}")
    else:
        result = _build_changed_keys(conn, model, plan, result)
    if plan.high is None:
        forget_build(conn, model)
    else:
        record = {"fingerprint": plan.fingerprint, "resets": plan.resets}
        set_position(conn, _name(model), MODEL_POSITION, json.dumps(record), plan.high)
        set_watermark(conn, _name(model), plan.high)
    return result


def _key_match(keys: list[str], left: str, right: str) -> str:
    """NULL-safe: a NULL key is a key too (the grain check reports it; it is not duplicated)."""
    return " AND ".join(f"{left}.{quote(k)} IS NOT DISTINCT FROM {right}.{quote(k)}" for k in keys)


def _build_changed_keys(
    conn: duckdb.DuckDBPyConnection, model: SqlModel, plan: _Plan, result: BuildResult
) -> BuildResult:
    assert model.incremental is not None
    source = model.incremental.from_
    keys = ", ".join(quote(k) for k in model.key)
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {_CHANGED} AS "
        f"SELECT DISTINCT {keys} FROM {qualified(*source.split('.'))} WHERE _batch_id > ?",
        [plan.low],
    )
    changed = conn.execute(f"SELECT count(*) FROM {_CHANGED}").fetchone()[0]
    deleted = inserted = 0
    if changed:
        target = qualified(model.layer, model.name)
        deleted = conn.execute(
            f"DELETE FROM {target} g USING {_CHANGED} c WHERE {_key_match(model.key, 'g', 'c')}"
        ).fetchone()[0]
        # The rows of the changed keys only: the input is read through the key filter, and
        # the output is filtered again (a row of another key would be a duplicate).
        inserted = conn.execute(
            f"INSERT INTO {target} BY NAME SELECT m.* FROM (\n{filtered_sql(model)}\n) m "
            f"SEMI JOIN {_CHANGED} c ON {_key_match(model.key, 'm', 'c')}"
        ).fetchone()[0]
    conn.execute(f"DROP TABLE {_CHANGED}")
    return result.model_copy(
        update={"changed_keys": changed, "rows_deleted": deleted, "rows_inserted": inserted}
    )


def filtered_sql(model: SqlModel) -> str:
    """The model's SQL with its input read through the changed keys: each reference to the
    input table becomes a subquery of its rows whose key is in ``_changed_keys``.

    The SQL text is spliced, not regenerated, so the model runs exactly as written."""
    assert model.incremental is not None
    sql = model.sql
    schema, table = model.incremental.from_.split(".")
    spans = []
    for node in sqlglot.parse_one(sql, dialect="duckdb").find_all(exp.Table):
        if node.db.lower() != schema or node.name.lower() != table:
            continue
        start, end = node.args["db"].meta["start"], node.this.meta["end"] + 1
        if start > 0 and sql[start - 1] == '"':
            start -= 1
        if end < len(sql) and sql[end] == '"':
            end += 1
        spans.append((start, end, bool(node.alias)))
    match = _key_match(model.key, "_i", "_c")
    subquery = (
        f"(SELECT _i.* FROM {qualified(schema, table)} AS _i SEMI JOIN {_CHANGED} AS _c ON {match})"
    )
    for start, end, aliased in sorted(spans, reverse=True):
        replacement = subquery if aliased else f"{subquery} AS {quote(table)}"
        sql = sql[:start] + replacement + sql[end:]
    return sql
