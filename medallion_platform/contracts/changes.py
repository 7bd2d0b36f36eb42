"""Apply a CDC change log to silver: current state (SCD1) and, optionally, history (SCD2).

The anchor is Databricks' ``APPLY CHANGES``: changes are ordered by their position in the
source's commit order (``_commit_lsn``, ``_seq``), never by arrival, so applying batches one
by one or all at once (a rebuild) gives the same tables. Runs on the contract's checked rows
(``_checked``: typed, with ``_reasons``), inside the caller's transaction.

* Current state: per key, the latest change wins; a delete removes the key (or flags it,
  keeping its last known values); a TRUNCATE removes every row older than itself.
* History (like dbt snapshots): one row per version with ``valid_from`` (the commit time),
  ``valid_to`` (the next version's), ``is_current`` and ``_op``. A delete or truncate closes
  the key's last version with a tombstone row (``_op`` 'd' or 't'). The versions of the keys
  a run touches are recomputed from their stored history plus the new changes, so a version
  arriving late still lands in its place.
"""

from __future__ import annotations

import duckdb

from medallion_platform.contracts.compile import CHANGE_COLUMN_TYPES, silver_columns
from medallion_platform.contracts.spec import Contract
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.warehouse import table_columns

BEFORE_TRUNCATE = (
    "(x._commit_lsn < t._commit_lsn OR (x._commit_lsn = t._commit_lsn AND x._seq < t._seq))"
)


def _key_sql(contract: Contract, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + quote(k) for k in contract.business_key)


def _join(contract: Contract, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote(k)} = {right}.{quote(k)}" for k in contract.business_key)


def merge_changes(conn: duckdb.DuckDBPyConnection, contract: Contract) -> tuple[int, int, int]:
    """Merge the valid changes of ``_checked`` into silver: (inserted, updated, deleted)."""
    assert contract.changes is not None
    silver = qualified("silver", contract.name)
    keys = _key_sql(contract)
    flag = contract.changes.deletes == "flag"
    data_cols = [c for c in silver_columns(contract) if c != "_deleted"]
    cols = ", ".join(quote(c) for c in data_cols)

    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _latest AS
        SELECT {cols} FROM _checked
        WHERE len(_reasons) = 0 AND _op <> 't'
        """
    )
    stored = ", ".join(f"s.{quote(c)}" for c in data_cols)
    # Every version in play per key: the new changes and the stored row. The winner is the
    # latest; with deletes flagged, its values are those of the latest version that is not a
    # delete (a removed key needs none: its winner is either a delete, not kept, or its own
    # latest live version). The key was stored when one of its versions came from silver.
    live_rank = (
        f""",
                row_number() OVER (
                    PARTITION BY {keys} ORDER BY (_op = 'd'), _commit_lsn DESC, _seq DESC
                ) AS _live_rank"""
        if flag
        else ""
    )
    chosen = ", ".join(
        f"w.{quote(c)}"
        if not flag or c in contract.business_key or c in CHANGE_COLUMN_TYPES or c.startswith("_")
        else f"l.{quote(c)}"
        for c in data_cols
    )
    live = f"JOIN ranked l ON {_join(contract, 'w', 'l')} AND l._live_rank = 1" if flag else ""
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _winners AS
        WITH versions AS (
            SELECT {cols}, TRUE AS _is_new FROM _latest
            UNION ALL
            SELECT {stored}, FALSE FROM {silver} s SEMI JOIN _latest n ON {
            _join(contract, "s", "n")
        }
        ), ranked AS (
            SELECT *,
                row_number() OVER (PARTITION BY {keys} ORDER BY _commit_lsn DESC, _seq DESC)
                    AS _rank,
                bool_or(NOT _is_new) OVER (PARTITION BY {keys}) AS _stored{live_rank}
            FROM versions
        )
        SELECT {chosen}, w._op = 'd' AS _deleted, w._is_new AS _is_new,
            w._stored AS _was_stored
        FROM ranked w {live}
        WHERE w._rank = 1
        """
    )
    inserted, updated, removed = conn.execute(
        """SELECT count(*) FILTER (_is_new AND NOT _deleted AND NOT _was_stored),
                  count(*) FILTER (_is_new AND NOT _deleted AND _was_stored),
                  count(*) FILTER (_is_new AND _deleted AND _was_stored)
           FROM _winners"""
    ).fetchone()
    conn.execute(f"DELETE FROM {silver} s USING _latest n WHERE {_join(contract, 's', 'n')}")
    out_cols = ", ".join(quote(c) for c in silver_columns(contract))
    keep = "" if flag else "WHERE NOT _deleted"
    conn.execute(f"INSERT INTO {silver} ({out_cols}) SELECT {out_cols} FROM _winners {keep}")
    # A TRUNCATE applies last: whatever is older than it goes (or is flagged), whether it was
    # stored before this run or merged by it, so one run equals many.
    truncated = 0
    truncate = conn.execute(
        """SELECT _commit_lsn, _seq FROM _checked WHERE _op = 't' AND len(_reasons) = 0
           ORDER BY _commit_lsn DESC, _seq DESC LIMIT 1"""
    ).fetchone()
    if truncate is not None:
        before = BEFORE_TRUNCATE.replace("t._commit_lsn", "?").replace("t._seq", "?")
        params = [truncate[0], truncate[0], truncate[1]]
        live = "" if not flag else "AND NOT _deleted"
        truncated = conn.execute(
            f"SELECT count(*) FROM {silver} x WHERE {before} {live}", params
        ).fetchone()[0]
        if flag:  # flagged like deletes, keeping their last values
            conn.execute(
                f"UPDATE {silver} x SET _deleted = TRUE, _op = 't', _commit_lsn = ?, _seq = ? "
                f"WHERE {before} {live}",
                [truncate[0], truncate[1], *params],
            )
        else:
            conn.execute(f"DELETE FROM {silver} x WHERE {before}", params)
    return inserted, updated, removed + truncated


