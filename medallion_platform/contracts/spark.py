"""A contract applied on Spark: the compiler's SQL, transpiled, merged into lake snapshots.

The typed expressions, the reasons and the rules are the compiler's own
(:func:`~medallion_platform.contracts.compile.checked_rows_sql`, :func:`raw_json_sql`,
:func:`order_by_latest`): one definition, transpiled to Spark by sqlglot
(:func:`~medallion_platform.engines.dialects.duckdb_to_spark`) plus the contract fragments
below, where DuckDB and Spark parse text differently.

The merges decide what DuckDB's decide (``apply.py``, ``tombstones.py``, ``changes.py``),
with the same window rules, but as SELECTs: Parquet has no UPDATE or DELETE, so a run
writes the next snapshot of each table. Stored rows of the keys a run touches are ranked with
the new rows (as DuckDB's SEMI JOIN does); the other stored rows pass through untouched. So
a rebuild from bronze and any sequence of runs give the same tables, and the same tables as
DuckDB.

Commit: the new silver (and history) and quarantine snapshots and the bronze watermark are
one lake commit (:meth:`Lake.commit`); a run killed before it leaves the old commit, and the
rerun redoes the same batches. Covered: incremental contracts (typing, strict parsing,
rules, quarantine, dedup by business key with ``latest_by`` or ``keep: first``, columns read
inside JSON, stream tombstones), change logs (SCD1 with deletes removed or flagged,
truncates, SCD2 history). Not covered: snapshot feeds (``mode: snapshot``) raise a clear
error and stay on DuckDB.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from medallion_platform.contracts.apply import SilverRunStats
from medallion_platform.contracts.changes import BEFORE_TRUNCATE, history_columns
from medallion_platform.contracts.compile import (
    CHANGE_COLUMN_TYPES,
    QUARANTINE_COLUMNS,
    _json_sources,
    checked_rows_sql,
    order_by_latest,
    raw_json_sql,
    silver_columns,
)
from medallion_platform.contracts.spec import Contract
from medallion_platform.engines.dialects import duckdb_to_spark
from medallion_platform.warehouse.identifiers import qualified, quote

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
    "json_valid(x)": "Spark has none: try_parse_json(x) IS NOT NULL (NULL for NULL). Where "
    "the two parsers disagree: DuckDB accepts NaN, Spark accepts text after the document.",
    "json_extract_string(x, [p1, p2])": "DuckDB extracts every path in one call, as a list: "
    "array(get_json_object(x, p1), …), which returns the same text for strings, numbers "
    "and nested objects (a double in exponent form is spelled 1.0E-7, not 1e-7).",
}

Event = Callable[[str], None]
"""Called with ``silver_written``, ``history_written``, ``quarantine_written``, ``committed``
as a run gets there (progress for logs; the crash tests stop the process at one of them)."""


def _unsupported(contract: Contract) -> str | None:
    if contract.mode == "snapshot":
        return "snapshot feeds (mode: snapshot)"
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
    if isinstance(node, exp.Anonymous) and node.name.lower() == "json_valid":
        (text,) = node.expressions
        parsed = exp.Is(this=_func("try_parse_json", text.copy()), expression=exp.Null())
        not_null = exp.Not(this=exp.Is(this=text.copy(), expression=exp.Null()))
        parsed = exp.Not(this=parsed)
        return exp.Case(ifs=[exp.If(this=not_null, true=parsed)])
    if isinstance(node, exp.JSONExtractScalar) and isinstance(node.expression, exp.Array):
        text = node.this
        return exp.Array(
            expressions=[
                _func("get_json_object", text.copy(), path.copy())
                for path in node.expression.expressions
            ]
        )
    return node


def _bind(sql: str, *values: int) -> str:
    """The compiler's ``?`` parameters as literals (Spark SQL text has no positional binds)."""
    for value in values:
        head, sep, tail = sql.partition("?")
        if not sep:
            raise ValueError("fewer parameters in the SQL than values")
        sql = f"{head}{int(value)}{tail}"
    return sql


