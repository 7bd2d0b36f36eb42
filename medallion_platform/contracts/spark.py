"""A contract applied on Spark: the compiler's SQL, transpiled, merged into lake snapshots.

The typed expressions, the reasons and the rules are the compiler's own
(:func:`~medallion_platform.contracts.compile.checked_rows_sql`, :func:`raw_json_sql`,
:func:`order_by_latest`): one definition, transpiled to Spark by sqlglot
(:func:`~medallion_platform.engines.dialects.duckdb_to_spark`) plus the contract fragments
below, where DuckDB and Spark parse text differently. The merge is the same rule as DuckDB's:
new valid rows and the stored silver rows of their keys, one winner per key by
``order_by_latest``; a rebuild from bronze and any sequence of runs give the same table.

Commit: the new silver and quarantine snapshots and the bronze watermark are one lake commit
(:meth:`Lake.commit`); a run killed before it leaves the old commit, and the rerun redoes the
same batches. Covered here: incremental contracts (typing, strict parsing, rules, quarantine,
dedup by business key with ``latest_by`` or ``keep: first``). Not yet: change logs (SCD1/2),
snapshot feeds, stream tombstones and columns read inside JSON: they raise a clear error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlglot import exp

from medallion_platform.contracts.compile import (
    checked_rows_sql,
    order_by_latest,
    raw_json_sql,
    silver_columns,
)
from medallion_platform.contracts.spec import Contract
from medallion_platform.engines.dialects import duckdb_to_spark
from medallion_platform.warehouse.identifiers import quote

if TYPE_CHECKING:
    from medallion_platform.engines.spark import SparkEngine

CONTRACT_FRAGMENTS: dict[str, str] = {
    "regexp_full_match(x, p)": "Spark has none: x RLIKE '^(?:p)$' (the patterns are plain "
    "enough to mean the same in RE2 and Java).",
    "TRY_CAST(text AS INTEGER|BIGINT)": "DuckDB reads '517.0' as 517, Spark as NULL: through "
    "DECIMAL(38,9) first (the pattern before it admits only '.0…' fractions).",
    "make_timestamp(epoch_us(TRY_CAST(text AS TIMESTAMPTZ)))": "UTC wall time of a text with "
    "an offset: CAST(TRY_CAST(text AS TIMESTAMP) AS TIMESTAMP_NTZ) in a UTC session.",
    "make_timestamp(µs)": "timestamp_micros(µs) as TIMESTAMP_NTZ (epoch_seconds columns).",
    "to_json(struct)": "Spark drops NULL fields unless told: ignoreNullFields = false.",
    "HUGEINT": "DECIMAL(38,0) (cents columns).",
}


class SparkSilverRun(BaseModel):
    """What one Spark run of a contract did (the counts of DuckDB's SilverRunStats it has)."""

    table: str
    from_batch_id: int
    to_batch_id: int
    rows_in: int
    valid: int
    quarantined: int
    rows: int
    reasons: dict[str, int]


def _unsupported(contract: Contract) -> str | None:
    if contract.changes is not None:
        return "change logs (SCD1/SCD2)"
    if contract.mode == "snapshot":
        return "snapshot feeds"
    if any(c.json_path for c in contract.columns):
        return "columns read inside JSON"
    return None


def _func(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _contract_fragment(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.RegexpFullMatch) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "regexp_full_match"
    ):
        text, pattern = (
            (node.this, node.expression)
            if isinstance(node, exp.RegexpFullMatch)
            else tuple(node.expressions)
        )
        anchored = exp.Literal.string(f"^(?:{pattern.this})$")
        return exp.RegexpLike(this=text, expression=anchored)
    if isinstance(node, exp.TryCast) and node.to.is_type(*exp.DataType.INTEGER_TYPES):
        inner = node.this
        if not (isinstance(inner, exp.TryCast) and inner.to.is_type(exp.DataType.Type.DECIMAL)):
            node.set(
                "this", exp.TryCast(this=inner, to=exp.DataType.build("DECIMAL(38, 9)"), safe=True)
            )
        return node
    if isinstance(node, exp.DataType) and node.is_type(exp.DataType.Type.INT128):
        return exp.DataType.build("DECIMAL(38, 0)")
    if isinstance(node, exp.UnixToTime) and node.text("scale") == "6":  # make_timestamp(µs)
        micros = node.this.transform(_contract_fragment)  # replaced nodes are not revisited
        if isinstance(micros, exp.Anonymous) and micros.name.lower() == "epoch_us":
            (parsed,) = micros.expressions  # the text's instant, as UTC wall time
            return exp.cast(parsed, exp.DataType.build("TIMESTAMP_NTZ", dialect="spark"))
        stamp = _func("timestamp_micros", micros)
        return exp.cast(stamp, exp.DataType.build("TIMESTAMP_NTZ", dialect="spark"))
    if isinstance(node, exp.JSONFormat) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "to_json"
    ):
        value = node.this if isinstance(node, exp.JSONFormat) else node.expressions[0]
        options = _func("map", exp.Literal.string("ignoreNullFields"), exp.Literal.string("false"))
        return _func("to_json", value, options)
    return node


