"""Column-level lineage of a SQL model, derived from its SELECT with sqlglot (no Dagster).

For every output column, the ``(schema.table, column)`` pairs it is computed from. What
counts as "computed from" is sqlglot's convention (the one Dagster's dbt integration shows
too): every column referenced in the expression that produces the value, through CTEs,
subqueries, ``*`` and aliases. That includes an aggregate's ``FILTER (WHERE ...)``, a
``CASE`` condition and a window's ``PARTITION BY`` / ``ORDER BY``, since they change the
value; it excludes the clauses that only choose rows (``WHERE``, ``JOIN ... ON``,
``GROUP BY``, ``HAVING``, ``QUALIFY``). So ``gold.sessions.revenue`` (``sum(revenue) FILTER
(WHERE event_type = 'purchase')``) comes from ``silver.events.revenue`` and
``silver.events.event_type``, while a ``count(*)`` or a constant comes from no column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import Node, lineage, to_node
from sqlglot.optimizer.scope import Scope, build_scope
from sqlglot.schema import MappingSchema, Schema

from medallion_platform.gold.spec import SqlModel, tables_read

DIALECT = "duckdb"

Schemas = Mapping[str, Sequence[str]]
"""Columns of each table a model reads, in table order: ``{"silver.events": ["event_id", ...]}``."""


class ColumnRef(NamedTuple):
    """One column of one table: ``ColumnRef("silver.events", "revenue")``."""

    table: str  # schema.table
    column: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}"


ColumnLineage = dict[str, frozenset[ColumnRef]]
"""Output column (in SELECT order) -> the source columns its value is computed from."""


class ColumnLineageError(ValueError):
    """The SQL of a model cannot be analysed; the message names the model."""


class MissingTablesError(LookupError):
    """Tables a model reads are not in the warehouse (yet)."""

    def __init__(self, tables: Sequence[str]) -> None:
        self.tables = list(tables)
        super().__init__(f"not in the warehouse: {', '.join(self.tables)}")


def model_column_lineage(model: SqlModel, schemas: Schemas) -> ColumnLineage:
    """:func:`column_lineage` of a declared model (its SQL, named ``layer.name`` in errors)."""
    return column_lineage(model.sql, schemas, name=f"{model.layer}.{model.name}")


def column_lineage(sql: str, schemas: Schemas, *, name: str = "query") -> ColumnLineage:
    """For each output column of ``sql`` (a DuckDB SELECT), the source columns it comes from.

    ``schemas`` must hold every table the SQL reads (``*`` is expanded from it, so include
    every column, ``_``-prefixed bookkeeping ones too). Raises :class:`ColumnLineageError`
    naming ``name`` when the SQL cannot be parsed, a table's schema is missing, or a column
    cannot be resolved.
    """
    try:
        read = tables_read(sql)
    except ValueError as exc:
        raise ColumnLineageError(f"{name}: {exc}") from None
    known = {table.lower() for table in schemas}
    missing = sorted(read - known)
    if missing:
        raise ColumnLineageError(
            f"{name}: no schema given for {', '.join(missing)} (the SQL reads "
            f"{', '.join(sorted(read))})"
        )
    schema = _mapping_schema(schemas)
    try:
        nodes = lineage(None, sql, schema=schema, dialect=DIALECT, validate_qualify_columns=True)
        return {column: frozenset(_sources(node, schema)) for column, node in nodes.items()}
    except (SqlglotError, ValueError) as exc:
        raise ColumnLineageError(f"cannot analyse the column lineage of {name}: {exc}") from None


def read_schemas(conn: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> dict[str, list[str]]:
    """Every column (bookkeeping ``_`` columns included) of each ``schema.table``, in table
    order, from ``information_schema``. Raises :class:`MissingTablesError` listing the tables
    that do not exist."""
    wanted = list(dict.fromkeys(t.lower() for t in tables))
    rows = conn.execute(
        """
        SELECT table_schema || '.' || table_name, column_name
        FROM information_schema.columns
        WHERE table_catalog = current_database()
          AND lower(table_schema || '.' || table_name) IN (SELECT unnest($tables))
        ORDER BY table_schema, table_name, ordinal_position
        """,
        {"tables": wanted},
    ).fetchall()
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(table.lower(), []).append(column)
    missing = [t for t in wanted if t not in found]
    if missing:
        raise MissingTablesError(missing)
    return {t: found[t] for t in wanted}


def _mapping_schema(schemas: Schemas) -> MappingSchema:
    nested: dict[str, dict[str, dict[str, str]]] = {}
    for qualified_name, columns in schemas.items():
        schema_name, _, table = qualified_name.lower().rpartition(".")
        if not schema_name:
            raise ColumnLineageError(f"schema keys are schema.table, got {qualified_name!r}")
        nested.setdefault(schema_name, {})[table] = {c: "UNKNOWN" for c in columns}
    return MappingSchema(nested, dialect=DIALECT)


def _sources(node: Node, schema: Schema) -> set[ColumnRef]:
    """The table columns at the leaves of one output column's lineage graph."""
    found: set[ColumnRef] = set()
    for step in node.walk():
        if step.downstream:
            continue
        source = step.source
        if isinstance(source, exp.Placeholder):
            raise ColumnLineageError(f"column {step.name} does not resolve to any table")
        if not isinstance(source, exp.Table):
            continue  # a count(*), a literal: the value reads no column
        if isinstance(source.this, exp.Func):
            found |= _table_function_sources(source, schema)
            continue
        column = _column_name(step.name)
        if not source.db or column == "*":
            raise ColumnLineageError(f"cannot resolve {step.name} to a schema.table column")
        found.add(ColumnRef(f"{source.db}.{source.name}".lower(), column))
    return found