def to_spark(
    sql: str, paths: dict[str, str] | None = None, views: dict[str, str] | None = None
) -> str:
    """DuckDB contract SQL → Spark SQL: the engine's fragments, then the contract's."""
    return duckdb_to_spark(sql, paths=paths, views=views, extra=[_contract_fragment])


def _on(contract: Contract, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote(k)} = {right}.{quote(k)}" for k in contract.business_key)


def _keys(contract: Contract, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + quote(k) for k in contract.business_key)


def _listed(columns: list[str], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + quote(c) for c in columns)


FLAGS = "_is_new, _inserted, _updated, _removed, _drop"
"""What each row of a merged frame says about the run: the row is new this run, its key is
new / updated / removed (counted once per key), and the row leaves the table."""


def _merge_rows_sql(contract: Contract, stored: bool) -> str:
    """Incremental contracts: the next silver, with :data:`FLAGS`. Valid rows and the stored
    rows of their keys, one winner per key by :func:`order_by_latest`; a key whose last
    message is a tombstone (``tombstones: delete``) leaves."""
    columns = list(silver_columns(contract))
    cols, keys = _listed(columns), _keys(contract)
    silver = qualified("silver", contract.name)
    delete = contract.tombstones == "delete"
    dead = (
        f"""dead AS (
            SELECT {keys} FROM (
                SELECT {keys}, _tombstone, row_number() OVER (
                    PARTITION BY {keys} ORDER BY _batch_id DESC, _row_number DESC
                ) AS _rank
                FROM _checked WHERE array_length(_reasons) = 0
            ) WHERE _rank = 1 AND _tombstone
        ),"""
        if delete
        else ""
    )
    alive = f"ANTI JOIN dead d ON {_on(contract, 'd', 'c')}" if delete else ""
    touched = f"SELECT DISTINCT {keys}, FALSE AS _dead FROM fresh" + (
        f" UNION ALL SELECT {keys}, TRUE FROM dead" if delete else ""
    )
    stored_rows = (
        f"""UNION ALL
            SELECT {_listed(columns, "s")}, FALSE, t._dead
            FROM {silver} s JOIN touched t ON {_on(contract, "t", "s")}"""
        if stored
        else ""
    )
    kept = (
        f"""UNION ALL
        SELECT {_listed(columns, "s")}, FALSE, FALSE, FALSE, FALSE, FALSE
        FROM {silver} s ANTI JOIN touched t ON {_on(contract, "t", "s")}"""
        if stored
        else ""
    )
    return f"""
        WITH {dead} fresh AS (
            SELECT {_listed(columns, "c")} FROM _checked c {alive}
            WHERE array_length(c._reasons) = 0 AND NOT c._tombstone
        ), touched AS ({touched}),
        versions AS (
            SELECT {cols}, TRUE AS _is_new, FALSE AS _dead FROM fresh
            {stored_rows}
        ), ranked AS (
            SELECT *,
                row_number() OVER (PARTITION BY {keys} ORDER BY {order_by_latest(contract)})
                    AS _rank,
                bool_or(NOT _is_new) OVER (PARTITION BY {keys}) AS _key_stored
            FROM versions
        )
        SELECT {cols}, _is_new,
            _is_new AND NOT _key_stored AS _inserted,
            _is_new AND _key_stored AS _updated,
            _dead AS _removed,
            _dead AS _drop
        FROM ranked WHERE _rank = 1
        {kept}
    """


