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

import io
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
    wal_status: str | None = None
    """``lost``: the server invalidated the slot (it held more WAL than
    ``max_slot_wal_keep_size``); the changes it held are gone."""

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
                          (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint, active,
                          to_jsonb(s) ->> 'wal_status'  -- PostgreSQL >= 13
                   FROM pg_replication_slots s WHERE slot_name = %s""",
                [self.spec.slot_name],
            ).fetchone()
        if row is None:
            return None
        return SlotState(self.spec.slot_name, int(row[0] or 0), int(row[1]), bool(row[2]), row[3])

    def wal_retention_warning(self, conn: psycopg.Connection[Any]) -> str | None:
        """Why the slot could fill the source's disk, or None when the server caps what a
        slot keeps. A full disk would stop the application's writes; past the cap the server
        invalidates the slot instead, and the capture then asks for a fresh snapshot."""
        cap = conn.execute("SELECT current_setting('max_slot_wal_keep_size', true)").fetchone()
        if cap[0] not in (None, "-1"):
            return None
        if cap[0] == "-1":
            uncapped = "keeps (max_slot_wal_keep_size = -1)"
            remedy = (
                "Cap it on the server: ALTER SYSTEM SET max_slot_wal_keep_size = '<what the "
                "disk can spare, e.g. 20GB>'; SELECT pg_reload_conf();"
            )
        else:
            uncapped = "keeps (PostgreSQL < 13 has no max_slot_wal_keep_size)"
            remedy = "Watch the slot's lag (medallion status), or upgrade to cap it."
        return (
            f"CDC source {self.spec.name}: the server does not cap the WAL a replication slot "
            f"{uncapped}: while nothing captures (runs failing, the sensor off), slot "
            f"{self.spec.slot_name} keeps WAL without bound, and a full disk stops the "
            f"application's writes. {remedy}"
        )

    def published_tables(self, conn: psycopg.Connection[Any]) -> set[str] | None:
        """``schema.table`` of every table in the publication; None if it does not exist."""
        name = self.spec.publication_name
        exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name]).fetchone()
        if exists is None:
            return None
        rows = conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", [name]
        ).fetchall()
        return {f"{s}.{t}" for s, t in rows}

    def change_keys(self, conn: psycopg.Connection[Any]) -> dict[str, list[str] | None]:
        """Check that every configured table can be in a publication without breaking the
        application, and return each one's change-log key (None: the whole row).

        A published table without a usable replica identity makes PostgreSQL refuse the
        application's UPDATE and DELETE on it, so such a table is refused here, all of them
        in one error that says what to do for each."""
        identities = {t.qualified: table_identity(conn, t) for t in self.spec.tables}
        problems = [
            (t, identities[t.qualified], problem)
            for t in self.spec.tables
            if (problem := identity_problem(identities[t.qualified], t)) is not None
        ]
        if problems:
            raise CdcConfigError(self._refusal(problems, self.published_tables(conn) or set()))
        return {t.qualified: identities[t.qualified].change_key(t) for t in self.spec.tables}

    def _refusal(
        self, problems: list[tuple[CdcTable, TableIdentity, str]], published: set[str]
    ) -> str:
        """One message for every refused table: what is wrong, where it stands, what to do."""
        publication = self.spec.publication_name
        names = ", ".join(t.qualified for t, _, _ in problems)
        lines = [f"CDC source {self.spec.name}: cannot capture {names}:"]
        for table, identity, problem in problems:
            q = table.qualified
            if problem.startswith(f"{q}: key column"):
                lines.append(f"- {problem}. Fix the key of {table.name} in cdc_sources.yaml.")
                continue
            if problem.startswith(f"{q}: key ["):
                carried = ", ".join(identity.identity_columns or ())
                lines.append(
                    f"- {problem}. Do one of: declare a key within ({carried}) in "
                    f"cdc_sources.yaml; or ALTER TABLE {q} REPLICA IDENTITY FULL."
                )
                continue
            if q in published:
                consequence = (
                    f"it is in publication {publication}, so PostgreSQL refuses the "
                    "application's UPDATE and DELETE on it now (\"does not have a replica "
                    f'identity and publishes deletes"); to stop that at once: ALTER '
                    f"PUBLICATION {publication} DROP TABLE {q}."
                )
            else:
                consequence = (
                    "in a publication, PostgreSQL would refuse the application's UPDATE and "
                    'DELETE on it ("does not have a replica identity and publishes '
                    f'deletes"), so it was not added to publication {publication}: this run '
                    "created or changed nothing on the source."
                )
            lines.append(f"- {problem}: {consequence} Do one of: {_remedies(table, identity)}.")
        lines.append("Then rerun.")
        return "\n".join(lines)

    def ensure_publication(self, conn: psycopg.Connection[Any]) -> dict[str, list[str] | None]:
        """Create the publication for the configured tables, or add tables it lacks, after
        checking their replica identities (:meth:`change_keys`, whose keys it returns):
        nothing is created or altered for a table the publication would break."""
        keys = self.change_keys(conn)
        name = self.spec.publication_name
        have = self.published_tables(conn)
        if have is None:
            tables = sql.SQL(", ").join(_table_ident(t) for t in self.spec.tables)
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), tables)
            )
            return keys
        missing = [t for t in self.spec.tables if t.qualified not in have]
        if missing:
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(name), sql.SQL(", ").join(_table_ident(t) for t in missing)
                )
            )
        return keys

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

    def change_batches(
        self, upto_lsn: int, fetch_size: int = 20_000
    ) -> Iterator[tuple[list[int], list[bytes]]]:
        """``(lsns, pgoutput messages)`` of the transactions committed after the slot's
        confirmed position and before ``upto_lsn``, ``fetch_size`` messages at a time.

        Peeked through a server-side cursor: the server decodes into its own (disk-backed)
        store and we hold at most ``fetch_size`` messages. The slot does not move.
        """
        with self.connect(autocommit=False) as conn:
            with conn.cursor(name=f"cdc_{self.spec.name}", binary=True) as cursor:
                cursor.execute(
                    """SELECT (lsn - '0/0'::pg_lsn)::bigint, data
                       FROM pg_logical_slot_peek_binary_changes(
                           %s, '0/0'::pg_lsn + %s::numeric, NULL,
                           'proto_version', '1', 'publication_names', %s)""",
                    [self.spec.slot_name, upto_lsn, self.spec.publication_name],
                )
                while rows := cursor.fetchmany(fetch_size):
                    yield [row[0] for row in rows], [row[1] for row in rows]
            conn.rollback()


class SnapshotReader:
    """Reads tables inside the snapshot's transaction, values as PostgreSQL's text output
    (exactly what pgoutput sends for changes, so snapshot and stream rows look alike)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def snapshot_time(self) -> datetime:
        return self.conn.execute("SELECT now()").fetchone()[0]

    @contextmanager
    def csv(self, table: CdcTable, columns: list[str]) -> Iterator[io.RawIOBase]:
        """Every row as PostgreSQL's CSV (``COPY … TO STDOUT``, UTF-8, no header): values in
        their text output, exactly what pgoutput sends for changes; NULL an unquoted empty
        field, an empty string ``""``. Read as a binary stream."""
        query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv, ENCODING 'UTF8')").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns), _table_ident(table)
        )
        with self.conn.cursor() as cursor, cursor.copy(query) as copy:
            yield _CopyStream(copy)