def _table_function_sources(function: exp.Table, schema: Schema) -> set[ColumnRef]:
    """A table function's output (``range(first_day, last_day, ...) AS t(day)``) comes from
    the columns its arguments read, resolved in the scope that calls it."""
    scope = next(
        (
            s
            for s in build_scope(function.root()).traverse()  # type: ignore[union-attr]
            if any(src is function for src in s.sources.values())
        ),
        None,
    )
    if scope is None:
        raise ColumnLineageError(f"cannot place the table function {function.sql(DIALECT)}")
    found: set[ColumnRef] = set()
    for column in function.this.find_all(exp.Column):
        source = _column_source(column, scope, function, schema)
        if isinstance(source, Scope):
            found |= _sources(to_node(column.name, source, DIALECT, schema), schema)
        else:
            found.add(ColumnRef(f"{source.db}.{source.name}".lower(), column.name))
    return found


def _column_source(
    column: exp.Column, scope: Scope, function: exp.Table, schema: Schema
) -> Scope | exp.Table:
    """Which of the scope's other sources a (possibly unqualified) column comes from."""
    if column.table:
        candidates = [scope.sources.get(column.table)]
    else:
        candidates = [
            src
            for src in scope.sources.values()
            if src is not function and column.name in _source_columns(src, schema)
        ]
    candidates = [c for c in candidates if isinstance(c, Scope | exp.Table)]
    if len(candidates) != 1:
        raise ColumnLineageError(
            f"cannot resolve {column.sql(DIALECT)} in {function.sql(DIALECT)} to one source"
        )
    return candidates[0]


def _source_columns(source: Scope | exp.Table, schema: Schema) -> list[str]:
    if isinstance(source, Scope):
        return list(source.expression.named_selects)
    if isinstance(source, exp.Table) and source.db:
        return list(schema.column_names(source))
    return []


def _column_name(node_name: str) -> str:
    """``o.order_total`` (or ``"o"."order"``) -> ``order_total``."""
    parsed = sqlglot.maybe_parse(node_name, into=exp.Column, dialect=DIALECT)
    return parsed.name if isinstance(parsed, exp.Column) else node_name.rsplit(".", 1)[-1]