def _merge_changes_sql(contract: Contract, stored: bool) -> str:
    """Change logs (SCD1): per key the latest change wins, with the values of its latest
    change that is not a delete; deletes remove the key or flag it; the latest TRUNCATE of
    the run removes (or flags) every row older than itself. As ``changes.merge_changes``."""
    assert contract.changes is not None
    flag = contract.changes.deletes == "flag"
    columns = list(silver_columns(contract))
    data = [c for c in columns if c != "_deleted"]
    cols, keys = _listed(data), _keys(contract)
    silver = qualified("silver", contract.name)
    picked = ", ".join(
        f"w.{quote(c)}"
        if c in contract.business_key or c in CHANGE_COLUMN_TYPES or c.startswith("_")
        else f"l.{quote(c)}"
        for c in data
    )
    stored_rows = (
        f"""UNION ALL
            SELECT {_listed(data, "s")}, FALSE
            FROM {silver} s SEMI JOIN touched t ON {_on(contract, "t", "s")}"""
        if stored
        else ""
    )
    kept = (
        f"""UNION ALL
        SELECT {_listed(data, "s")}, {"s._deleted" if flag else "FALSE"}, FALSE, FALSE,
            FALSE, FALSE
        FROM {silver} s ANTI JOIN touched t ON {_on(contract, "t", "s")}"""
        if stored
        else ""
    )
    before = BEFORE_TRUNCATE.replace("t._commit_lsn", "t_lsn").replace("t._seq", "t_seq")
    before = f"(t_lsn IS NOT NULL AND {before})"
    if flag:
        ended = f"{before} AND NOT x._deleted"
        ending = {"_op": "'t'", "_commit_lsn": "t_lsn", "_seq": "t_seq"}
        values = ", ".join(
            f"CASE WHEN {ended} THEN {ending[c]} ELSE x.{c} END AS {c}"
            if c in ending
            else f"x.{quote(c)}"
            for c in data
        )
        final = f"""SELECT {values}, x._deleted OR ({ended}) AS _deleted, _is_new, _inserted,
                _updated, _removed, ({ended}) AS _truncated, FALSE AS _drop"""
    else:
        final = f"""SELECT {_listed(data, "x")}, x._deleted, _is_new, _inserted, _updated,
                _removed, {before} AND NOT x._deleted AS _truncated,
                x._deleted OR {before} AS _drop"""
    return f"""
        WITH changes AS (
            SELECT {cols} FROM _checked WHERE array_length(_reasons) = 0 AND _op <> 't'
        ), touched AS (SELECT DISTINCT {keys} FROM changes),
        versions AS (
            SELECT {cols}, TRUE AS _is_new FROM changes
            {stored_rows}
        ), ranked AS (
            SELECT *,
                row_number() OVER (PARTITION BY {keys} ORDER BY _commit_lsn DESC, _seq DESC)
                    AS _rank,
                row_number() OVER (
                    PARTITION BY {keys} ORDER BY (_op = 'd'), _commit_lsn DESC, _seq DESC
                ) AS _live_rank,
                bool_or(NOT _is_new) OVER (PARTITION BY {keys}) AS _was_stored
            FROM versions
        ), winners AS (
            SELECT {picked}, w._op = 'd' AS _deleted, w._is_new,
                w._is_new AND w._op <> 'd' AND NOT w._was_stored AS _inserted,
                w._is_new AND w._op <> 'd' AND w._was_stored AS _updated,
                w._is_new AND w._op = 'd' AND w._was_stored AS _removed
            FROM ranked w JOIN ranked l ON {_on(contract, "w", "l")}
            WHERE w._rank = 1 AND l._live_rank = 1
        ), merged AS (
            SELECT * FROM winners
            {kept}
        ), last_truncate AS (
            SELECT _commit_lsn AS t_lsn, _seq AS t_seq FROM _checked
            WHERE _op = 't' AND array_length(_reasons) = 0
            ORDER BY _commit_lsn DESC, _seq DESC LIMIT 1
        )
        {final}
        FROM merged x LEFT JOIN last_truncate ON TRUE
    """


