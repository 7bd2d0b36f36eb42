"""One SQL definition, two engines: DuckDB SQL transpiled to Spark SQL with sqlglot.

sqlglot does most of the work (QUALIFY, ``->>``, FILTER, ``arg_max`` …). Where DuckDB and
Spark really differ, a fragment below rewrites the DuckDB tree before Spark SQL is generated.
Each entry of :data:`SPARK_FRAGMENTS` names the construct and why (the README lists them too).
Fragments marked *typed* need the columns' types, so the inputs' schemas are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

SPARK_FRAGMENTS: dict[str, str] = {
    "timezone('UTC', ts)": "DuckDB turns a TIMESTAMPTZ into UTC wall time; Spark's TIMESTAMP is "
    "already shown in the session time zone, which the Spark engine pins to UTC: the call is "
    "dropped.",
    "a / b": "DuckDB divides in DOUBLE (decimals included); Spark keeps DECIMAL, which rounds "
    "differently at the last digit: operands are cast to DOUBLE so both round the same value.",
    "date - date (typed)": "DuckDB gives days as an integer; Spark an INTERVAL DAY, which cannot "
    "be compared with a number: datediff(a, b).",
    "ASOF LEFT JOIN": "Spark has no as-of join: a LEFT JOIN on the equalities and the "
    "inequality, bounded by the next right-side row (lead() over the same key), which matches "
    "at most the one row an as-of join picks.",
    "range(start, stop, step) AS t(c)": "DuckDB's table function: Spark's "
    "explode(sequence(start, stop - step, step)) (sequence includes its end).",
    "isodow(d)": "ISO weekday 1 = Monday: weekday(d) + 1 (Spark's dayofweek starts on Sunday).",
    "monthname(d) / dayname(d)": "Spark 4 abbreviates ('Jan', 'Mon'): date_format(d, 'MMMM' / "
    "'EEEE') gives DuckDB's full names.",
    "week(d)": "The ISO week: Spark's weekofyear(d).",
    "epoch_ms(ts) (typed)": "Milliseconds since the epoch: unix_millis(ts) (DuckDB overloads "
    "epoch_ms both ways; sqlglot reads it as the inverse).",
    "epoch(a - b)": "Seconds of an interval: (unix_micros(a) - unix_micros(b)) / 1e6.",
    "CAST(double AS integer) (typed)": "DuckDB rounds to the nearest, Spark truncates: round() "
    "first.",
    "round(double, n) (typed)": "DuckDB rounds x * 10^n to the nearest and divides back "
    "(627.425, stored as 627.4249…, gives 627.42); Spark rounds the double's shortest decimal "
    "spelling half up (627.43): written as DuckDB computes it, round(x * 10^n, 0) / 10^n.",
}

Schema = Mapping[str, Mapping[str, Mapping[str, str]]]
"""``{schema: {table: {column: DuckDB type}}}`` of the tables a statement reads."""


def _timezone_utc(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.ConvertTimezone | exp.AtTimeZone):
        zone = node.args.get("target_tz") or node.args.get("zone")
        if isinstance(zone, exp.Literal) and zone.this.upper() == "UTC":
            return node.args.get("timestamp") or node.this
    if isinstance(node, exp.Anonymous) and node.name.lower() == "timezone":
        zone, value = node.expressions
        if isinstance(zone, exp.Literal) and zone.this.upper() == "UTC":
            return value
    return node


def _double_division(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Div) and not node.args.get("_spark_double"):
        left = node.this
        if not (isinstance(left, exp.Cast) and left.to.this == exp.DataType.Type.DOUBLE):
            node.set("this", exp.cast(left, exp.DataType.Type.DOUBLE))
        node.set("_spark_double", True)
    return node


def _calendar(node: exp.Expression) -> exp.Expression:
    def func(name: str, *args: exp.Expression) -> exp.Expression:
        return exp.Anonymous(this=name, expressions=list(args))

    if isinstance(node, exp.DayOfWeekIso) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "isodow"
    ):
        arg = node.this if isinstance(node, exp.DayOfWeekIso) else node.expressions[0]
        return exp.paren(exp.Add(this=func("weekday", arg), expression=exp.Literal.number(1)))
    if isinstance(node, exp.TimeToUnix) and isinstance(node.this, exp.Sub):
        arg = node.this
        micros = exp.Sub(
            this=func("unix_micros", arg.this), expression=func("unix_micros", arg.expression)
        )
        return exp.Div(
            this=exp.cast(exp.paren(micros), exp.DataType.Type.DOUBLE),
            expression=exp.Literal.number(1000000),
            _spark_double=True,
        )
    if isinstance(node, exp.Monthname | exp.Dayname):
        pattern = "MMMM" if isinstance(node, exp.Monthname) else "EEEE"
        return func("date_format", node.this, exp.Literal.string(pattern))
    if isinstance(node, exp.Week):
        return func("weekofyear", node.this)
    return node


def _range_table(select: exp.Expression) -> exp.Expression:
    """``FROM x, range(a, b, step) AS t(c)`` → ``FROM x LATERAL VIEW explode(sequence(a,
    b - step, step)) t AS c`` (Spark's sequence includes its end; the view sees x's columns)."""
    if not isinstance(select, exp.Select):
        return select
    for join in list(select.args.get("joins") or []):
        table = join.this
        if not (isinstance(table, exp.Table) and isinstance(table.this, exp.GenerateSeries)):
            continue
        series = table.this
        end = series.args["end"].copy()
        step = (series.args.get("step") or exp.Literal.number(1)).copy()
        if series.args.get("is_end_exclusive"):
            end = exp.Sub(this=exp.paren(end), expression=step.copy())
        sequence = exp.Anonymous(
            this="sequence", expressions=[series.args["start"].copy(), end, step]
        )
        alias = table.args.get("alias")
        view = exp.Lateral(
            this=exp.Explode(this=sequence),
            view=True,
            alias=exp.TableAlias(this=alias.this.copy(), columns=[c.copy() for c in alias.columns]),
        )
        join.pop()
        select.append("laterals", view)
    return select


def _asof_join(select: exp.Expression) -> exp.Expression:
    """``l ASOF LEFT JOIN r ON l.k = r.k AND l.t >= r.t`` → a LEFT JOIN on the same condition,
    with r limited to rows whose next ``t`` (same ``k``) is after ``l.t``."""
    if not isinstance(select, exp.Select):
        return select
    for join in select.args.get("joins") or []:
        if (join.args.get("method") or "").upper() != "ASOF":
            continue
        right = join.this
        alias = right.alias_or_name
        conditions = (
            list(join.args["on"].flatten())
            if isinstance(join.args["on"], exp.And)
            else [join.args["on"]]
        )
        keys = [c for c in conditions if isinstance(c, exp.EQ)]
        bounds = [c for c in conditions if isinstance(c, exp.GTE | exp.GT)]
        if len(bounds) != 1 or len(keys) + 1 != len(conditions):
            raise ValueError("ASOF join: only equalities and one >= / > are translated for Spark")
        bound = bounds[0]
        left_t, right_t = bound.this, bound.expression
        if right_t.table != alias:
            raise ValueError("ASOF join: write the condition as left >= right")

        def right_side(eq: exp.EQ, alias: str = alias) -> exp.Column:
            side = eq.expression if eq.expression.table == alias else eq.this
            return exp.column(side.name)

        lead = exp.Window(
            this=exp.Anonymous(this="lead", expressions=[exp.column(right_t.name)]),
            partition_by=[right_side(k) for k in keys],
            order=exp.Order(expressions=[exp.Ordered(this=exp.column(right_t.name))]),
        )
        source = right.copy()
        source.set("alias", None)
        inner = exp.select("*", exp.alias_(lead, "_asof_next")).from_(source)
        join.set("this", inner.subquery(alias))
        until = exp.column("_asof_next", table=alias)
        limit = exp.or_(
            exp.Is(this=until.copy(), expression=exp.Null()),
            exp.LT(this=left_t.copy(), expression=until),
        )
        join.set("on", exp.and_(join.args["on"], exp.paren(limit)))
        join.set("method", None)
    return select


def _is_double(node: exp.Expression) -> bool:
    """A DOUBLE in DuckDB: typed so, a division (DuckDB divides in DOUBLE), or arithmetic on
    one."""
    if node.is_type(exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT) or isinstance(node, exp.Div):
        return True
    if isinstance(node, exp.Paren | exp.Neg):
        return _is_double(node.this)
    if isinstance(node, exp.Mul | exp.Add | exp.Sub):
        return _is_double(node.this) or _is_double(node.expression)
    return False


def _double_round(node: exp.Expression) -> exp.Expression:
    """``round(x, n)`` of a DOUBLE the way DuckDB computes it."""
    if not isinstance(node, exp.Round) or node.args.get("_spark_double"):
        return node
    value, digits = node.this, node.args.get("decimals")
    if not _is_double(value) or not (digits is None or (digits.is_int and int(digits.this) >= 0)):
        return node
    scale = exp.Literal.number(10 ** int(digits.this if digits is not None else 0))
    scaled = exp.Round(
        this=exp.Mul(this=exp.paren(value.copy()), expression=scale.copy()),
        decimals=exp.Literal.number(0),
        _spark_double=True,
    )
    return exp.Div(
        this=exp.cast(scaled, exp.DataType.Type.DOUBLE), expression=scale, _spark_double=True
    )


def _typed(tree: exp.Expression, schema: Schema) -> exp.Expression:
    """Fragments that depend on types: date - date, CAST(double AS integer)."""
    try:
        typed = annotate_types(
            qualify(
                tree.copy(),
                schema=dict(schema),
                dialect="duckdb",
                validate_qualify_columns=False,
                quote_identifiers=False,
            ),
            schema=dict(schema),
            dialect="duckdb",
        )
    except Exception:  # an unqualifiable statement: the typed fragments cannot apply
        return tree

    def fix(node: exp.Expression) -> exp.Expression:
        if (
            isinstance(node, exp.Sub)
            and node.this.is_type(exp.DataType.Type.DATE)
            and (node.expression.is_type(exp.DataType.Type.DATE))
        ):
            return exp.Anonymous(this="datediff", expressions=[node.this, node.expression])
        if isinstance(node, exp.UnixToTime) and node.this.is_type(*exp.DataType.TEMPORAL_TYPES):
            # epoch_ms(timestamp) is milliseconds (DuckDB overloads it; sqlglot reads the inverse)
            return exp.Anonymous(this="unix_millis", expressions=[node.this])
        if (
            isinstance(node, exp.Cast)
            and node.to.is_type(*exp.DataType.INTEGER_TYPES)
            and (node.this.is_type(exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT))
        ):
            node.set("this", exp.Round(this=node.this))
        return node

    return typed.transform(fix)


def _lake_table(
    node: exp.Expression, paths: Mapping[str, str], views: Mapping[str, str]
) -> exp.Expression:
    if (
        isinstance(node, exp.Table)
        and node.args.get("db")
        and isinstance(node.this, exp.Identifier)
    ):
        name = f"{node.db}.{node.name}".lower()
        alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(node.name))
        if name in views:
            return exp.Table(this=exp.to_identifier(views[name]), alias=alias)
        if name in paths:
            return exp.Table(
                this=exp.to_identifier(paths[name], quoted=True),
                db=exp.to_identifier("parquet"),
                alias=alias,
            )
    return node


def tables_read(sql: str) -> list[str]:
    """The ``layer.table`` names a DuckDB statement reads (CTE names have no schema), in the
    order they first appear."""
    tree = sqlglot.parse_one(sql, dialect="duckdb")
    names = [
        f"{t.db}.{t.name}".lower()
        for t in tree.find_all(exp.Table)
        if t.args.get("db") and isinstance(t.this, exp.Identifier)
    ]
    return list(dict.fromkeys(names))


FRAGMENTS: list[Callable[[exp.Expression], exp.Expression]] = [
    _timezone_utc,
    _calendar,
    _range_table,
    _asof_join,
    _double_round,
    _double_division,
]


def duckdb_to_spark(
    sql: str,
    schema: Schema | None = None,
    *,
    paths: Mapping[str, str] | None = None,
    views: Mapping[str, str] | None = None,
    extra: Sequence[Callable[[exp.Expression], exp.Expression]] = (),
    pretty: bool = False,
) -> str:
    """The Spark SQL for a DuckDB statement (the platform's one definition).

    ``schema`` enables the typed fragments; ``paths`` (``"layer.table"`` → Parquet folder)
    makes each table read its lake snapshot directly (``parquet.`<folder>```), so a statement
    sees one committed snapshot per table and needs no catalog; ``views`` maps names to
    temporary views instead (a bronze range of batch files); ``extra`` fragments (the
    contract compiler's) run after the engine's."""
    tree = sqlglot.parse_one(sql, dialect="duckdb")
    if schema:
        tree = _typed(tree, schema)
    for fragment in [*FRAGMENTS, *extra]:
        tree = tree.transform(fragment)
    if paths or views:
        tree = tree.transform(lambda node: _lake_table(node, paths or {}, views or {}))
    return tree.sql(dialect="spark", pretty=pretty, unsupported_level=sqlglot.ErrorLevel.RAISE)
