"""Compile a contract into SQL that types bronze text and names every reason a row fails.

The SQL only uses portable constructs (TRY_CAST, CASE, regexp) so that moving silver to
another engine means transpiling it, not rewriting it.
"""

from __future__ import annotations

from medallion_platform.contracts.spec import Column, Contract
from medallion_platform.warehouse.identifiers import qualified, quote

LINEAGE = ("_batch_id", "_source", "_row_number")
CHANGE_COLUMN_TYPES = {
    "_op": "VARCHAR",
    "_commit_lsn": "BIGINT",
    "_seq": "BIGINT",
    "_commit_ts": "TIMESTAMPTZ",
}


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _present(column: Column, bronze_columns: set[str]) -> list[str]:
    """The bronze columns that carry this one, in order: its source (or name), its aliases."""
    return [n for n in (column.source or column.name, *column.aliases) if n in bronze_columns]


def _json_paths(contract: Contract, bronze_columns: set[str]) -> dict[str, list[str]]:
    """Per bronze column read as JSON, the paths read inside it: all are extracted in one
    parse (``json_extract_string(col, [paths])``) instead of one parse per column."""
    paths: dict[str, list[str]] = {}
    for column in contract.columns:
        if column.json_path:
            for name in _present(column, bronze_columns):
                wanted = paths.setdefault(name, [])
                if column.json_path not in wanted:
                    wanted.append(column.json_path)
    return paths


def _valid_flag(name: str) -> str:
    return quote(f"_jv_{name}")


def _extracted(name: str) -> str:
    return quote(f"_jl_{name}")


def _blank_to_null(text: str, markers: list[str]) -> str:
    """Trimmed text, NULL when empty or one of the column's null markers (``NA``, ``\\N`` …)."""
    if markers == [""]:
        return f"NULLIF(trim({text}), '')"
    listed = ", ".join(_literal(m) for m in markers)
    return f"CASE WHEN trim({text}) IN ({listed}) THEN NULL ELSE trim({text}) END"


def _raw(
    contract: Contract, column: Column, bronze_columns: set[str], paths: dict[str, list[str]]
) -> str:
    """The bronze text for a column: the first present of its name and aliases, trimmed,
    blank or a null marker → NULL."""
    present = _present(column, bronze_columns)
    if not present:
        return "CAST(NULL AS VARCHAR)"
    markers = contract.null_markers(column)
    if column.json_path:  # text that is not JSON yields NULL here and a reason (see below)
        text = [
            _blank_to_null(f"{_extracted(n)}[{paths[n].index(column.json_path) + 1}]", markers)
            for n in present
        ]
    else:
        text = [_blank_to_null(quote(n), markers) for n in present]
    return text[0] if len(text) == 1 else f"coalesce({', '.join(text)})"


def _json_sources(contract: Contract, bronze_columns: set[str]) -> dict[str, str]:
    """The bronze text each ``json_path`` column reads inside, as ``{sql: alias}``: one copy
    per distinct source (not per column), carried along only to say when it is not JSON and
    to show it in quarantine."""
    sources: dict[str, str] = {}
    for column in contract.columns:
        if column.json_path:
            sql = _json_source(column, bronze_columns)
            sources.setdefault(sql, f"_js_{len(sources)}")
    return sources


def _json_source(column: Column, bronze_columns: set[str]) -> str:
    """The bronze text a ``json_path`` column reads inside (to say when it is not JSON).

    Trimmed (blank → NULL) only where it did not parse: text that parsed is JSON, never
    blank, and DuckDB's ``trim`` walks the whole string (about 1.5 s of CPU per million
    300-byte messages, a third of a pass over the events)."""
    present = _present(column, bronze_columns)
    if not present:
        return "CAST(NULL AS VARCHAR)"
    if len(present) == 1:
        (n,) = present
        return f"CASE WHEN {_valid_flag(n)} THEN {quote(n)} ELSE NULLIF(trim({quote(n)}), '') END"
    text = [f"NULLIF(trim({quote(n)}), '')" for n in present]
    return f"coalesce({', '.join(text)})"


def _json_invalid(column: Column, bronze_columns: set[str], text: str) -> str:
    """True when the text the column reads inside is not JSON (reusing the one parse)."""
    present = _present(column, bronze_columns)
    if len(present) == 1:
        return f"NOT {_valid_flag(present[0])}"
    return f"NOT json_valid({text})"