def _history_sql(contract: Contract, stored: bool) -> str:
    """SCD2: every version with ``valid_from``/``valid_to``/``is_current``; a TRUNCATE closes
    each key live before it with a tombstone; the versions of the keys a run touches are
    recomputed from their stored history and the new ones. As ``changes.update_history``."""
    assert contract.changes is not None and contract.changes.history is not None
    columns = history_columns(contract)
    history = qualified("silver", contract.changes.history)
    keys = _keys(contract)
    values = _listed([c.name for c in contract.columns])
    nulls = ", ".join(
        quote(c.name) if c.name in contract.business_key else f"NULL AS {quote(c.name)}"
        for c in contract.columns
    )
    stored_cols = [c for c in columns if c not in ("valid_from", "valid_to", "is_current")]
    earlier = f"SELECT {keys}, _op, _commit_lsn, _seq FROM {history} UNION ALL " if stored else ""
    stored_versions = (
        f"""SELECT {_listed(stored_cols, "h")}
            FROM {history} h SEMI JOIN touched t ON {_on(contract, "t", "h")}
            UNION ALL"""
        if stored
        else ""
    )
    kept = (
        f"""UNION ALL
        SELECT {_listed(list(columns), "h")}
        FROM {history} h ANTI JOIN touched t ON {_on(contract, "t", "h")}"""
        if stored
        else ""
    )
    return f"""
        WITH versions AS (
            SELECT {values}, _op, _commit_lsn, _seq, _commit_ts, _batch_id, _source
            FROM _checked WHERE array_length(_reasons) = 0 AND _op <> 't'
        ), tombstones AS (
            SELECT {nulls}, 't' AS _op, _commit_lsn, _seq, _commit_ts, _batch_id, _source
            FROM (
                SELECT {_keys(contract, "x")}, x._op AS _before_op, t._commit_lsn, t._seq,
                    t._commit_ts, t._batch_id, t._source,
                    row_number() OVER (
                        PARTITION BY t._commit_lsn, t._seq, {_keys(contract, "x")}
                        ORDER BY x._commit_lsn DESC, x._seq DESC
                    ) AS _rank
                FROM (
                    SELECT * FROM _checked WHERE array_length(_reasons) = 0 AND _op = 't'
                ) t
                JOIN ({earlier}SELECT {keys}, _op, _commit_lsn, _seq FROM versions) x
                    ON {BEFORE_TRUNCATE}
            ) WHERE _rank = 1 AND _before_op NOT IN ('d', 't')
        ), fresh AS (
            SELECT * FROM versions UNION ALL SELECT * FROM tombstones
        ), touched AS (SELECT DISTINCT {keys} FROM fresh),
        in_play AS (
            {stored_versions}
            SELECT {_listed(stored_cols)} FROM fresh
        )
        SELECT {values},
            _commit_ts AS valid_from,
            lead(_commit_ts) OVER w AS valid_to,
            lead(_commit_lsn) OVER w IS NULL AND _op NOT IN ('d', 't') AS is_current,
            _op, _commit_lsn, _seq, _commit_ts, _batch_id, _source
        FROM in_play
        WINDOW w AS (PARTITION BY {keys} ORDER BY _commit_lsn, _seq)
        {kept}
    """


def _quarantine_sql(contract: Contract, bronze_cols: set[str], stored: bool) -> str:
    columns = _listed(list(QUARANTINE_COLUMNS))
    failed = f"""
        SELECT _batch_id, _source, _row_number, array_to_string(_reasons, '; ') AS _reason,
               {raw_json_sql(contract, bronze_cols)} AS _raw,
               CAST(now() AS TIMESTAMPTZ) AS _quarantined_at
        FROM _checked WHERE array_length(_reasons) > 0
    """
    if stored:
        failed += f" UNION ALL SELECT {columns} FROM {qualified('quarantine', contract.name)}"
    return failed


def _unit_tables(contract: Contract) -> list[str]:
    """The ``layer.table`` names of a contract's commit unit: silver, history, quarantine."""
    tables = [f"silver.{contract.name}"]
    if contract.changes is not None and contract.changes.history:
        tables.append(f"silver.{contract.changes.history}")
    return [*tables, f"quarantine.{contract.name}"]


