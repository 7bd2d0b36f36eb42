"""Apply a contract: merge new bronze batches into silver, quarantine what fails.

One transaction per run: quarantine rows, silver upserts and the new high-water mark commit
together, so a crash leaves silver exactly as it was. Versions of a key are ordered by one
rule (:func:`order_by_latest`), whether they arrive in one batch or many, which is why a
rebuild from bronze gives the same table as any sequence of incremental runs.
"""

from __future__ import annotations

import duckdb
from pydantic import BaseModel

from medallion_platform.contracts.changes import merge_changes, update_history
from medallion_platform.contracts.compile import (
    BRONZE_ROW,
    QUARANTINE_COLUMNS,
    checked_rows_sql,
    order_by_latest,
    raw_json_sql,
    silver_columns,
)
from medallion_platform.contracts.snapshots import merge_snapshot, quarantine_once_sql
from medallion_platform.contracts.spec import Contract
from medallion_platform.contracts.tombstones import apply_tombstones
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.memory import MemoryBound, memory_bound
from medallion_platform.warehouse.resets import record_reset
from medallion_platform.warehouse.warehouse import (
    ensure_layout,
    get_watermark,
    set_position,
    set_watermark,
    table_columns,
    table_exists,
)


class SilverRunStats(BaseModel):
    """What one run of a contract did; ``rows_in = valid + quarantined + already_quarantined
    (+ tombstones)``."""

    table: str
    rebuilt: bool
    from_batch_id: int
    to_batch_id: int
    rows_in: int
    valid: int
    quarantined: int
    inserted: int
    updated: int
    superseded: int
    reasons: dict[str, int]
    deleted: int = 0
    """Keys removed (or flagged) by deletes and truncates of a change log, by tombstones, or
    by their absence from the newest snapshot of a snapshot feed."""
    already_quarantined: int = 0
    """Invalid rows a snapshot feed sent again unchanged: in quarantine already, not added."""
    unchanged: int = 0
    """Valid rows of a snapshot feed whose key already had these values: silver untouched."""
    tombstones: int | None = None
    """Stream tombstones read (not quarantined); None when the source is not a stream."""
    rows_by_day: dict[str, int] = {}
    """New or changed rows per day written, for a partitioned contract (the days touched)."""


def _columns_ddl(columns: dict[str, str]) -> str:
    return ", ".join(f"{quote(n)} {t}" for n, t in columns.items())


def _ensure_tables(conn: duckdb.DuckDBPyConnection, contract: Contract) -> bool:
    """Create silver/quarantine tables; True if silver had to be (re)created for a new schema."""
    expected = silver_columns(contract)
    silver = qualified("silver", contract.name)
    recreated = False
    if table_columns(conn, "silver", contract.name) != {
        name: _normalized_type(t) for name, t in expected.items()
    }:
        recreated = table_exists(conn, "silver", contract.name)
        conn.execute(f"CREATE OR REPLACE TABLE {silver} ({_columns_ddl(expected)})")
    if not table_exists(conn, "quarantine", contract.name):
        conn.execute(
            f"CREATE TABLE {qualified('quarantine', contract.name)} "
            f"({_columns_ddl(QUARANTINE_COLUMNS)})"
        )
    return recreated