class _CopyStream(io.RawIOBase):
    """The data of a ``COPY … TO STDOUT`` as a readable binary stream (libpq hands it over a
    row at a time)."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        size = len(out)
        filled = min(size, len(self._rest))
        out[:filled] = self._rest[:filled]
        self._rest = self._rest[filled:]
        read = self._copy.read
        while filled < size:
            chunk = read()
            if not chunk:
                break
            n = len(chunk)
            if filled + n <= size:
                out[filled : filled + n] = chunk
                filled += n
            else:
                take = size - filled
                out[filled:] = memoryview(chunk)[:take]
                self._rest = memoryview(chunk)[take:]
                filled = size
        return filled


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


@dataclass(frozen=True, slots=True)
class TableIdentity:
    """A table's replica identity as the server holds it (``pg_class.relreplident``): which
    columns the old row of an UPDATE or DELETE carries, if any."""

    replident: str  # d: DEFAULT (the primary key), n: NOTHING, f: FULL, i: USING INDEX
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    index_key: tuple[str, ...]  # the identity index's columns; () when it was dropped

    @property
    def identity_columns(self) -> tuple[str, ...] | None:
        """What a DELETE carries; None when nothing identifies a row (the publication would
        make the application's UPDATE and DELETE fail)."""
        if self.replident == "f":
            return self.columns
        if self.replident == "d" and self.primary_key:
            return self.primary_key
        if self.replident == "i" and self.index_key:
            return self.index_key
        return None

    def change_key(self, table: CdcTable) -> list[str] | None:
        """The declared key, else the primary key or identity index; None: the whole row."""
        if table.key:
            return list(table.key)
        if self.replident == "i":
            return list(self.index_key)
        return list(self.primary_key) or None


def table_identity(conn: psycopg.Connection[Any], table: CdcTable) -> TableIdentity:
    row = conn.execute(
        """WITH t AS (SELECT to_regclass(%s) AS oid)
           SELECT c.relreplident,
                  ARRAY(SELECT attname::text FROM pg_attribute
                        WHERE attrelid = t.oid AND attnum > 0 AND NOT attisdropped
                        ORDER BY attnum),
                  ARRAY(SELECT a.attname::text FROM pg_index i,
                               unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n),
                               pg_attribute a
                        WHERE i.indrelid = t.oid AND i.indisprimary
                          AND a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.n),
                  ARRAY(SELECT a.attname::text FROM pg_index i,
                               unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n),
                               pg_attribute a
                        WHERE i.indrelid = t.oid AND i.indisreplident
                          AND a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.n)
           FROM t JOIN pg_class c ON c.oid = t.oid""",
        [_regclass(table)],
    ).fetchone()
    if row is None:
        raise CdcConfigError(
            f"table {table.qualified} does not exist in the source database (or the user "
            "cannot see it)"
        )
    replident, columns, primary, index = row
    return TableIdentity(str(replident), tuple(columns), tuple(primary), tuple(index))


def identity_problem(identity: TableIdentity, table: CdcTable) -> str | None:
    """Why a publication cannot hold ``table`` safely, or why its declared key cannot be
    read from every change; None when it can."""
    q = table.qualified
    carried = identity.identity_columns
    if carried is None:
        why = {
            "n": "its replica identity is NOTHING",
            "i": "its replica identity index was dropped (it behaves as NOTHING)",
        }.get(identity.replident, "it has no primary key (replica identity DEFAULT)")
        return f"{q}: {why}"
    if table.key:
        absent = [c for c in table.key if c not in identity.columns]
        if absent:
            return f"{q}: key column {', '.join(absent)} does not exist"
        if any(c not in carried for c in table.key):
            return (
                f"{q}: key [{', '.join(table.key)}] is not within its replica identity "
                f"({', '.join(carried)}), the only columns a DELETE carries"
            )
    return None


def _remedies(table: CdcTable, identity: TableIdentity) -> str:
    """The ways to give ``table`` a replica identity, as the statements to run."""
    q = table.qualified
    if identity.primary_key:
        ways = [
            f"ALTER TABLE {q} REPLICA IDENTITY DEFAULT (its primary key, "
            f"{', '.join(identity.primary_key)})"
        ]
    else:
        ways = [
            f"ALTER TABLE {q} ADD PRIMARY KEY (<columns>)",
            f"ALTER TABLE {q} REPLICA IDENTITY USING INDEX <a unique index on NOT NULL columns>",
        ]
    ways.append(
        f"ALTER TABLE {q} REPLICA IDENTITY FULL and declare its key in cdc_sources.yaml "
        f"({{name: {table.name}, key: [<columns>]}})"
    )
    ways.append("take it out of cdc_sources.yaml")
    return "; or ".join(ways)


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