BOOLEAN_TEXTS = {
    "true": True, "t": True, "yes": True, "y": True, "1": True, "on": True,
    "false": False, "f": False, "no": False, "n": False, "0": False, "off": False,
}  # fmt: skip
"""What a boolean column accepts (any case, after trimming); anything else is quarantined."""
DATE_PATTERN = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
TIMESTAMP_PATTERN = (
    DATE_PATTERN + "([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,9})?)?)?"
    "( ?(Z|[+-](0[0-9]|1[0-8])(:?[0-5][0-9])?))?"
)
"""ISO 8601: ``2026-01-02``, ``2026-01-02 03:04``, ``2026-01-02T03:04:05.123+05:30``; a year
of four digits, an offset within ±18:00 (``+99:00`` is no offset anywhere)."""
MAX_EPOCH_SECONDS = 253_402_300_800  # 10000-01-01: the last second a four-digit year holds


def _typed(column: Column, raw: str) -> str:
    """Parse the trimmed text strictly, the same way for every type: '1.5' is not an integer
    and '12.999' is not a decimal(12,2) (a bare TRY_CAST would round both), '2026-1-2' is not
    a date, a year has four digits; such values are quarantined, never altered."""
    if column.type == "varchar":
        return raw
    if column.type == "boolean":
        cases = " ".join(
            f"WHEN {_literal(text)} THEN {str(value).upper()}"
            for text, value in BOOLEAN_TEXTS.items()
        )
        return f"CASE lower({raw}) {cases} END"
    if column.transform == "epoch_seconds":
        seconds = (
            f"CASE WHEN regexp_full_match({raw}, '[0-9]+') "
            f"AND TRY_CAST({raw} AS BIGINT) < {MAX_EPOCH_SECONDS} THEN CAST({raw} AS BIGINT) END"
        )
        return f"CAST(make_timestamp({seconds} * 1000000) AS {column.sql_type})"
    if column.transform == "cents":
        cents = f"CASE WHEN regexp_full_match({raw}, '[+-]?[0-9]+') THEN CAST({raw} AS HUGEINT) END"
        return f"TRY_CAST(CAST({cents} AS DECIMAL(36,0)) * 0.01 AS {column.sql_type})"
    if column.type in ("timestamp", "timestamptz"):
        matches = f"regexp_full_match({raw}, {_literal(TIMESTAMP_PATTERN)})"
        parsed = f"TRY_CAST({raw} AS TIMESTAMPTZ)"
        if column.type == "timestamp":
            # Text with a UTC offset is converted to UTC (a plain cast would drop the offset);
            # text without one is read as UTC. Independent of the session's time zone.
            parsed = f"make_timestamp(epoch_us({parsed}))"
        return f"CASE WHEN {matches} THEN {parsed} END"
    cast = f"TRY_CAST({raw} AS {column.sql_type})"
    if column.type == "date":
        return f"CASE WHEN regexp_full_match({raw}, '{DATE_PATTERN}') THEN {cast} END"
    if column.type in ("integer", "bigint"):
        # An integral decimal ('517.0', as pandas writes an integer column with gaps) is the
        # integer it spells; '517.5' is not.
        return f"CASE WHEN regexp_full_match({raw}, '[+-]?[0-9]+([.]0+)?') THEN {cast} END"
    if column.type.startswith("decimal("):
        scale = int(column.type[8:-1].split(",")[1])
        # Trailing zeros past the scale change nothing ('12.990' is 12.99); other digits would.
        digits = f"[0-9]+([.][0-9]{{0,{scale}}}0*)?" if scale else "[0-9]+([.]0*)?"
        return f"CASE WHEN regexp_full_match({raw}, '[+-]?{digits}') THEN {cast} END"
    if column.type == "double":
        number = "[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?"
        return f"CASE WHEN regexp_full_match({raw}, '{number}') THEN {cast} END"
    return cast


Check = tuple[str, str]
NO_REASONS = "CAST([] AS VARCHAR[])"
"""A failure condition and the reason it gives (SQL): the row fails when the condition is TRUE."""