def _normalized_type(sql_type: str) -> str:
    """How information_schema spells a declared type, to detect contract changes."""
    return {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE", "INTEGER": "INTEGER"}.get(sql_type, sql_type)


def _merge_latest(
    conn: duckdb.DuckDBPyConnection, contract: Contract, silver: str
) -> tuple[int, int, dict[str, int]]:
    """Keep the winning version per key (latest, or first for events): (inserted, updated,
    rows by day)."""
    keys = ", ".join(quote(k) for k in contract.business_key)
    cols = ", ".join(quote(c) for c in silver_columns(contract))
    join = " AND ".join(f"s.{quote(k)} = n.{quote(k)}" for k in contract.business_key)
    order = order_by_latest(contract)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _latest AS
        SELECT {cols} FROM _checked WHERE len(_reasons) = 0
        QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1
        """
    )
    # Temp tables live in memory until dropped: each goes as soon as it is no longer read,
    # so the peak holds two of them, not three.
    conn.execute("DROP TABLE _checked")
    latest = conn.execute("SELECT count(*) FROM _latest").fetchone()[0]
    if contract.keep == "first":
        # Immutable events: a key already in silver keeps its row, so only new keys are
        # appended and no stored row (or day) is rewritten.
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _winners AS
            SELECT n.*, TRUE AS _is_new FROM _latest n ANTI JOIN {silver} s ON {join}
            """
        )
        existing = latest - conn.execute("SELECT count(*) FROM _winners").fetchone()[0]
        updated = 0
    else:
        # One probe of the stored table: each key's winner, and whether a stored row competed
        # (counted here instead of by two more joins against the whole silver table).
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _winners AS
            SELECT *, bool_or(NOT _is_new) OVER (PARTITION BY {keys}) AS _stored FROM (
                SELECT {cols}, TRUE AS _is_new FROM _latest
                UNION ALL
                SELECT {", ".join("s." + quote(c) for c in silver_columns(contract))}, FALSE
                FROM {silver} s SEMI JOIN _latest n ON {join}
            )
            QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1
            """
        )
        existing, updated = conn.execute(
            "SELECT count(*) FILTER (WHERE _stored), count(*) FILTER (WHERE _stored AND _is_new) "
            "FROM _winners"
        ).fetchone()
        conn.execute(f"DELETE FROM {silver} s USING _latest n WHERE {join}")
    conn.execute("DROP TABLE _latest")
    rows_by_day: dict[str, int] = {}
    if contract.partition:
        day = quote(contract.partition.name)
        rows_by_day = {
            str(d): n
            for d, n in conn.execute(
                f"SELECT {day}, count(*) FROM _winners WHERE _is_new GROUP BY 1 ORDER BY 1"
            ).fetchall()
        }
        # Rows of a day stored together: DuckDB's min/max zone maps then skip other days.
        conn.execute(f"INSERT INTO {silver} ({cols}) SELECT {cols} FROM _winners ORDER BY {day}")
    else:
        conn.execute(f"INSERT INTO {silver} ({cols}) SELECT {cols} FROM _winners")
    return latest - existing, updated, rows_by_day


def _streams(
    conn: duckdb.DuckDBPyConnection, contract: Contract, silver: str, bronze_cols: set[str]
) -> bool:
    """Whether the valid rows can go into silver in one streaming ``INSERT … SELECT``.

    They can when no stored row competes with them: events (``keep: first`` appends new keys
    only), or a silver table that is empty (a first run or a rebuild). Change logs, snapshot
    feeds, tombstones that delete and a merge into stored versions go through ``_checked``,
    which holds only the run's new rows (and spills past DuckDB's ``memory_limit``)."""
    if contract.changes is not None or contract.mode == "snapshot":
        return False
    if contract.tombstones == "delete" and "_tombstone" in bronze_cols:
        return False
    if contract.keep == "first":
        return True
    return conn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {silver})").fetchone()[0]


def _exclude_streamed(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    bronze_cols: set[str],
    params: list[int],
) -> None:
    """``_excluded``: the rows the streaming INSERT leaves out, by bronze row, from one pass
    over the run's rows: each failing row (``_failing``), and each valid version of a key that
    does not win; then ``_failed``, the failing rows checked again in full (only they are
    parsed again).

    The window that picks the winners carries only the key, the ordering and the identity:
    over every silver column it held the whole run's rows (1.3 GiB at 5M events). The
    excluded rows are few (duplicates and failures), so the INSERT reads bronze without them
    through a small hash table instead of joining the winners back."""
    keys = ", ".join(quote(k) for k in contract.business_key)
    checked = checked_rows_sql(contract, bronze_cols, rows="TRUE")
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _excluded AS
        SELECT {BRONZE_ROW}, _fails AS _failing
        FROM (SELECT *, len(_reasons) > 0 AS _fails FROM ({checked}))
        QUALIFY _fails OR (NOT _tombstone AND row_number() OVER (
            PARTITION BY _fails OR _tombstone, {keys} ORDER BY {order_by_latest(contract)}
        ) > 1)
        """,
        params,
    )
    failing = checked_rows_sql(
        contract,
        bronze_cols,
        rows=f"rowid IN (SELECT {BRONZE_ROW} FROM _excluded WHERE _failing)",
    )
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _failed AS "
        f"SELECT * FROM ({failing}) WHERE len(_reasons) > 0",
        params,
    )


