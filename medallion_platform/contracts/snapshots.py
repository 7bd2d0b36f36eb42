"""Snapshot feeds: each file is the whole table again, so silver applies only what changed.

A feed whose files are full snapshots (``mode: snapshot`` on the contract) differs from an
incremental one in three ways, all decided here on the contract's checked rows (``_checked``)
inside the caller's transaction:

* A key whose values did not change is left alone: not counted as updated, not rewritten,
  and its lineage (``_batch_id``, ``_source``) stays that of the version that first delivered
  those values. (Versions of a key, the stored row among them, are ordered as always —
  ``latest_by``, then arrival — and the lineage is the first of the last run of equal values,
  so one run over many snapshots, a rebuild, gives the same table as many runs.)
* Keys missing from the newest snapshot of the run are deleted: flagged ``_deleted`` (with
  their last values) or removed, as declared. A key whose row in that snapshot is invalid is
  still present (its row is in quarantine), so it is not deleted. A file without data rows
  deletes nothing: an empty export is more often a failed one than an emptied table.
* An invalid row delivered again unchanged (same raw values, same reasons) is quarantined
  once, not once per snapshot (see :func:`quarantine_once_sql`).
"""

from __future__ import annotations

import duckdb

from medallion_platform.contracts.compile import order_by_latest, silver_columns
from medallion_platform.contracts.spec import Contract
from medallion_platform.warehouse.identifiers import qualified, quote


def _join(contract: Contract, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote(k)} = {right}.{quote(k)}" for k in contract.business_key)


def quarantine_once_sql(contract: Contract, rows: str) -> str:
    """Keep, of the quarantine rows ``rows`` (a SELECT), the first copy of each (raw values,
    reason) and none already in quarantine. A reason's row number is not compared: the same
    bad row may sit elsewhere in the next snapshot."""
    quarantine = qualified("quarantine", contract.name)
    reason = "regexp_replace({}._reason, '(row|line) [0-9]+: ', '', 'g')"
    return f"""
        SELECT x.* FROM ({rows}) x
        WHERE NOT EXISTS (
            SELECT 1 FROM {quarantine} q
            WHERE {reason.format("q")} = {reason.format("x")}
              AND CAST(q._raw AS VARCHAR) = CAST(x._raw AS VARCHAR)
        )
        QUALIFY row_number() OVER (
            PARTITION BY CAST(x._raw AS VARCHAR), {reason.format("x")}
            ORDER BY x._batch_id, x._row_number
        ) = 1
    """


def merge_snapshot(
    conn: duckdb.DuckDBPyConnection, contract: Contract
) -> tuple[int, int, int, int]:
    """Merge ``_checked`` (valid rows of one or more snapshots) into silver; returns
    (inserted, updated, unchanged, deleted)."""
    silver = qualified("silver", contract.name)
    keys = ", ".join(quote(k) for k in contract.business_key)
    columns = [c for c in silver_columns(contract) if c != "_deleted"]
    data = [c.name for c in contract.columns]
    if contract.partition:
        data.append(contract.partition.name)
    cols = ", ".join(quote(c) for c in columns)
    flag = contract.snapshot_deletes == "flag"
    newest = conn.execute("SELECT max(_batch_id) FROM _checked").fetchone()[0]
    if newest is None:
        return 0, 0, 0, 0
    # The keys the newest snapshot names (valid or not: an invalid row is still present).
    key_ok = " AND ".join(f"{quote(k)} IS NOT NULL" for k in contract.business_key)
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _present AS SELECT DISTINCT {keys} FROM _checked "
        f"WHERE _batch_id = ? AND {key_ok}",
        [newest],
    )
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _new AS SELECT {cols} FROM _checked WHERE len(_reasons) = 0"
    )
    descending = order_by_latest(contract)
    ascending = descending.replace(" DESC NULLS LAST", " ASC NULLS FIRST").replace(" DESC", " ASC")
    values = f"hash({', '.join(quote(c) for c in data)})"
    stored = ", ".join(f"s.{quote(c)}" for c in columns)
    deleted_col = "s._deleted" if flag else "FALSE"
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _final AS
        WITH versions AS (
            SELECT {cols}, FALSE AS _stored, FALSE AS _was_deleted FROM _new
            UNION ALL
            SELECT {stored}, TRUE, {deleted_col}
            FROM {silver} s SEMI JOIN _new n ON {_join(contract, "s", "n")}
        ), ordered AS (
            SELECT *, {values} AS _values,
                row_number() OVER (PARTITION BY {keys} ORDER BY {ascending}) AS _pos
            FROM versions
        ), marked AS (
            SELECT *,
                last_value(_values) OVER w AS _final_values,
                max(_pos) OVER w AS _last_pos
            FROM ordered
            WINDOW w AS (PARTITION BY {keys} ORDER BY _pos
                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        ), run_start AS (
            SELECT {keys}, coalesce(max(_pos) FILTER (_values <> _final_values), 0) AS _break
            FROM marked GROUP BY ALL
        )
        SELECT w.*, l._batch_id AS _first_batch, l._source AS _first_source,
               l._row_number AS _first_row,
               s._stored_values, s._stored_deleted
        FROM marked w
        JOIN run_start r ON {_join(contract, "w", "r")}
        JOIN marked l ON {_join(contract, "l", "w")} AND l._pos = r._break + 1
        LEFT JOIN (
            SELECT {keys}, _values AS _stored_values, _was_deleted AS _stored_deleted
            FROM ordered WHERE _stored
        ) s ON {_join(contract, "s", "w")}
        WHERE w._pos = w._last_pos
        """
    )
    inserted, updated, unchanged = conn.execute(
        """SELECT count(*) FILTER (_stored_values IS NULL),
                  count(*) FILTER (_stored_values IS NOT NULL
                                   AND (_stored_values <> _values OR _stored_deleted)),
                  count(*) FILTER (_stored_values = _values AND NOT _stored_deleted)
           FROM _final"""
    ).fetchone()
    conn.execute(
        "DELETE FROM _final WHERE _stored_values = _values AND NOT _stored_deleted"
    )  # unchanged keys: silver keeps their row as it is
    conn.execute(f"DELETE FROM {silver} s USING _final f WHERE {_join(contract, 's', 'f')}")
    lineage = {"_batch_id": "_first_batch", "_source": "_first_source", "_row_number": "_first_row"}
    select = ", ".join(f"{lineage.get(c, quote(c))} AS {quote(c)}" for c in columns)
    out = cols + (", _deleted" if flag else "")
    conn.execute(
        f"INSERT INTO {silver} ({out}) SELECT {select}{', FALSE' if flag else ''} FROM _final"
    )
    # Keys the newest snapshot no longer names.
    gone = f"NOT EXISTS (SELECT 1 FROM _present p WHERE {_join(contract, 'p', 's')})"
    if flag:
        deleted = conn.execute(
            f"SELECT count(*) FROM {silver} s WHERE NOT _deleted AND {gone}"
        ).fetchone()[0]
        conn.execute(f"UPDATE {silver} s SET _deleted = TRUE WHERE NOT _deleted AND {gone}")
    else:
        deleted = conn.execute(f"SELECT count(*) FROM {silver} s WHERE {gone}").fetchone()[0]
        conn.execute(f"DELETE FROM {silver} s WHERE {gone}")
    for temp in ("_present", "_new", "_final"):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
    return inserted, updated, unchanged, deleted