def _reasons(
    contract: Contract, column: Column, bronze_columns: set[str], json_sources: dict[str, str]
) -> list[Check]:
    """The checks on a column, over ``r_<name>`` (its text) and ``<name>`` (its value)."""
    raw, typed, name = f"r_{column.name}", quote(column.name), column.name
    checks: list[Check] = []
    if column.json_path:
        source = column.source or column.name
        text = json_sources[_json_source(column, bronze_columns)]
        invalid = _json_invalid(column, bronze_columns, text)
        checks.append(
            (
                f"{text} IS NOT NULL AND {invalid}",
                f"'{name}: {source} is not valid JSON, so {column.json_path} cannot be read'",
            )
        )
    if contract.is_required(column):
        checks.append((f"{raw} IS NULL", f"'{name}: required value is missing'"))
    if column.type != "varchar":
        checks.append(
            (
                f"{raw} IS NOT NULL AND {typed} IS NULL",
                f"'{name}: cannot parse ''' || {raw} || ''' as {column.type}'",
            )
        )
    if column.min is not None:
        checks.append(
            (
                f"{typed} < {column.min}",
                f"'{name}: ' || CAST({typed} AS VARCHAR) || ' is below the minimum {column.min:g}'",
            )
        )
    if column.max is not None:
        checks.append(
            (
                f"{typed} > {column.max}",
                f"'{name}: ' || CAST({typed} AS VARCHAR) || ' is above the maximum {column.max:g}'",
            )
        )
    if column.accepted_values is not None:
        values = ", ".join(_literal(v) for v in column.accepted_values)
        shown = ", ".join(column.accepted_values).replace("'", "''")
        checks.append(
            (
                f"{typed} IS NOT NULL AND CAST({typed} AS VARCHAR) NOT IN ({values})",
                f"'{name}: ''' || CAST({typed} AS VARCHAR) || ''' is not one of {shown}'",
            )
        )
    if column.pattern is not None:
        checks.append(
            (
                f"{raw} IS NOT NULL AND NOT regexp_full_match({raw}, {_literal(column.pattern)})",
                f"'{name}: ''' || {raw} || ''' does not match the expected pattern'",
            )
        )
    return checks


def _failing(checks: list[Check]) -> str:
    """TRUE when a check fails: cheap to test on every row, unlike building the reasons."""
    return " OR ".join(f"coalesce({cond}, FALSE)" for cond, _ in checks) or "FALSE"


def _listed(checks: list[Check]) -> str:
    """The reasons of the failing checks, in order (build it for failing rows only)."""
    cases = ", ".join(f"CASE WHEN {cond} THEN {reason} END" for cond, reason in checks)
    return f"list_filter([{cases}], x -> x IS NOT NULL)"


BRONZE_ROW = "_bronze_row"
"""A bronze row's identity (DuckDB's ``rowid``): unique in its table and stable within a
transaction. ``(_batch_id, _row_number)`` is not unique: a REST batch of several pages
numbers each page's rows from 1."""


def checked_rows_sql(
    contract: Contract, bronze_columns: set[str], *, rows: str | None = None
) -> str:
    """SELECT over the bronze batches in ``(? , ?]`` with typed columns, ``_failing`` and
    ``_reasons`` (empty unless ``_failing``).

    Parameters: the exclusive lower and inclusive upper ``_batch_id``. ``rows`` (DuckDB only)
    adds :data:`BRONZE_ROW` and a condition on bronze's ``rowid`` (``rowid IN (SELECT …)``,
    ``TRUE`` for all) that narrows the rows read before any is parsed: a pass that needs a
    few rows, or all but a few, parses only those.
    """
    identity = f" {BRONZE_ROW}," if rows is not None else ""
    paths = _json_paths(contract, bronze_columns)
    raw_cols = ",\n  ".join(
        f"{_raw(contract, c, bronze_columns, paths)} AS r_{c.name}" for c in contract.columns
    )
    valid_cols = "".join(f",\n  json_valid({quote(n)}) AS {_valid_flag(n)}" for n in paths)
    extracted_cols = "".join(
        f",\n  CASE WHEN {_valid_flag(n)} THEN json_extract_string({quote(n)}, "
        f"[{', '.join(_literal(p) for p in wanted)}]) END AS {_extracted(n)}"
        for n, wanted in paths.items()
    )
    json_sources = _json_sources(contract, bronze_columns)
    json_cols = "".join(f",\n  {sql} AS {alias}" for sql, alias in json_sources.items())
    typed_cols = ",\n  ".join(
        f"{_typed(c, 'r_' + c.name)} AS {quote(c.name)}" for c in contract.columns
    )
    partition = ""
    if contract.partition:
        by = quote(contract.partition.by)
        if contract.column(contract.partition.by).type == "timestamptz":
            by = f"timezone('UTC', {by})"  # the UTC day, whatever the session's time zone
        partition = f",\n  CAST({by} AS DATE) AS {quote(contract.partition.name)}"
    checks: list[Check] = [("_parse_error IS NOT NULL", "_parse_error")]
    key_checks = list(checks)
    for column in contract.columns:
        column_checks = _reasons(contract, column, bronze_columns, json_sources)
        checks.extend(column_checks)
        if column.name in contract.business_key:
            key_checks.extend(column_checks)
    for rule in contract.rules:
        checks.append(
            (
                f"NOT coalesce(({rule.sql}), TRUE)",
                f"'rule {rule.name} failed: {rule.sql.replace(chr(39), chr(39) * 2)}'",
            )
        )
    parse_error = "_parse_error" if "_parse_error" in bronze_columns else "CAST(NULL AS VARCHAR)"
    failing, reasons = _failing(checks), _listed(checks)  # the reasons: failing rows only
    tombstone = "FALSE"
    if "_tombstone" in bronze_columns:  # a stream's null value: the contract's policy, not a row
        tombstone = "coalesce(_tombstone, FALSE)"
        kept = ("FALSE", NO_REASONS)
        if contract.tombstones == "delete":  # it needs its key, nothing else
            kept = (_failing(key_checks), _listed(key_checks))
        failing = f"CASE WHEN _tombstone THEN {kept[0]} ELSE {failing} END"
        reasons = f"CASE WHEN _tombstone THEN {kept[1]} ELSE {reasons} END"
    change_cols = ""
    if contract.changes is not None:
        # A delete only needs its key; a TRUNCATE has none: neither is checked like a row.
        change_cols = ", op AS _op, commit_lsn AS _commit_lsn, seq AS _seq, commit_ts AS _commit_ts"
        failing = (
            f"CASE WHEN _op = 't' THEN FALSE WHEN _op = 'd' THEN {_failing(key_checks)} "
            f"ELSE {failing} END"
        )
        reasons = (
            f"CASE WHEN _op = 't' THEN {NO_REASONS} WHEN _op = 'd' THEN {_listed(key_checks)} "
            f"ELSE {reasons} END"
        )
    return f"""
WITH batches AS (
  SELECT *{valid_cols}{f", rowid AS {BRONZE_ROW}" if identity else ""}
  FROM {qualified("bronze", contract.source)}
  WHERE _batch_id > ? AND _batch_id <= ?{f" AND {rows}" if identity else ""}
), parsed AS (
  SELECT *{extracted_cols}
  FROM batches
), raw AS (
  SELECT _batch_id, _source, _row_number,{identity} {parse_error} AS _parse_error,
  {tombstone} AS _tombstone{change_cols},
  {raw_cols}{json_cols}{"".join(f", {_valid_flag(n)}" for n in paths)}
  FROM parsed
), typed AS (
  SELECT *,
  {typed_cols}
  FROM raw
), judged AS (
  SELECT *{partition},
  {failing} AS _failing
  FROM typed
)
SELECT *, CASE WHEN _failing THEN {reasons} ELSE {NO_REASONS} END AS _reasons
FROM judged
"""