def _insert_streamed(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    silver: str,
    bronze_cols: set[str],
    params: list[int],
) -> tuple[int, dict[str, int]]:
    """The winning version of each key, straight from bronze into silver: (inserted, rows by
    day). Bronze is read without ``_excluded``, so only winners are parsed and typed, and
    none is checked again; nothing is materialized but what DuckDB's sort holds (it spills)."""
    cols = ", ".join(quote(c) for c in silver_columns(contract))
    join = " AND ".join(f"s.{quote(k)} = n.{quote(k)}" for k in contract.business_key)
    # Only a key silver does not hold yet (keep: first); with latest, silver is empty here.
    anti = f"ANTI JOIN {silver} s ON {join}" if contract.keep == "first" else ""
    day = quote(contract.partition.name) if contract.partition else None
    winners = checked_rows_sql(
        contract, bronze_cols, rows=f"rowid NOT IN (SELECT {BRONZE_ROW} FROM _excluded)"
    )
    inserted = conn.execute(
        f"""
        INSERT INTO {silver} ({cols})
        SELECT {", ".join("n." + quote(c) for c in silver_columns(contract))}
        FROM ({winners}) n {anti}
        WHERE NOT n._tombstone
        {f"ORDER BY n.{day}" if day else ""}
        """,
        params,
    ).fetchone()[0]
    rows_by_day: dict[str, int] = {}
    if day:  # rows of a day stored together: DuckDB's min/max zone maps then skip other days
        rows_by_day = {
            str(d): n
            for d, n in conn.execute(
                f"SELECT {day}, count(*) FROM {silver} "
                "WHERE _batch_id > ? AND _batch_id <= ? GROUP BY 1 ORDER BY 1",
                params,
            ).fetchall()
        }
    return inserted, rows_by_day


def _counts(
    conn: duckdb.DuckDBPyConnection, contract: Contract, bronze_cols: set[str], low: int, high: int
) -> tuple[int, int, int, int | None]:
    """(rows in, failing, valid rows, valid tombstones or None without a ``_tombstone``
    column): counted from bronze and ``_failed``, so valid rows need not be kept."""
    tombstone = "coalesce(_tombstone, FALSE)" if "_tombstone" in bronze_cols else "FALSE"
    rows_in, tombstones_in = conn.execute(
        f"SELECT count(*), count(*) FILTER ({tombstone}) "
        f"FROM {qualified('bronze', contract.source)} WHERE _batch_id > ? AND _batch_id <= ?",
        [low, high],
    ).fetchone()
    failing, failing_tombstones = conn.execute(
        "SELECT count(*), count(*) FILTER (_tombstone) FROM _failed"
    ).fetchone()
    tombstones = tombstones_in - failing_tombstones
    valid = rows_in - failing - tombstones
    return rows_in, failing, valid, tombstones if "_tombstone" in bronze_cols else None


def apply_contract(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    *,
    rebuild: bool = False,
    run_id: str | None = None,
    memory: MemoryBound | None = None,
) -> SilverRunStats:
    """Merge bronze batches newer than silver's watermark; ``rebuild`` starts from nothing.

    Call inside a transaction (``Warehouse.transaction()``): the caller owns the commit.
    ``memory`` (``Warehouse.silver_memory``) lowers DuckDB's ``memory_limit`` for the whole
    run and restores the warehouse's configured limit afterwards, also when the run fails:
    every path (the streaming INSERT's sort by day, the windows, the temp tables of change
    logs and snapshots) spills past it, and the blocks DuckDB caches as it reads bronze and
    writes silver are evicted instead of growing to the warehouse's limit.
    """
    if memory is None:
        return _apply(conn, contract, rebuild=rebuild, run_id=run_id)
    with memory_bound(conn, *memory, what=f"silver.{contract.name}"):
        return _apply(conn, contract, rebuild=rebuild, run_id=run_id)


