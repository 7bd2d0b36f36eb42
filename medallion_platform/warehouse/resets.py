"""A silver table's reset count: the runs that rebuilt it or removed rows from it.

A ``_batch_id`` watermark sees the rows a run added or replaced, not the ones it deleted
(change-log deletes, tombstones, absence from a snapshot) nor a rebuild from bronze. Whatever
builds incrementally from silver (:mod:`medallion_platform.gold.incremental`) compares this
count with the one it last built from and rebuilds whole when it moved. Kept in
``_meta.positions`` (key ``resets``), written by ``apply_contract`` in its own transaction.
"""

from __future__ import annotations

import duckdb

from medallion_platform.warehouse.warehouse import set_position

RESETS_POSITION = "resets"


def record_reset(conn: duckdb.DuckDBPyConnection, consumer: str, batch_id: int) -> None:
    """Count one run that rebuilt ``consumer`` (``silver.<contract>``) or removed its rows."""
    set_position(conn, consumer, RESETS_POSITION, str(resets(conn, consumer) + 1), batch_id)


def resets(conn: duckdb.DuckDBPyConnection, consumer: str) -> int:
    """How many runs rebuilt ``consumer`` or removed rows from it (0 if none recorded)."""
    row = conn.execute(
        "SELECT position FROM _meta.positions WHERE source = ? AND key = ?",
        [consumer, RESETS_POSITION],
    ).fetchone()
    return int(row[0]) if row else 0
