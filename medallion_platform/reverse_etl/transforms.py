"""The small set of field transforms a sync mapping may use, compiled to DuckDB SQL.

A mapped value is computed inside the warehouse, in the same SELECT that runs the sync's
source query, so a sync of 100k+ rows never holds them in Python. Each transform has a typed
contract, checked when the sync is loaded (the value types are the destination's:
``number``, ``string``, ``date``, ``boolean``, ``string_list``):

- ``round(n)`` (``round`` = ``round(0)``): number -> number, ``n`` decimals;
- ``upper`` / ``lower``: string -> string;
- ``date``: date, timestamp or ISO string -> date (sent as ``YYYY-MM-DD``; a timestamp with a
  time zone is read in UTC). Every date value is sent in that form, transform or not;
- ``tags_from`` (a mapping kind, not a transform): ``{tag: condition}`` -> string_list, the
  tags whose condition holds, in declared order. A condition is a comparison over the source
  columns (``lifetime_value >= 1000``, ``risk_band = 'high' AND NOT is_vip``), parsed and
  checked here: columns, literals, comparisons, AND/OR/NOT, IS [NOT] NULL, IN and BETWEEN
  only, so configuration cannot smuggle other SQL in;
- ``constant`` / ``default``: a literal, rendered by sqlglot (strings quoted and escaped).

No Dagster import; the engine and the spec use these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import sqlglot
from pydantic import BaseModel, ConfigDict
from sqlglot import exp

DIALECT = "duckdb"

ValueType = Literal["number", "string", "date", "boolean", "string_list"]
VALUE_TYPES: tuple[ValueType, ...] = ("number", "string", "date", "boolean", "string_list")

_NUMERIC = re.compile(
    r"(TINYINT|SMALLINT|INTEGER|INT|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|"
    r"UHUGEINT|FLOAT|REAL|DOUBLE|DECIMAL(\(\d+,\s*\d+\))?|NUMERIC(\(\d+,\s*\d+\))?)"
)
_TEMPORAL = re.compile(r"DATE|TIMESTAMP(_S|_MS|_NS)?|TIMESTAMP WITH TIME ZONE|TIMESTAMPTZ")
_TRANSFORM = re.compile(r"\s*(?P<name>[a-z_]+)\s*(?:\(\s*(?P<arg>-?\d+)\s*\))?\s*")
_TAG = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")


class TransformError(ValueError):
    """A transform, tag rule or literal that cannot apply; the message says why."""


def value_type(duckdb_type: str) -> ValueType | None:
    """The destination value type a DuckDB column type maps to (``None``: not syncable)."""
    upper = duckdb_type.strip().upper()
    if upper == "BOOLEAN":
        return "boolean"
    if _NUMERIC.fullmatch(upper):
        return "number"
    if upper in ("VARCHAR", "UUID", "TEXT", "STRING") or upper.startswith("ENUM("):
        return "string"
    if _TEMPORAL.fullmatch(upper):
        return "date"
    if upper in ("VARCHAR[]", "TEXT[]"):
        return "string_list"
    return None


class Transform(BaseModel):
    """A parsed transform: ``round(2)`` is ``Transform(name="round", digits=2)``."""

    model_config = ConfigDict(frozen=True)

    name: Literal["round", "upper", "lower", "date"]
    digits: int = 0

    def __str__(self) -> str:
        return f"round({self.digits})" if self.name == "round" else self.name


def parse_transform(text: str) -> Transform:
    match = _TRANSFORM.fullmatch(text)
    if match is None or match["name"] not in ("round", "upper", "lower", "date"):
        raise TransformError(
            f"unknown transform {text!r}: use round(n), upper, lower or date "
            "(tags_from, constant and default are mapping keys)"
        )
    name, arg = match["name"], match["arg"]
    if arg is not None and name != "round":
        raise TransformError(f"transform {name} takes no argument, got {text!r}")
    digits = int(arg) if arg is not None else 0
    if not 0 <= digits <= 10:
        raise TransformError(f"round(n) takes 0 <= n <= 10 decimals, got {text!r}")
    return Transform(name=name, digits=digits)  # type: ignore[arg-type]


def transform_type(transform: Transform, source: ValueType) -> ValueType:
    """The type a transform produces from ``source``, or ``TransformError``."""
    accepts: dict[str, tuple[ValueType, ...]] = {
        "round": ("number",),
        "upper": ("string",),
        "lower": ("string",),
        "date": ("date", "string"),
    }
    if source not in accepts[transform.name]:
        raise TransformError(
            f"transform {transform} applies to {' or '.join(accepts[transform.name])} values, "
            f"not {source}"
        )
    return {"round": "number", "upper": "string", "lower": "string", "date": "date"}[transform.name]  # type: ignore[return-value]


def column_sql(name: str, alias: str = "src") -> str:
    """A source column, quoted (its name came from DESCRIBE or was checked against it)."""
    return f'{alias}."{name.replace(chr(34), chr(34) * 2)}"'


def transform_sql(transform: Transform | None, value: str, source_sql_type: str) -> str:
    """SQL applying ``transform`` to the SQL expression ``value`` (of DuckDB type given)."""
    if transform is None:
        return value
    if transform.name == "round":
        return f"round({value}, {transform.digits})"
    if transform.name in ("upper", "lower"):
        return f"{transform.name}({value})"
    if value_type(source_sql_type) == "string":
        return f"CAST(TRY_CAST({value} AS TIMESTAMP) AS DATE)"
    return value


def emit_sql(value: str, kind: ValueType, sql_type: str | None) -> str:
    """The SQL value as it is sent: dates as ``YYYY-MM-DD`` text (UTC for TIMESTAMPTZ)."""
    if kind != "date":
        return value
    upper = (sql_type or "").upper()
    if upper in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        value = f"timezone('UTC', {value})"
    return f"strftime(CAST({value} AS DATE), '%Y-%m-%d')"


# -- literals ----------------------------------------------------------------------------------


def literal_type(value: Any) -> ValueType:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "string_list"
    raise TransformError(
        f"{value!r} is not a literal a mapping can send: use a string, number, boolean or "
        "list of strings"
    )


def literal_sql(value: Any) -> str:
    """A literal rendered by sqlglot (strings quoted and escaped), lists as VARCHAR[]."""
    literal_type(value)
    if isinstance(value, list):
        items = ", ".join(exp.convert(item).sql(DIALECT) for item in value)
        return f"CAST([{items}] AS VARCHAR[])"
    return exp.convert(value).sql(DIALECT)


# -- tags_from ---------------------------------------------------------------------------------

_ALLOWED = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.And,
    exp.Or,
    exp.Not,
    exp.Paren,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Neg,
    exp.Tuple,
)


def validate_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise TransformError(
            f"tag {tag!r}: tags are lower-case letters, digits, '_' and '-' (at most 64)"
        )
    return tag


def parse_condition(condition: str) -> exp.Expression:
    """A tag condition parsed and restricted to comparisons over columns (see module doc)."""
    try:
        tree = sqlglot.parse_one(condition, dialect=DIALECT)
    except sqlglot.errors.ParseError as exc:
        raise TransformError(f"condition {condition!r} does not parse: {exc}") from None
    for node in tree.walk():
        if not isinstance(node, _ALLOWED):
            raise TransformError(
                f"condition {condition!r}: {node.key.upper()} is not allowed; use columns, "
                "literals, comparisons, AND/OR/NOT, IS NULL, IN and BETWEEN"
            )
        if isinstance(node, exp.Column) and node.table:
            raise TransformError(
                f"condition {condition!r}: name columns of the source without a table prefix"
            )
    return tree


def condition_columns(condition: str) -> list[str]:
    return list(dict.fromkeys(c.name for c in parse_condition(condition).find_all(exp.Column)))


def condition_sql(condition: str, columns: Mapping[str, str], alias: str = "src") -> str:
    """The condition over ``alias``'s columns; ``columns`` (name -> DuckDB type) must hold
    every column it names."""
    tree = parse_condition(condition)
    for column in list(tree.find_all(exp.Column)):
        if column.name not in columns:
            raise TransformError(
                f"condition {condition!r}: the source returns no column {column.name!r}"
            )
        column.replace(exp.column(column.name, table=alias, quoted=True))
    return tree.sql(DIALECT)


def tags_sql(rules: Mapping[str, str], columns: Mapping[str, str], alias: str = "src") -> str:
    """A VARCHAR[] of the tags whose condition holds (NULL counts as false), in rule order."""
    cases = ", ".join(
        f"CASE WHEN ({condition_sql(cond, columns, alias)}) THEN {literal_sql(tag)} END"
        for tag, cond in rules.items()
    )
    return f"CAST(list_filter([{cases}], t -> t IS NOT NULL) AS VARCHAR[])"