def _bind(sql: str, *values: int) -> str:
    """The compiler's ``?`` parameters as literals (Spark SQL text has no positional binds)."""
    for value in values:
        head, sep, tail = sql.partition("?")
        if not sep:
            raise ValueError("fewer parameters in the SQL than values")
        sql = f"{head}{int(value)}{tail}"
    return sql


def to_spark(sql: str, paths: dict[str, str]) -> str:
    """DuckDB contract SQL → Spark SQL: the engine's fragments, then the contract's."""
    return duckdb_to_spark(sql, paths=paths, extra=[_contract_fragment])


def _bronze_columns(engine: SparkEngine, contract: Contract) -> set[str]:
    folder = engine.lake.bronze_dir(contract.source)
    if not engine.lake.bronze_batches(contract.source):
        raise LookupError(
            f"contract {contract.name}: bronze.{contract.source} has no batch in the lake "
            f"{engine.lake.root}; export it first (engines.duckdb_lake.export_bronze)"
        )
    return set(engine.session.read.parquet(str(folder)).columns)


def apply_contract_spark(
    engine: SparkEngine, contract: Contract, *, rebuild: bool = False
) -> SparkSilverRun:
    """Merge the lake's bronze batches newer than the committed watermark into silver."""
    why = _unsupported(contract)
    if why:
        raise NotImplementedError(
            f"contract {contract.name}: {why} do not run on the Spark engine yet; "
            "keep this contract on DuckDB (MEDALLION_ENGINE=duckdb)"
        )
    lake, session = engine.lake, engine.session
    unit = f"silver.{contract.name}"
    committed = lake.read_commit(unit)
    position: dict[str, Any] = committed.position if committed else {}
    fingerprint = contract.fingerprint()
    if position.get("fingerprint") != fingerprint:
        rebuild = True  # a rule, type or key changed: earlier verdicts are stale
    low = 0 if rebuild else int(position.get("watermark", 0))
    batches = lake.bronze_batches(contract.source)
    high = max([low, *batches])
    bronze = {f"bronze.{contract.source}": str(lake.bronze_dir(contract.source))}

    bronze_cols = _bronze_columns(engine, contract)
    checked = session.sql(
        to_spark(_bind(checked_rows_sql(contract, bronze_cols), low, high), bronze)
    )
    checked.createOrReplaceTempView("_checked")
    counts = session.sql(
        "SELECT count(*) AS rows_in, count_if(size(_reasons) > 0) AS quarantined FROM _checked"
    ).first()
    reasons = {
        r["kind"]: r["n"]
        for r in session.sql(
            "SELECT regexp_extract(r, '^(row \\\\d+: |line \\\\d+: )?([a-z0-9_ ]+)', 2) AS kind, "
            "count(*) AS n FROM (SELECT explode(_reasons) AS r FROM _checked) GROUP BY 1"
        ).collect()
    }

    columns = ", ".join(quote(c) for c in silver_columns(contract))
    keys = ", ".join(quote(k) for k in contract.business_key)
    stored: dict[str, str] = {}
    union = ""
    if committed and not rebuild:
        stored = {name: str(lake.root / rel) for name, rel in committed.tables.items()}
        union = f"UNION ALL SELECT {columns} FROM silver.{contract.name}"
    merged = f"""
        SELECT {columns} FROM (
            SELECT {columns} FROM _checked_valid {union}
        )
        QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order_by_latest(contract)}) = 1
    """
    session.sql("SELECT * FROM _checked WHERE size(_reasons) = 0").createOrReplaceTempView(
        "_checked_valid"
    )
    silver = session.sql(to_spark(merged, {k: v for k, v in stored.items() if "silver" in k}))
    failed = f"""
        SELECT _batch_id, _source, _row_number, array_to_string(_reasons, '; ') AS _reason,
               {raw_json_sql(contract, bronze_cols)} AS _raw,
               CAST(now() AS TIMESTAMPTZ) AS _quarantined_at
        FROM _checked WHERE array_length(_reasons) > 0
    """
    if stored.get(f"quarantine.{contract.name}"):
        failed += f" UNION ALL SELECT * FROM quarantine.{contract.name}"
    quarantine = session.sql(
        to_spark(failed, {k: v for k, v in stored.items() if "quarantine" in k})
    )

    silver_folder = engine.write_snapshot(silver, "silver", contract.name)
    quarantine_folder = engine.write_snapshot(quarantine, "quarantine", contract.name)
    lake.commit(
        unit,
        {
            f"silver.{contract.name}": silver_folder,
            f"quarantine.{contract.name}": quarantine_folder,
        },
        {"watermark": high, "fingerprint": fingerprint},
    )
    rows = session.read.parquet(str(silver_folder)).count()
    return SparkSilverRun(
        table=contract.name,
        from_batch_id=low,
        to_batch_id=high,
        rows_in=counts["rows_in"],
        valid=counts["rows_in"] - counts["quarantined"],
        quarantined=counts["quarantined"],
        rows=rows,
        reasons=reasons,
    )