def _kept_sql(contract: Contract, checked_sql: str, bronze_cols: set[str]) -> str:
    """The checked rows as the run keeps them (cached): what the merge reads (silver's columns,
    ``_tombstone``, ``_reasons``) and, for failing rows only, the raw text quarantine shows;
    a valid row's raw text is NULL there, so the cache holds each value about once."""
    raw = [f"r_{c.name}" for c in contract.columns]
    raw += list(_json_sources(contract, bronze_cols).values())  # texts read inside as JSON
    kept = [c for c in silver_columns(contract) if c != "_deleted"]  # (decided by the merge)
    kept += ["_tombstone", "_reasons"]
    return f"""
        SELECT {_listed(kept)}, {
        ", ".join(f"CASE WHEN array_length(_reasons) > 0 THEN {r} END AS {r}" for r in raw)
    }
        FROM ({checked_sql})
    """


COUNTS_SQL = """
SELECT count(*) AS rows_in, count_if(size(_reasons) > 0) AS failing,
       count_if(size(_reasons) > 0 AND _tombstone) AS failing_tombstones,
       count_if(_tombstone) AS tombstones_in
FROM _checked
"""
REASONS_SQL = r"""
SELECT regexp_extract(r, '^(row \\d+: |line \\d+: )?([a-z0-9_ ]+)', 2) AS kind, count(*) AS n
FROM (SELECT explode(_reasons) AS r FROM _checked WHERE size(_reasons) > 0)
GROUP BY 1
"""
"""Rows and tombstones in, failing ones, and the reasons by kind, as DuckDB's run counts
them (the first query fills the cache; the second reads one column of the failing rows)."""


def _nothing_new(contract: Contract, engine: SparkEngine, watermark: int) -> SilverRunStats:
    batches = engine.lake.bronze_batches(contract.source)
    columns = engine.session.read.parquet(str(batches[max(batches)])).columns
    return SilverRunStats(
        table=contract.name,
        rebuilt=False,
        from_batch_id=watermark,
        to_batch_id=watermark,
        rows_in=0,
        valid=0,
        quarantined=0,
        inserted=0,
        updated=0,
        superseded=0,
        reasons={},
        tombstones=0 if "_tombstone" in columns else None,
    )


