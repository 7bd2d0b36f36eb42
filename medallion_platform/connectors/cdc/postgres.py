"""PostgreSQL as a change source: publication, logical slot, snapshot, changes (no Dagster).

Everything goes through SQL functions, so it works on any PostgreSQL >= 12 with
``wal_level = logical`` and on managed services, with the built-in ``pgoutput`` plugin:

* changes are *peeked* (``pg_logical_slot_peek_binary_changes``), never consumed, through a
  server-side cursor, so memory stays bounded however large a transaction is; the slot is
  moved forward (``pg_replication_slot_advance``) only after the warehouse committed them;
* the initial snapshot uses the snapshot that the slot's creation exports, so the rows read
  are exactly the state at the slot's start: nothing between snapshot and stream is lost or
  read twice.

The password is passed to libpq as its own parameter; it is never put in a DSN, a log line
or an error message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from medallion_platform.connectors.cdc.pgoutput import lsn_to_int
from medallion_platform.connectors.cdc.spec import CdcSource, CdcTable

log = logging.getLogger(__name__)


class CdcConfigError(RuntimeError):
    """The source is not configured (env var unset) or the server cannot do logical decoding."""


@dataclass(frozen=True, slots=True)
class SlotState:
    """The slot as the server reports it; ``lag_bytes`` is WAL not yet confirmed.

    ``current_lsn`` is the WAL *flushed* so far, not merely written: logical decoding reads
    only flushed WAL, so under asynchronous commit a transaction past it is not yet readable
    and must not be skipped by moving the slot beyond it."""

    slot: str
    confirmed_lsn: int
    current_lsn: int
    active: bool

    @property
    def lag_bytes(self) -> int:
        return max(0, self.current_lsn - self.confirmed_lsn)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The exported snapshot of a freshly created slot: rows as of ``consistent_lsn``."""

    name: str
    consistent_lsn: int