def history_columns(contract: Contract) -> dict[str, str]:
    columns = {c.name: c.sql_type for c in contract.columns}
    columns |= {
        "valid_from": "TIMESTAMPTZ",
        "valid_to": "TIMESTAMPTZ",
        "is_current": "BOOLEAN",
        **CHANGE_COLUMN_TYPES,
        "_batch_id": "BIGINT",
        "_source": "VARCHAR",
    }
    return columns


def update_history(conn: duckdb.DuckDBPyConnection, contract: Contract, *, rebuild: bool) -> int:
    """Add the new versions of ``_checked`` to the SCD2 table; returns versions added."""
    assert contract.changes is not None and contract.changes.history is not None
    name = contract.changes.history
    history = qualified("silver", name)
    columns = history_columns(contract)
    existing = table_columns(conn, "silver", name)
    if [c.lower() for c in existing] != list(columns) or rebuild:
        ddl = ", ".join(f"{quote(c)} {t}" for c, t in columns.items())
        conn.execute(f"CREATE OR REPLACE TABLE {history} ({ddl})")
    keys = _key_sql(contract)
    values = ", ".join(quote(c.name) for c in contract.columns)
    nulls = ", ".join(
        f"x.{quote(c.name)}" if c.name in contract.business_key else f"NULL AS {quote(c.name)}"
        for c in contract.columns
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _versions AS
        SELECT {values}, _op, _commit_lsn, _seq, _commit_ts, _batch_id, _source
        FROM _checked WHERE len(_reasons) = 0 AND _op <> 't'
        """
    )
    # A TRUNCATE ends every key that was live just before it: a tombstone per key.
    conn.execute(
        f"""
        INSERT INTO _versions
        SELECT {nulls}, 't', t._commit_lsn, t._seq, t._commit_ts, t._batch_id, t._source
        FROM (SELECT * FROM _checked WHERE len(_reasons) = 0 AND _op = 't') t
        JOIN (
            SELECT {keys}, _op, _commit_lsn, _seq FROM {history}
            UNION ALL SELECT {keys}, _op, _commit_lsn, _seq FROM _versions
        ) x ON {BEFORE_TRUNCATE}
        QUALIFY row_number() OVER (
            PARTITION BY t._commit_lsn, t._seq, {_key_sql(contract, "x")}
            ORDER BY x._commit_lsn DESC, x._seq DESC
        ) = 1 AND x._op NOT IN ('d', 't')
        """
    )
    added = conn.execute("SELECT count(*) FROM _versions").fetchone()[0]
    stored = ", ".join(
        quote(c) for c in columns if c not in ("valid_from", "valid_to", "is_current")
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _history_keys AS
        SELECT {stored}
        FROM {history} h SEMI JOIN _versions v ON {_join(contract, "h", "v")}
        UNION ALL
        SELECT {stored} FROM _versions
        """
    )
    conn.execute(f"DELETE FROM {history} h USING _versions v WHERE {_join(contract, 'h', 'v')}")
    order = "_commit_lsn, _seq"
    conn.execute(
        f"""
        INSERT INTO {history} ({", ".join(quote(c) for c in columns)})
        SELECT {values},
            _commit_ts AS valid_from,
            lead(_commit_ts) OVER w AS valid_to,
            lead(_commit_lsn) OVER w IS NULL AND _op NOT IN ('d', 't') AS is_current,
            _op, _commit_lsn, _seq, _commit_ts, _batch_id, _source
        FROM _history_keys
        WINDOW w AS (PARTITION BY {keys} ORDER BY {order})
        ORDER BY {keys}, {order}
        """
    )
    for temp in ("_versions", "_history_keys"):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
    return added