def apply_contract_spark(
    engine: SparkEngine,
    contract: Contract,
    *,
    rebuild: bool = False,
    on_event: Event | None = None,
    bronze_columns: Mapping[str, str] | None = None,
) -> SilverRunStats:
    """Merge the lake's bronze batches newer than the committed watermark into silver (and
    history) and quarantine; one lake commit. Returns what DuckDB's run would report.

    ``bronze_columns`` (name → DuckDB type, the warehouse's bronze table) spares Spark
    reading every batch file's footer to merge their schemas."""
    why = _unsupported(contract)
    if why:
        raise NotImplementedError(
            f"contract {contract.name}: {why} do not run on the Spark engine; keep this "
            "contract on DuckDB (MEDALLION_ENGINE=duckdb), see the README, 'When you outgrow "
            "one machine'"
        )
    from pyspark.sql import Observation
    from pyspark.sql.functions import expr

    lake, session = engine.lake, engine.session
    event = on_event or (lambda _name: None)
    unit = f"silver.{contract.name}"
    tables = _unit_tables(contract)
    committed = lake.read_commit(unit)
    position: dict[str, Any] = committed.position if committed else {}
    fingerprint = contract.fingerprint()
    if committed is not None and (
        position.get("fingerprint") != fingerprint or sorted(committed.tables) != sorted(tables)
    ):
        rebuild = True  # a rule, type or key changed: earlier verdicts are stale
    keep = committed is not None and not rebuild  # merge into the committed tables
    low = int(position.get("watermark", 0)) if keep else 0
    batches = lake.bronze_batches(contract.source)
    if not batches:
        raise LookupError(
            f"contract {contract.name}: bronze.{contract.source} has no batch in the lake "
            f"{lake.root}; export it first (engines.duckdb_lake.export_bronze)"
        )
    high = max([low, *batches])
    if high == low and keep:
        return _nothing_new(contract, engine, low)  # the committed tables stay as they are

    bronze = engine.bronze(contract.source, low, high, bronze_columns)
    assert bronze is not None  # rebuild: every batch; else at least the batch ``high``
    bronze_cols = set(bronze.columns)
    bronze.createOrReplaceTempView("_bronze")
    checked_sql = _bind(checked_rows_sql(contract, bronze_cols), low, high)
    checked = session.sql(
        to_spark(
            _kept_sql(contract, checked_sql, bronze_cols),
            views={f"bronze.{contract.source}": "_bronze"},
        )
    )
    checked = checked.cache()  # read by the counts, the quarantine and the merge
    try:
        checked.createOrReplaceTempView("_checked")
        counts = session.sql(COUNTS_SQL).first()  # also fills the cache
        reasons = {r["kind"]: r["n"] for r in session.sql(REASONS_SQL).collect()}
        stored = (
            {name: str(lake.root / rel) for name, rel in committed.tables.items()}
            if keep and committed is not None
            else {}
        )
        if contract.changes is not None:
            merge_sql = _merge_changes_sql(contract, keep)
        else:
            merge_sql = _merge_rows_sql(contract, keep)
        merged = session.sql(to_spark(merge_sql, stored))
        truncated = "_truncated" if contract.changes is not None else "FALSE"
        # The run's counts are observed while silver is written: no second pass over it.
        observed = Observation(f"silver_{contract.name}")
        merged = merged.observe(
            observed,
            expr("count_if(_inserted)").alias("inserted"),
            expr("count_if(_updated)").alias("updated"),
            expr(f"count_if(_removed) + count_if({truncated})").alias("deleted"),
        )
        merged.createOrReplaceTempView("_merged")
        silver_cols = _listed(list(silver_columns(contract)))
        written = {
            f"silver.{contract.name}": engine.write_snapshot(
                session.sql(to_spark(f"SELECT {silver_cols} FROM _merged WHERE NOT _drop")),
                "silver",
                contract.name,
            )
        }
        outcome = observed.get
        rows_by_day: dict[str, int] = {}
        if contract.partition:  # new rows per day, from the snapshot just written
            rows_by_day = {
                str(r[0]): r[1]
                for r in session.read.parquet(str(written[f"silver.{contract.name}"]))
                .where(f"_batch_id > {int(low)}")
                .groupBy(contract.partition.name)
                .count()
                .collect()
            }
        event("silver_written")
        if contract.changes is not None and contract.changes.history:
            name = contract.changes.history
            history = session.sql(to_spark(_history_sql(contract, keep), stored))
            written[f"silver.{name}"] = engine.write_snapshot(history, "silver", name)
            event("history_written")
        quarantine = session.sql(to_spark(_quarantine_sql(contract, bronze_cols, keep), stored))
        written[f"quarantine.{contract.name}"] = engine.write_snapshot(
            quarantine, "quarantine", contract.name
        )
        event("quarantine_written")
        lake.commit(unit, written, {"watermark": high, "fingerprint": fingerprint})
        event("committed")
    finally:
        checked.unpersist()

    rows_in, failing = counts["rows_in"], counts["failing"]
    tombstones = counts["tombstones_in"] - counts["failing_tombstones"]
    valid = rows_in - failing - tombstones
    return SilverRunStats(
        table=contract.name,
        rebuilt=rebuild,
        from_batch_id=low,
        to_batch_id=high,
        rows_in=rows_in,
        valid=valid,
        quarantined=failing,
        inserted=outcome["inserted"],
        updated=outcome["updated"],
        superseded=valid - outcome["inserted"],
        deleted=outcome["deleted"],
        tombstones=tombstones if "_tombstone" in bronze_cols else None,
        reasons=reasons,
        rows_by_day=dict(sorted(rows_by_day.items())),
    )