class PostgresChangeSource:
    """One source database, as the ingest and the sensor see it."""

    def __init__(self, spec: CdcSource, conninfo: str, password: str | None = None) -> None:
        self.spec = spec
        self._conninfo = conninfo
        self._password = password

    @classmethod
    def from_env(
        cls, spec: CdcSource, environ: Mapping[str, str] | None = None
    ) -> PostgresChangeSource:
        env = os.environ if environ is None else environ
        conninfo = env.get(spec.dsn_env)
        if not conninfo:
            raise CdcConfigError(
                f"CDC source {spec.name}: set {spec.dsn_env} to the database's connection "
                "string (for example 'host=db.internal port=5432 dbname=app user=medallion')"
            )
        password = env.get(spec.password_env) if spec.password_env else None
        return cls(spec, conninfo, password)

    @property
    def name(self) -> str:
        return self.spec.name

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A connection (autocommit unless told otherwise); the password travels apart."""
        kwargs.setdefault("autocommit", True)
        if self._password is not None:
            kwargs["password"] = self._password
        kwargs.setdefault("application_name", f"medallion-cdc-{self.spec.name}")
        # Values are captured as PostgreSQL's text output: one time zone for snapshot and
        # changes, whatever the server's or the client's default.
        kwargs.setdefault("options", "-c TimeZone=UTC")
        try:
            return psycopg.connect(self._conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            # libpq's message names host and user, never the password; keep only its text.
            raise psycopg.OperationalError(
                f"CDC source {self.spec.name}: cannot connect: {str(exc).strip()}"
            ) from None

    # -- slot and publication ----------------------------------------------------------------

    def slot_state(self, conn: psycopg.Connection[Any] | None = None) -> SlotState | None:
        """The slot's confirmed position and the server's current WAL position (None: no slot).
        Reads two numbers; never a change."""
        with _maybe(conn, self.connect) as c:
            row = c.execute(
                """SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint,
                          (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint, active
                   FROM pg_replication_slots WHERE slot_name = %s""",
                [self.spec.slot_name],
            ).fetchone()
        if row is None:
            return None
        return SlotState(self.spec.slot_name, int(row[0] or 0), int(row[1]), bool(row[2]))

    def ensure_publication(self, conn: psycopg.Connection[Any]) -> None:
        """Create the publication for the configured tables, or add tables it lacks."""
        name = self.spec.publication_name
        exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name]).fetchone()
        tables = sql.SQL(", ").join(_table_ident(t) for t in self.spec.tables)
        if exists is None:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), tables)
            )
            return
        have = {
            f"{s}.{t}"
            for s, t in conn.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                [name],
            ).fetchall()
        }
        missing = [t for t in self.spec.tables if t.qualified not in have]
        if missing:
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(name), sql.SQL(", ").join(_table_ident(t) for t in missing)
                )
            )

    def drop_slot(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [self.spec.slot_name],
        )

    @contextmanager
    def create_slot(self) -> Iterator[Snapshot]:
        """Create the slot and hold its exported snapshot open for the ``with`` block.

        The replication protocol's CREATE_REPLICATION_SLOT is the only way to get a snapshot
        that matches the slot's start; the snapshot lives while this connection stays idle.
        """
        with self.connect(replication="database") as repl:
            if repl.info.server_version < 120000:
                raise CdcConfigError(
                    f"CDC source {self.spec.name}: PostgreSQL >= 12 is needed, the server is "
                    f"{repl.info.server_version}"
                )
            level = repl.pgconn.exec_(b"SHOW wal_level")
            if level.get_value(0, 0) != b"logical":
                raise CdcConfigError(
                    f"CDC source {self.spec.name}: wal_level is "
                    f"{(level.get_value(0, 0) or b'').decode()}, logical decoding needs "
                    "'logical' (ALTER SYSTEM SET wal_level = logical, then restart)"
                )
            command = (
                f'CREATE_REPLICATION_SLOT "{self.spec.slot_name}" LOGICAL pgoutput EXPORT_SNAPSHOT'
            )
            result = repl.pgconn.exec_(command.encode())  # simple protocol: a walsender command
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                message = (result.error_message or b"").decode(errors="replace").strip()
                raise CdcConfigError(
                    f"CDC source {self.spec.name}: cannot create slot {self.spec.slot_name}: "
                    f"{message}"
                )
            consistent = (result.get_value(0, 1) or b"").decode()
            name = (result.get_value(0, 2) or b"").decode()
            log.info("%s: created slot %s at %s", self.name, self.spec.slot_name, consistent)
            yield Snapshot(name=name, consistent_lsn=lsn_to_int(consistent))

    def readable_upto(self, flushed: int) -> int:
        """A WAL position the capture can decode up to now without waiting: ``flushed`` (the
        flush position), unless that lies inside a record.

        WAL that no commit asked to flush (pages pruned on access by a read that ended in
        ROLLBACK, the snapshot's own COPY among them) is flushed by the WAL writer a whole page
        at a time. The flush position then sits on a page boundary, inside the record that
        spans it, and decoding up to it waits for the rest of that record until something
        flushes it (the background writer's next running-xacts record, up to 15 s later). In
        that case only, a transaction with an XID is committed: its commit flushes every
        record before it, and the insert position read before it is where a record starts.
        (Only then: the commit is WAL the slot has not confirmed, and a capture that wrote WAL
        every time would keep the sensor's lag from ever reaching zero.)"""
        with self.connect() as conn:
            block, inserted = conn.execute(
                "SELECT current_setting('wal_block_size')::int, "
                "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
            ).fetchone()
        if flushed % block or inserted <= flushed:
            return flushed
        with self.connect(autocommit=False) as conn:
            conn.execute("SET LOCAL synchronous_commit = on")
            row = conn.execute(
                "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint "
                "FROM pg_current_xact_id()"
            ).fetchone()
            conn.commit()
        return int(row[0])

    def advance(self, lsn: int, conn: psycopg.Connection[Any] | None = None) -> None:
        """Tell the server everything before ``lsn`` is safely in the warehouse."""
        with _maybe(conn, self.connect) as c:
            c.execute(
                "SELECT pg_replication_slot_advance(%s, ('0/0'::pg_lsn + %s::numeric))",
                [self.spec.slot_name, lsn],
            )

    # -- reading -----------------------------------------------------------------------------

    @contextmanager
    def snapshot_reader(self, snapshot: Snapshot) -> Iterator[SnapshotReader]:
        """A REPEATABLE READ transaction on the exported snapshot."""
        with self.connect(autocommit=False) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot.name)))
            yield SnapshotReader(conn)
            conn.rollback()

    def changes(self, upto_lsn: int, fetch_size: int = 5_000) -> Iterator[tuple[int, bytes]]:
        """``(lsn, pgoutput message)`` of the transactions committed after the slot's confirmed
        position and before ``upto_lsn``.

        Peeked through a server-side cursor: the server decodes into its own (disk-backed)
        store and we hold at most ``fetch_size`` messages. The slot does not move.
        """
        with self.connect(autocommit=False) as conn:
            with conn.cursor(name=f"cdc_{self.spec.name}", binary=True) as cursor:
                cursor.itersize = fetch_size
                cursor.execute(
                    """SELECT (lsn - '0/0'::pg_lsn)::bigint, data
                       FROM pg_logical_slot_peek_binary_changes(
                           %s, '0/0'::pg_lsn + %s::numeric, NULL,
                           'proto_version', '1', 'publication_names', %s)""",
                    [self.spec.slot_name, upto_lsn, self.spec.publication_name],
                )
                for lsn, data in cursor:
                    yield int(lsn), bytes(data)
            conn.rollback()


class SnapshotReader:
    """Reads tables inside the snapshot's transaction, values as PostgreSQL's text output
    (exactly what pgoutput sends for changes, so snapshot and stream rows look alike)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def snapshot_time(self) -> datetime:
        return self.conn.execute("SELECT now()").fetchone()[0]

    def rows(self, table: CdcTable, columns: list[str]) -> Iterator[tuple[str | None, ...]]:
        """Every row, streamed by COPY (text values, None for NULL)."""
        query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns), _table_ident(table)
        )
        with self.conn.cursor() as cursor, cursor.copy(query) as copy:
            copy.set_types(["text"] * len(columns))
            yield from copy.rows()


def table_columns(conn: psycopg.Connection[Any], table: CdcTable) -> list[tuple[str, int, int]]:
    """``(name, type oid, typmod)`` of the table's live columns, in order (as a Relation
    message lists them)."""
    rows = conn.execute(
        """SELECT attname, atttypid::bigint, atttypmod FROM pg_attribute
           WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
           ORDER BY attnum""",
        [_regclass(table)],
    ).fetchall()
    if not rows:
        raise CdcConfigError(f"table {table.qualified} has no columns (or does not exist)")
    return [(name, int(oid), int(typmod)) for name, oid, typmod in rows]


def primary_key(conn: psycopg.Connection[Any], table: CdcTable) -> list[str]:
    """The primary key, else the replica identity index; empty if the table has neither."""
    rows = conn.execute(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = %s::regclass AND (i.indisprimary OR i.indisreplident)
           ORDER BY i.indisprimary DESC, array_position(i.indkey::int2[], a.attnum)""",
        [_regclass(table)],
    ).fetchall()
    return list(dict.fromkeys(r[0] for r in rows))


def _table_ident(table: CdcTable) -> sql.Composable:
    return sql.Identifier(table.schema_name, table.name)


def _regclass(table: CdcTable) -> str:
    return f'"{table.schema_name}"."{table.name}"'


@contextmanager
def _maybe(conn: psycopg.Connection[Any] | None, connect: Any) -> Iterator[psycopg.Connection[Any]]:
    if conn is not None:
        yield conn
    else:
        with connect() as fresh:
            yield fresh