def raw_json_sql(contract: Contract, bronze_columns: set[str]) -> str:
    """The row's raw text as JSON, for quarantine (computed only for quarantined rows).

    Columns read inside JSON also keep the whole bronze text they were read from (for a
    message that is not JSON, that text is all there is to look at)."""
    fields = [f"{_literal(c.name)}: r_{c.name}" for c in contract.columns]
    seen: set[str] = {c.name for c in contract.columns}
    json_sources = _json_sources(contract, bronze_columns)
    for column in contract.columns:
        source = column.source or column.name
        if column.json_path and source not in seen:
            seen.add(source)
            alias = json_sources[_json_source(column, bronze_columns)]
            fields.append(f"{_literal(source)}: {alias}")
    return f"to_json({{{', '.join(fields)}}})"


def order_by_latest(contract: Contract) -> str:
    """The one ordering of versions of a key (the winner first), for incremental runs and
    rebuilds alike: the greatest ``latest_by``, else the last arrival; or, with
    ``keep: first``, the first arrival."""
    if contract.keep == "first":
        return "_batch_id ASC, _row_number ASC"
    if contract.changes is not None:  # the change log's own order, whatever the arrival
        return "_commit_lsn DESC, _seq DESC"
    parts = [f"{quote(c)} DESC NULLS LAST" for c in contract.latest_by]
    parts += ["_batch_id DESC", "_row_number DESC"]
    return ", ".join(parts)


def silver_columns(contract: Contract) -> dict[str, str]:
    columns = {c.name: c.sql_type for c in contract.columns}
    if contract.partition:
        columns[contract.partition.name] = "DATE"
    if contract.changes is not None:
        columns |= CHANGE_COLUMN_TYPES
        if contract.changes.deletes == "flag":
            columns["_deleted"] = "BOOLEAN"
    if contract.mode == "snapshot" and contract.snapshot_deletes == "flag":
        columns["_deleted"] = "BOOLEAN"
    columns.update({"_batch_id": "BIGINT", "_source": "VARCHAR", "_row_number": "BIGINT"})
    return columns


QUARANTINE_COLUMNS = {
    "_batch_id": "BIGINT",
    "_source": "VARCHAR",
    "_row_number": "BIGINT",
    "_reason": "VARCHAR",
    "_raw": "JSON",
    "_quarantined_at": "TIMESTAMPTZ",
}
