"""The warehouse: one DuckDB file, one place that opens it.

Every write in the platform goes through :class:`Warehouse`, so the single-writer rule of
DuckDB, the lock wait, memory settings and transactions are decided here and nowhere else.
Moving silver and gold to another engine means replacing this module, not the assets.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from medallion_platform.settings import duckdb_memory_limit, duckdb_silver_memory_limit
from medallion_platform.warehouse.identifiers import qualified, quote, validate_identifier
from medallion_platform.warehouse.memory import MemoryBound, size_bytes
from medallion_platform.warehouse.writer_lock import Holder, WarehouseBusyError, writer_lock

LAYER_SCHEMAS = ("bronze", "silver", "gold", "quarantine", "_meta")

_META_DDL = """
CREATE SEQUENCE IF NOT EXISTS _meta.batch_id_seq START 1;
CREATE TABLE IF NOT EXISTS _meta.batches (
    batch_id BIGINT PRIMARY KEY,
    source VARCHAR NOT NULL,
    run_id VARCHAR,
    started_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS _meta.files (
    feed VARCHAR NOT NULL,
    file_hash VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    rows BIGINT,
    batch_id BIGINT NOT NULL,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    stored_at VARCHAR,
    registered_at TIMESTAMPTZ NOT NULL,
    columns VARCHAR
);
CREATE INDEX IF NOT EXISTS files_by_hash ON _meta.files (feed, file_hash);
CREATE TABLE IF NOT EXISTS _meta.record_fields (
    table_name VARCHAR NOT NULL,
    fields VARCHAR NOT NULL,
    batch_id BIGINT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS _meta.positions (
    source VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    position VARCHAR NOT NULL,
    batch_id BIGINT,
    committed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS _meta.watermarks (
    consumer VARCHAR PRIMARY KEY,
    last_batch_id BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS _meta.silver_runs (
    table_name VARCHAR NOT NULL,
    run_id VARCHAR,
    from_batch_id BIGINT,
    to_batch_id BIGINT,
    rebuilt BOOLEAN NOT NULL,
    rows_in BIGINT NOT NULL,
    valid BIGINT NOT NULL,
    quarantined BIGINT NOT NULL,
    inserted BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    superseded BIGINT NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL
);
"""


class Warehouse:
    """Opens the DuckDB file with the platform's settings and waits politely for its locks.

    ``memory_limit`` defaults to :func:`~medallion_platform.settings.duckdb_memory_limit` (a
    quarter of the machine unless ``MEDALLION_DUCKDB_MEMORY_LIMIT`` says otherwise); beyond it
    DuckDB spills to :attr:`temp_directory`. ``silver_memory_limit`` (default
    :func:`~medallion_platform.settings.duckdb_silver_memory_limit`, 1 GiB) is the lower limit
    a contract is applied under (:attr:`silver_memory`).

    DuckDB allows one read-write process or many read-only ones. A read-write connection first
    takes the platform's writer lock (:mod:`~medallion_platform.warehouse.writer_lock`, which a
    Dagster run holds for its whole length and the OS releases if the holder dies), then
    DuckDB's own; a reader waits for DuckDB's lock only (a CLI ``status`` during a run).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        lock_timeout_s: float = 300.0,
        memory_limit: str | None = None,
        silver_memory_limit: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.stem.lower() in LAYER_SCHEMAS:
            # DuckDB names the database after the file; "bronze.duckdb" would make every
            # reference to the bronze schema ambiguous.
            raise ValueError(f"{self.path.name}: a warehouse file cannot be named after a layer")
        self.read_only = read_only
        self.lock_timeout_s = lock_timeout_s
        self.memory_limit = memory_limit or duckdb_memory_limit()
        self.silver_memory_limit = silver_memory_limit or duckdb_silver_memory_limit()
        if size_bytes(self.silver_memory_limit) is None:
            raise ValueError(
                f"silver memory limit {self.silver_memory_limit!r} is not a DuckDB size such as "
                "'1GiB' (MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT or the warehouse resource's "
                "silver_memory_limit)"
            )
        self.threads = threads

    @property
    def silver_memory(self) -> MemoryBound:
        """What ``apply_contract`` runs under: the silver limit, then the warehouse's again."""
        return MemoryBound(configured=self.memory_limit, bound=self.silver_memory_limit)

    @property
    def temp_directory(self) -> Path:
        """Where DuckDB spills past ``memory_limit``: beside the file (under the platform home),
        so a large silver run writes to the warehouse's disk instead of growing in memory."""
        return self.path.with_name(self.path.name + ".tmp")

    def _config(self) -> dict[str, str | int | bool]:
        config: dict[str, str | int | bool] = {
            "memory_limit": self.memory_limit,
            "temp_directory": str(self.temp_directory),
        }
        if self.threads:
            config["threads"] = self.threads
        return config

    def _open(self) -> duckdb.DuckDBPyConnection:
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(
                    str(self.path), read_only=self.read_only, config=self._config()
                )
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() >= deadline:
                    holder = re.search(r"PID (\d+)", str(exc))
                    who = f" (held by process {holder.group(1)})" if holder else ""
                    raise WarehouseBusyError(
                        f"The warehouse {self.path} is locked by another writer{who} and stayed "
                        f"locked for {self.lock_timeout_s:g}s. DuckDB allows one writer at a "
                        "time: wait for the running job to finish, then retry."
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection, closed on exit (which releases the file lock when it is the last)."""
        if self.read_only:
            conn = self._open()
            try:
                yield conn
            finally:
                conn.close()
            return
        holder = Holder.this_process(what=_command())
        with writer_lock(self.path, holder, timeout_s=self.lock_timeout_s):
            conn = self._open()
            try:
                yield conn
            finally:
                conn.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN … COMMIT; any exception rolls everything back."""
        with self.connect() as conn, transaction(conn):
            yield conn

    def ensure_layout(self) -> None:
        """Create the layer schemas and the ``_meta`` bookkeeping tables (idempotent)."""
        with self.transaction() as conn:
            ensure_layout(conn)


def _command() -> str:
    """What this process is, for whoever waits for it: ``medallion sync``, ``pytest`` …"""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return " ".join([name, *sys.argv[1:2]])[:80]


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN … COMMIT on an open connection (many transactions, one open: opening is costly)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def ensure_layout(conn: duckdb.DuckDBPyConnection) -> None:
    for schema in LAYER_SCHEMAS:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    conn.execute(_META_DDL)
    # Added since the first release: warehouses created before get them here.
    add_missing_columns(conn, "_meta", "files", {"columns": "VARCHAR"})


def next_batch_id(conn: duckdb.DuckDBPyConnection, source: str, run_id: str | None) -> int:
    """Allocate a batch id (monotonic, so silver can use it as a high-water mark)."""
    return next_batch_ids(conn, source, run_id, 1)[0]


def next_batch_ids(
    conn: duckdb.DuckDBPyConnection, source: str, run_id: str | None, count: int
) -> list[int]:
    """``count`` batch ids, ascending, each recorded in ``_meta.batches``: two statements
    whatever ``count`` (a group of small files takes one id per file: a statement each cost
    more than the files' append)."""
    ids = sorted(
        int(row[0])
        for row in conn.execute(
            "SELECT nextval('_meta.batch_id_seq') FROM range(?)", [count]
        ).fetchall()
    )
    conn.execute(
        "INSERT INTO _meta.batches SELECT unnest(?::BIGINT[]), ?, ?, now()", [ids, source, run_id]
    )
    return ids


def table_exists(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ? "
        "AND table_catalog = current_database()",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def table_columns(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str]:
    """Column name → DuckDB type, in table order (empty if the table does not exist)."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? AND table_catalog = current_database() "
        "ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return {name: dtype for name, dtype in rows}


def add_missing_columns(
    conn: duckdb.DuckDBPyConnection, schema: str, table: str, columns: dict[str, str]
) -> list[str]:
    """Schema evolution by addition: new columns are added (NULL for older rows), never dropped."""
    existing = table_columns(conn, schema, table)
    added = []
    for name, dtype in columns.items():
        if name not in existing:
            _check_type(dtype)
            conn.execute(f"ALTER TABLE {qualified(schema, table)} ADD COLUMN {quote(name)} {dtype}")
            added.append(name)
    return added


def row_count(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {qualified(schema, table)}").fetchone()[0])


def set_position(
    conn: duckdb.DuckDBPyConnection, source: str, key: str, position: str, batch_id: int | None
) -> None:
    """Commit a source position; callers do this in the transaction that wrote its rows."""
    conn.execute(
        "INSERT OR REPLACE INTO _meta.positions VALUES (?, ?, ?, ?, now())",
        [source, key, position, batch_id],
    )


def record_field_sets(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    field_sets: list[tuple[str, ...]],
    batch_id: int,
) -> None:
    """Record sets of top-level fields new to ``bronze.<table>``'s JSON records, with the
    batch that first brought each (callers do this in the transaction that wrote the rows)."""
    if field_sets:
        conn.execute(
            "INSERT INTO _meta.record_fields SELECT ?, unnest(?::VARCHAR[]), ?, now()",
            [table, [json.dumps(list(f)) for f in field_sets], batch_id],
        )


def recorded_field_sets(
    conn: duckdb.DuckDBPyConnection, table: str
) -> list[tuple[tuple[str, ...], int]]:
    """Each set of top-level fields ``bronze.<table>``'s records came with, and the batch
    that first brought it, oldest first."""
    rows = conn.execute(
        "SELECT fields, min(batch_id) AS first FROM _meta.record_fields "
        "WHERE table_name = ? GROUP BY fields ORDER BY first",
        [table],
    ).fetchall()
    return [(tuple(json.loads(fields)), int(first)) for fields, first in rows]


def get_watermark(conn: duckdb.DuckDBPyConnection, consumer: str) -> int:
    row = conn.execute(
        "SELECT last_batch_id FROM _meta.watermarks WHERE consumer = ?", [consumer]
    ).fetchone()
    return int(row[0]) if row else 0


def set_watermark(conn: duckdb.DuckDBPyConnection, consumer: str, batch_id: int) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO _meta.watermarks VALUES (?, ?, now())", [consumer, batch_id]
    )


# Types as DuckDB spells them in DESCRIBE: "TIMESTAMP WITH TIME ZONE", "DECIMAL(12,2)", "INT[]".
_TYPE = re.compile(r"[A-Z][A-Z0-9_]*( [A-Z][A-Z0-9_]*)*(\(\d+(,\s*\d+)?\))?(\[\])*")


def _check_type(dtype: str) -> str:
    if not _TYPE.fullmatch(dtype.upper()):
        raise ValueError(f"{dtype!r} is not a plain DuckDB column type")
    return dtype


__all__ = [
    "LAYER_SCHEMAS",
    "Warehouse",
    "WarehouseBusyError",
    "add_missing_columns",
    "ensure_layout",
    "get_watermark",
    "next_batch_id",
    "next_batch_ids",
    "record_field_sets",
    "recorded_field_sets",
    "row_count",
    "set_position",
    "set_watermark",
    "table_columns",
    "table_exists",
    "validate_identifier",
]