def _apply(
    conn: duckdb.DuckDBPyConnection, contract: Contract, *, rebuild: bool, run_id: str | None
) -> SilverRunStats:
    ensure_layout(conn)
    consumer = f"silver.{contract.name}"
    silver = qualified("silver", contract.name)
    quarantine = qualified("quarantine", contract.name)
    bronze_cols = set(table_columns(conn, "bronze", contract.source))
    if not bronze_cols:
        raise LookupError(
            f"contract {contract.name}: bronze.{contract.source} does not exist yet; "
            "load its source first"
        )

    if _ensure_tables(conn, contract):
        rebuild = True  # the contract's columns changed: silver is rebuilt from bronze
    fingerprint = contract.fingerprint()
    stored = conn.execute(
        "SELECT position FROM _meta.positions WHERE source = ? AND key = 'contract'", [consumer]
    ).fetchone()
    if stored is not None and stored[0] != fingerprint:
        rebuild = True  # a rule, constraint, alias or key changed: earlier verdicts are stale
    if rebuild:
        conn.execute(f"DELETE FROM {silver}")
        conn.execute(f"DELETE FROM {quarantine}")
        set_watermark(conn, consumer, 0)

    low = get_watermark(conn, consumer)
    high = conn.execute(
        f"SELECT coalesce(max(_batch_id), ?) FROM {qualified('bronze', contract.source)}", [low]
    ).fetchone()[0]

    streamed = _streams(conn, contract, silver, bronze_cols)
    if streamed:
        # Only the failing rows and the losing versions are kept (few), by identity; the
        # winners stream into silver below.
        _exclude_streamed(conn, contract, bronze_cols, [low, high])
    else:
        checked = checked_rows_sql(contract, bronze_cols)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _checked AS {checked}", [low, high])
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE _failed AS SELECT * FROM _checked WHERE len(_reasons) > 0"
        )
    failed = f"""
        SELECT _batch_id, _source, _row_number, array_to_string(_reasons, '; ') AS _reason,
               {raw_json_sql(contract, bronze_cols)} AS _raw, now() AS _quarantined_at
        FROM _failed
    """
    if contract.mode == "snapshot":  # a bad row sent again in the next snapshot: once
        failed = quarantine_once_sql(contract, failed)
    added = conn.execute(f"INSERT INTO {quarantine} BY NAME {failed}").fetchone()[0]
    rows_in, quarantined, valid, tombstones = _counts(conn, contract, bronze_cols, low, high)
    reasons = dict(
        conn.execute(
            """SELECT regexp_extract(r, '^(row \\d+: |line \\d+: )?([a-z0-9_ ]+)', 2) AS kind,
                      count(*) FROM (SELECT unnest(_reasons) AS r FROM _failed)
               GROUP BY ALL ORDER BY 2 DESC"""
        ).fetchall()
    )
    deleted = unchanged = updated = 0
    rows_by_day: dict[str, int] = {}
    if streamed:
        inserted, rows_by_day = _insert_streamed(conn, contract, silver, bronze_cols, [low, high])
    else:
        deleted = apply_tombstones(conn, contract)
        if contract.changes is not None:
            inserted, updated, deleted = merge_changes(conn, contract)
            if contract.changes.history:
                update_history(conn, contract, rebuild=rebuild)
        elif contract.mode == "snapshot":
            inserted, updated, unchanged, deleted = merge_snapshot(conn, contract)
        else:
            inserted, updated, rows_by_day = _merge_latest(conn, contract, silver)

    stats = SilverRunStats(
        table=contract.name,
        rebuilt=rebuild,
        from_batch_id=low,
        to_batch_id=high,
        rows_in=rows_in,
        valid=valid,
        quarantined=added,
        already_quarantined=quarantined - added,
        unchanged=unchanged,
        inserted=inserted,
        updated=updated,
        superseded=valid - inserted,
        deleted=deleted,
        tombstones=tombstones,
        reasons=reasons,
        rows_by_day=rows_by_day,
    )
    set_watermark(conn, consumer, high)
    set_position(conn, consumer, "contract", fingerprint, high)
    if rebuild or deleted:  # invisible to a _batch_id watermark: incremental gold rebuilds
        record_reset(conn, consumer, high)
    conn.execute(
        "INSERT INTO _meta.silver_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [
            contract.name,
            run_id,
            low,
            high,
            rebuild,
            rows_in,
            valid,
            quarantined,
            inserted,
            updated,
            stats.superseded,
        ],
    )
    for temp in ("_checked", "_failed", "_excluded", "_latest", "_winners"):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
    return stats
