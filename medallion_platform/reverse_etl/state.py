"""What the sync engine keeps in the warehouse, under ``_meta``.

- ``sync_state``: per sync and identity, the hash of the record as last *confirmed* by the
  destination, and the destination's id for it. The diff of the next run is computed against
  it: an identity not in it is an add, a different hash a change, an identity in it but gone
  from the source a removal (mirror mode). A record the destination rejected keeps its old
  hash (or stays absent), so it is simply planned again next run.
- ``sync_runs``: one row per run, inserted when it starts (``finished_at`` NULL while it runs,
  and for ever if the process died) and updated after every batch, so a crashed run shows how
  far it got.
- ``sync_row_outcomes``: what happened to each record sent (``synced``/``failed``), each row
  ``skipped`` (NULL or duplicated identity; not found in ``update_only`` mode), and for a dry
  run a sample of the plan (``planned``), with the destination's own error text.

No Dagster import.
"""

from __future__ import annotations

from typing import Any

import duckdb

ACTIONS = ("add", "change", "remove")
STATUSES = ("synced", "failed", "skipped", "planned")

DDL = """
CREATE SCHEMA IF NOT EXISTS _meta;
CREATE TABLE IF NOT EXISTS _meta.sync_state (
    sync VARCHAR NOT NULL,
    identity VARCHAR NOT NULL,
    row_hash VARCHAR NOT NULL,
    destination_id VARCHAR,
    synced_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sync, identity)
);
CREATE TABLE IF NOT EXISTS _meta.sync_runs (
    sync VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    dry_run BOOLEAN NOT NULL,
    added BIGINT NOT NULL DEFAULT 0,
    changed BIGINT NOT NULL DEFAULT 0,
    removed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    api_calls BIGINT NOT NULL DEFAULT 0,
    retries BIGINT NOT NULL DEFAULT 0,
    rate_limited BIGINT NOT NULL DEFAULT 0,
    duration_s DOUBLE,
    error VARCHAR,
    source_rows BIGINT,
    unchanged BIGINT
);
CREATE TABLE IF NOT EXISTS _meta.sync_row_outcomes (
    sync VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    identity VARCHAR,
    action VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    error VARCHAR,
    destination_id VARCHAR,
    "at" TIMESTAMPTZ NOT NULL  -- quoted: AT is a keyword
);
"""

RUN_COUNTERS = (
    "added",
    "changed",
    "removed",
    "failed",
    "skipped",
    "api_calls",
    "retries",
    "rate_limited",
)


def ensure_sync_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the three tables if they are missing (idempotent)."""
    conn.execute(DDL)


def unique_run_id(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str) -> str:
    """``run_id``, or ``run_id:2``, ``:3``... when ``sync`` already ran under it (a retried
    Dagster step runs in the same Dagster run)."""
    taken = {
        row[0]
        for row in conn.execute(
            "SELECT run_id FROM _meta.sync_runs WHERE sync = ? AND (run_id = ? OR run_id LIKE ?)",
            [sync, run_id, f"{run_id}:%"],
        ).fetchall()
    }
    candidate, n = run_id, 1
    while candidate in taken:
        n += 1
        candidate = f"{run_id}:{n}"
    return candidate


def start_run(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str, *, dry_run: bool) -> None:
    conn.execute(
        "INSERT INTO _meta.sync_runs (sync, run_id, started_at, dry_run) VALUES (?, ?, now(), ?)",
        [sync, run_id, dry_run],
    )


def update_run(
    conn: duckdb.DuckDBPyConnection,
    sync: str,
    run_id: str,
    *,
    finished: bool = False,
    **values: Any,
) -> None:
    """Set counters (and ``duration_s``, ``error``, ``source_rows``, ``unchanged``) of a run;
    ``finished`` stamps ``finished_at``."""
    allowed = {*RUN_COUNTERS, "duration_s", "error", "source_rows", "unchanged"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"not sync_runs columns: {sorted(unknown)}")
    assignments = [f"{name} = ?" for name in values]
    if finished:
        assignments.append("finished_at = now()")
    if not assignments:
        return
    conn.execute(
        f"UPDATE _meta.sync_runs SET {', '.join(assignments)} WHERE sync = ? AND run_id = ?",
        [*values.values(), sync, run_id],
    )


def record_outcomes(
    conn: duckdb.DuckDBPyConnection,
    sync: str,
    run_id: str,
    rows: list[tuple[str | None, str, str, str | None, str | None]],
) -> None:
    """Append ``(identity, action, status, error, destination_id)`` rows, in one statement."""
    if not rows:
        return
    identities, actions, statuses, errors, ids = (
        list(column) for column in zip(*rows, strict=True)
    )
    conn.execute(
        """
        INSERT INTO _meta.sync_row_outcomes
        SELECT $sync, $run_id, o.identity, o.action, o.status, o.error, o.destination_id, now()
        FROM (
            SELECT unnest($identities) AS identity, unnest($actions) AS action,
                   unnest($statuses) AS status, unnest($errors) AS error,
                   unnest($ids) AS destination_id
        ) AS o
        """,
        {
            "sync": sync,
            "run_id": run_id,
            "identities": identities,
            "actions": actions,
            "statuses": statuses,
            "errors": errors,
            "ids": ids,
        },
    )


def confirm(
    conn: duckdb.DuckDBPyConnection,
    sync: str,
    rows: list[tuple[str, str, str | None]],
) -> None:
    """The destination confirmed ``(identity, row_hash, destination_id)``: remember them."""
    if not rows:
        return
    identities, hashes, ids = (list(column) for column in zip(*rows, strict=True))
    conn.execute(
        """
        INSERT OR REPLACE INTO _meta.sync_state
        SELECT $sync, c.identity, c.row_hash, c.destination_id, now()
        FROM (
            SELECT unnest($identities) AS identity, unnest($hashes) AS row_hash,
                   unnest($ids) AS destination_id
        ) AS c
        """,
        {"sync": sync, "identities": identities, "hashes": hashes, "ids": ids},
    )


def forget(conn: duckdb.DuckDBPyConnection, sync: str, identities: list[str]) -> None:
    """The destination confirmed these records removed: they are no longer synced."""
    if identities:
        conn.execute(
            "DELETE FROM _meta.sync_state WHERE sync = ? AND identity IN (SELECT unnest(?))",
            [sync, identities],
        )


def synced_count(conn: duckdb.DuckDBPyConnection, sync: str) -> int:
    row = conn.execute("SELECT count(*) FROM _meta.sync_state WHERE sync = ?", [sync]).fetchone()
    return int(row[0]) if row else 0


def reset(conn: duckdb.DuckDBPyConnection, sync: str) -> int:
    """Forget what ``sync`` synced, so the next run resends every row (a full resync)."""
    count = synced_count(conn, sync)
    conn.execute("DELETE FROM _meta.sync_state WHERE sync = ?", [sync])
    return count


def latest_run(
    conn: duckdb.DuckDBPyConnection, sync: str, *, dry_run: bool | None = False
) -> dict[str, Any] | None:
    """The newest run of ``sync`` (real runs by default) as a column -> value dict."""
    where = "" if dry_run is None else " AND dry_run = ?"
    params: list[Any] = [sync] + ([] if dry_run is None else [dry_run])
    cursor = conn.execute(
        f"SELECT * FROM _meta.sync_runs WHERE sync = ?{where} ORDER BY started_at DESC LIMIT 1",
        params,
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))
