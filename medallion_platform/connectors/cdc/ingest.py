"""Capture a PostgreSQL source into bronze change logs, exactly once.

Every change is identified by its position ``(commit LSN of its transaction, sequence number
within the transaction)``: totally ordered, stable across re-reads. Each bronze commit saves
the last position it wrote in ``_meta.positions`` in the same warehouse transaction; only
afterwards is the slot advanced, and only to the end of the last transaction whose changes are
all committed. A crash between the two re-reads those changes, and the positions recognise
them: nothing is lost and nothing doubles.

The first run takes the initial snapshot (``op = 'r'``) from the snapshot that the slot's
creation exports, in one warehouse transaction with its position: a crash in the middle leaves
nothing, and the next run drops the half-used slot and starts over.

Bronze rows follow Debezium's envelope: ``op`` (r/c/u/d/t), ``key``, ``before`` (the old row
under REPLICA IDENTITY FULL), ``after`` (JSON objects of PostgreSQL's text output),
``lsn``, ``commit_lsn``, ``seq``, ``xid``, ``commit_ts``, plus the bronze lineage columns. A
primary-key update becomes a delete of the old key and a create of the new one, as in
Debezium, so that current-state tables never keep the old key.

The rows are built a batch at a time, column by column, with no Python object per change
(:func:`decode_changes`, ``columnar.py``); :func:`change_rows` does the same for one message in
Python, the reference the columns are tested against and their fallback for the rare message
they do not take. The snapshot comes as PostgreSQL's CSV (``COPY … TO STDOUT``) through
Arrow's CSV reader.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from pydantic import BaseModel

from medallion_platform.connectors.bronze import (
    BRONZE_SCHEMA,
    ROW_GROUP_ROWS,
    checkpoint_threshold,
    ensure_bronze_table,
)
from medallion_platform.connectors.cdc.columnar import (
    STRING,
    TEXT,
    UNCHANGED,
    MessageBatch,
    Tuples,
    constant,
    json_objects,
)
from medallion_platform.connectors.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    PgOutputError,
    Relation,
    RelationCache,
    Truncate,
    Update,
    decode,
    int_to_lsn,
    lsn_to_int,
)
from medallion_platform.connectors.cdc.postgres import PostgresChangeSource, table_columns
from medallion_platform.connectors.cdc.spec import CdcSource
from medallion_platform.connectors.files.readers import read_ahead
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.identifiers import qualified as qualified_name
from medallion_platform.warehouse.warehouse import next_batch_id, set_position, transaction

log = logging.getLogger(__name__)

CDC_COLUMNS: dict[str, str] = {
    "op": "VARCHAR",
    "source_table": "VARCHAR",
    "key": "VARCHAR",
    "before": "VARCHAR",
    "after": "VARCHAR",
    "lsn": "VARCHAR",
    "commit_lsn": "BIGINT",
    "seq": "BIGINT",
    "xid": "BIGINT",
    "commit_ts": "TIMESTAMPTZ",
    "unchanged_toast": "VARCHAR",
}


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """Where a change sits in the source's commit order."""

    commit_lsn: int
    seq: int

    def __str__(self) -> str:
        return f"{int_to_lsn(self.commit_lsn)}#{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Position:
        lsn, _, seq = text.partition("#")
        return cls(lsn_to_int(lsn), int(seq))


class SchemaChange(BaseModel):
    """A column added, dropped or retyped in a captured table, seen in the change stream."""

    table: str
    column: str
    change: str  # added | dropped | type_changed
    lsn: str
    detail: str


class CdcIngestReport(BaseModel):
    source: str
    snapshot_rows: int
    changes: int
    transactions: int
    batch_ids: list[int]
    rows_by_table: dict[str, int]
    position: str | None
    confirmed_lsn: str | None
    schema_changes: list[SchemaChange]
    warnings: list[str] = []
    """About the source's setup, found when the slot is created (the run goes on)."""


def position_source(spec: CdcSource) -> str:
    return f"cdc:{spec.name}"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dumps(row: dict[str, Any]) -> str:
    """Compact JSON; one shared encoder (``json.dumps`` with options builds one per call).
    :func:`columnar.json_objects` writes the same bytes from Arrow columns."""
    return _ENCODER.encode(row)


CHUNK_MESSAGES = 20_000
"""pgoutput messages fetched and decoded together (a few MiB for rows of ordinary size)."""
CHUNK_BYTES = 64 << 20
"""At most this many bytes of messages are decoded together (large TOASTed values)."""
SNAPSHOT_INSERT_ROWS = ROW_GROUP_ROWS
"""Snapshot rows per INSERT: a whole row group, written to the file as it comes (see
connectors.bronze); about 40 MB of Arrow for the demo's rows, held twice (one being read)."""
_CSV_BLOCK = 4 << 20

ROW_FIELDS = ("op", "key", "before", "after", "unchanged_toast")
"""What a change's bronze row says, decided per message; the rest comes from its position."""
_PIECE = pa.schema([("msg", pa.int64()), ("sub", pa.int64()), *((n, STRING) for n in ROW_FIELDS)])
_ROWS = pa.schema(
    [
        *((n, STRING) for n in ROW_FIELDS),
        ("lsn", pa.int64()),
        ("commit_lsn", pa.int64()),
        ("seq", pa.int64()),
        ("xid", pa.int64()),
        ("commit_ts", pa.timestamp("us", tz="UTC")),
    ]
)
"""A bronze change-log batch before its row numbers: LSNs as numbers, formatted by DuckDB."""
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
_LSN_SQL = "printf('%X/%X', {0} >> 32, {0} & 4294967295)"  # int_to_lsn, in SQL
_I, _U, _D = (ord(c) for c in "IUD")
_N, _K, _O = (ord(c) for c in "NKO")


def _insert_rows(
    conn: duckdb.DuckDBPyConnection,
    bronze_table: str,
    rows: pa.Table | pa.RecordBatchReader,
    *,
    batch_id: int,
    qualified: str,
    where: str,
) -> None:
    """Append change-log rows (``_ROWS`` plus ``_row_number``) to ``bronze.<table>``: LSNs
    as PostgreSQL prints them, ``_source`` = ``<where><commit LSN>#<seq>``."""
    conn.register("_cdc_rows", rows)
    try:
        conn.execute(
            f"""INSERT INTO {qualified_name(BRONZE_SCHEMA, bronze_table)} BY NAME
                SELECT now() AS _ingested_at, ?::BIGINT AS _batch_id, op,
                       ? AS source_table, key, before, after, {_LSN_SQL.format("lsn")} AS lsn,
                       commit_lsn, seq, xid, commit_ts, unchanged_toast,
                       ? || {_LSN_SQL.format("commit_lsn")} || '#' || seq AS _source,
                       _row_number
                FROM _cdc_rows""",
            [batch_id, qualified, where],
        )
    finally:
        conn.unregister("_cdc_rows")


def _piece(msg: np.ndarray, sub: int | np.ndarray, **fields: pa.Array | None) -> pa.Table:
    """Rows of ``_PIECE``: the message each comes from, its rank among that message's rows."""
    n = len(msg)
    subs = np.full(n, sub, dtype=np.int64) if isinstance(sub, int) else sub
    columns = [pa.array(msg, pa.int64()), pa.array(subs, pa.int64())]
    columns += [
        fields.get(f) if fields.get(f) is not None else constant(None, n) for f in ROW_FIELDS
    ]
    return pa.Table.from_arrays(columns, schema=_PIECE)


@dataclass(slots=True)
class _OpenTxn:
    """The transaction still open at the end of a message batch: its Begin, the last ``seq``
    handed out and the rows of it written so far."""

    begin: Begin
    seq: int = 0
    written: int = 0


class _Capture:
    """One run of the capture: the warehouse connection, buffers, positions."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        source: PostgresChangeSource,
        run_id: str | None,
        batch_size: int,
        on_batch: Callable[[int], None] | None,
    ) -> None:
        self.conn = conn
        self.source = source
        self.spec = source.spec
        self.run_id = run_id
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.buffers: dict[str, list[pa.Table]] = {t.qualified: [] for t in self.spec.tables}
        self.batch_ids: list[int] = []
        self.rows_by_table: dict[str, int] = {t.qualified: 0 for t in self.spec.tables}
        self.schema_changes: list[SchemaChange] = []
        self.warnings: list[str] = []
        self.schema_dirty: set[str] = set()
        self.columns: dict[str, list[list[Any]]] = {}
        self.keys: dict[str, list[str] | None] = {}
        """Each table's change-log key (None: the whole row), from the replica identities
        checked at the start of the run."""
        self.last_written: Position | None = None
        self.pending = 0  # rows in the buffers
        # The stream's state between message batches.
        self.open_txn: _OpenTxn | None = None
        self.last_end: int | None = None
        self.written = 0
        self.transactions = 0

    # -- bookkeeping ---------------------------------------------------------------------

    def stored(self, key: str) -> str | None:
        row = self.conn.execute(
            "SELECT position FROM _meta.positions WHERE source = ? AND key = ?",
            [position_source(self.spec), key],
        ).fetchone()
        return row[0] if row else None

    def buffered(self) -> int:
        return self.pending

    def _where(self, qualified: str) -> str:
        return f"{self.spec.name}:{qualified}@"

    def _append_buffers(self, batch_id: int) -> None:
        for qualified, pieces in self.buffers.items():
            rows = pa.concat_tables(pieces) if pieces else None
            if rows is not None and rows.num_rows:
                table = self.spec.table(qualified)
                assert table is not None
                numbered = rows.append_column(
                    "_row_number", pa.array(np.arange(1, rows.num_rows + 1), pa.int64())
                )
                _insert_rows(
                    self.conn,
                    self.spec.bronze_table(table),
                    numbered,
                    batch_id=batch_id,
                    qualified=qualified,
                    where=self._where(qualified),
                )
                self.rows_by_table[qualified] += rows.num_rows
            self.buffers[qualified] = []
        self.pending = 0

    def _save_schemas(self, batch_id: int) -> None:
        for qualified in sorted(self.schema_dirty):
            set_position(
                self.conn,
                position_source(self.spec),
                f"columns:{qualified}",
                json.dumps(self.columns[qualified]),
                batch_id,
            )
        self.schema_dirty.clear()

    def flush(self) -> None:
        """One warehouse transaction: the buffered rows and the position they reach."""
        if not self.buffered() and not self.schema_dirty:
            return
        with transaction(self.conn):
            batch_id = next_batch_id(self.conn, position_source(self.spec), self.run_id)
            self._append_buffers(batch_id)
            self._save_schemas(batch_id)
            if self.last_written is not None:
                set_position(
                    self.conn,
                    position_source(self.spec),
                    "change",
                    str(self.last_written),
                    batch_id,
                )
        self.batch_ids.append(batch_id)
        if self.on_batch:
            self.on_batch(batch_id)

    # -- snapshot ------------------------------------------------------------------------

    def snapshot(self) -> int:
        """Copy every table as of the new slot's start, in one warehouse transaction."""
        with self.source.connect() as admin:
            # Checks every table's replica identity before creating or altering anything.
            self.keys = self.source.ensure_publication(admin)
            self.warnings += [
                f"CDC source {self.spec.name}: {table} has no primary key: its changes are "
                "keyed by the whole row (an UPDATE is a delete and a create); declare its key "
                "in cdc_sources.yaml (key: [columns]) to key them by those columns"
                for table, key in self.keys.items()
                if key is None
            ]
            retention = self.source.wal_retention_warning(admin)
            self.warnings += [retention] if retention else []
            for warning in self.warnings:
                log.warning("%s", warning)
            if self.source.slot_state(admin) is not None:
                log.warning(
                    "%s: slot %s exists but no snapshot was committed (an earlier run stopped "
                    "during it); dropping the slot and taking the snapshot again",
                    self.spec.name,
                    self.spec.slot_name,
                )
                self.source.drop_slot(admin)
        rows = 0
        with self.source.create_slot() as snap, self.source.snapshot_reader(snap) as reader:
            taken_at = reader.snapshot_time()
            lsn_text = int_to_lsn(snap.consistent_lsn)
            with transaction(self.conn):
                batch_id = next_batch_id(self.conn, position_source(self.spec), self.run_id)
                for table in self.spec.tables:
                    columns = table_columns(reader.conn, table)
                    names = [name for name, *_ in columns]
                    self.columns[table.qualified] = [list(c) for c in columns]
                    self.schema_dirty.add(table.qualified)
                    copied = _SnapshotRows(
                        names,
                        self.keys[table.qualified] or names,
                        first_seq=rows + 1,
                        lsn=snap.consistent_lsn,
                        taken_at=taken_at,
                    )
                    with reader.csv(table, names) as stream:
                        # The next INSERT's rows are read, parsed and built on a thread of
                        # their own while DuckDB inserts these (on all its threads).
                        for insert in read_ahead(copied.tables(stream)):
                            _insert_rows(
                                self.conn,
                                self.spec.bronze_table(table),
                                insert,
                                batch_id=batch_id,
                                qualified=table.qualified,
                                where=f"{self._where(table.qualified)}snapshot ",
                            )
                    rows += copied.rows
                    self.rows_by_table[table.qualified] += copied.rows
                self._save_schemas(batch_id)
                source = position_source(self.spec)
                set_position(self.conn, source, "snapshot", lsn_text, batch_id)
                position = Position(snap.consistent_lsn, rows)
                set_position(self.conn, source, "change", str(position), batch_id)
        self.last_written = position
        self.batch_ids.append(batch_id)
        log.info("%s: snapshot of %d rows at %s", self.spec.name, rows, lsn_text)
        return rows

    # -- stream --------------------------------------------------------------------------

    def stream(self) -> tuple[int, int, int | None]:
        """Read everything the slot holds; returns (changes written, transactions, the slot's
        confirmed LSN afterwards)."""
        committed = Position.parse(self.stored("change") or "0/0#0")
        if not self.keys:  # no snapshot in this run: the identities may have changed since
            with self.source.connect() as conn:
                self.keys = self.source.change_keys(conn)
        state = self.source.slot_state()
        if state is None or state.wal_status == "lost":
            what = (
                "is gone (dropped on the server, or a new server)"
                if state is None
                else "was invalidated by the server: it held more WAL than "
                "max_slot_wal_keep_size allows, and the WAL was removed"
            )
            raise RuntimeError(
                f"CDC source {self.spec.name}: replication slot {self.spec.slot_name} {what}. "
                "Changes made since the last run cannot be read from it. To capture a fresh "
                "snapshot, forget the source's positions: DELETE FROM _meta.positions WHERE "
                f"source = '{position_source(self.spec)}', then rerun."
            )
        confirmed = state.confirmed_lsn
        relations = RelationCache()
        # Everything committed before this WAL position is read now; afterwards the slot can
        # move up to it even when its last transactions published nothing of ours (else the
        # lag the sensor watches would never drain). The flush position, unless decoding up
        # to it would wait for WAL that nothing flushes (see readable_upto).
        upto = self.source.readable_upto(state.current_lsn)
        # The next fetch is read on a thread while this one is decoded and committed.
        for lsns, datas in read_ahead(self.source.change_batches(upto, CHUNK_MESSAGES)):
            for lo, hi in _spans(datas, CHUNK_BYTES):
                batch = MessageBatch(lsns[lo:hi], datas[lo:hi])
                confirmed = self._messages(batch, relations, committed, confirmed)
        end = max(upto, self.last_end or 0)
        return self.written, self.transactions, self._flush_and_advance(end, confirmed)

    def _flush_and_advance(self, last_end: int | None, confirmed: int) -> int:
        """Commit the buffers, then move the slot past every transaction now fully in bronze."""
        self.flush()
        if last_end is not None and last_end > confirmed:
            self.source.advance(last_end)
            return last_end
        return confirmed

    def _messages(
        self,
        batch: MessageBatch,
        relations: RelationCache,
        committed: Position,
        confirmed: int,
    ) -> int:
        """Turn one batch of messages into bronze rows, in order; commit each time
        ``batch_size`` rows are buffered, right after the change that reaches it, and move the
        slot past the transactions then complete. Returns the slot's confirmed LSN."""
        n = batch.size
        is_row = np.isin(batch.kind, (_I, _U, _D))
        # Pass 1, the few other messages in order: transactions, relations, truncates.
        txns: list[_OpenTxn] = []
        begins: list[int] = []  # the Begin's index in the batch; -1 for the carried one
        commits: list[tuple[int, int | None, int]] = []  # (index, txn number, end LSN)
        marks = np.full(n, -2, dtype=np.int64)  # a Begin: its txn number; a Commit: -1
        current: int | None = None
        if self.open_txn is not None:
            txns.append(self.open_txn)
            begins.append(-1)
            current = 0
        others: list[tuple[int, Message]] = []
        for i in np.flatnonzero(~is_row).tolist():
            message = decode(batch.datas[i])
            if isinstance(message, Begin):
                current = len(txns)
                txns.append(_OpenTxn(message))
                begins.append(i)
                marks[i] = current
            elif isinstance(message, Commit):
                commits.append((i, current, message.end_lsn))
                current = None
                marks[i] = -1
            elif isinstance(message, Relation) or (
                isinstance(message, Truncate) and current is not None
            ):
                others.append((i, message))
        latest = np.maximum.accumulate(np.where(marks != -2, np.arange(n), -1))
        initial = 0 if self.open_txn is not None else -1
        txn_of = np.where(latest >= 0, marks[np.maximum(latest, 0)], initial)

        # Pass 2: the row changes between Relation messages, a relation at a time.
        pieces: dict[str, list[pa.Table]] = {q: [] for q in self.buffers}
        segment = 0
        for i, message in others:
            if isinstance(message, Relation):
                self._decode_rows(batch, segment, i, is_row, txn_of, relations, pieces)
                segment = i + 1
                relations.apply(message)
                self._relation(message, int(batch.lsn[i]))
            else:
                assert isinstance(message, Truncate)
                truncated = [
                    q
                    for oid in message.relation_oids
                    if (q := _qualified(relations.relation(oid))) in pieces
                ]
                for sub, qualified in enumerate(truncated):
                    pieces[qualified].append(_piece(np.array([i]), sub, op=constant("t", 1)))
        self._decode_rows(batch, segment, n, is_row, txn_of, relations, pieces)

        # Positions: every row's transaction and rank in it, then what is new.
        tables: dict[str, tuple[pa.Table, np.ndarray, np.ndarray]] = {}
        per_message = np.zeros(n, dtype=np.int64)
        for qualified, found in pieces.items():
            if found:
                rows = pa.concat_tables(found)
                msg, sub = rows["msg"].to_numpy(), rows["sub"].to_numpy()
                order = np.lexsort((sub, msg))  # the source's order
                per_message += np.bincount(msg, minlength=n)
                tables[qualified] = (rows, order, msg[order])
        before = np.concatenate(([0], np.cumsum(per_message)))  # rows before each message
        base = np.array(
            [-t.seq if b < 0 else before[b] for t, b in zip(txns, begins, strict=True)],
            dtype=np.int64,
        )
        final_lsn = np.array([t.begin.final_lsn for t in txns], dtype=np.int64)
        xid = np.array([t.begin.xid for t in txns], dtype=np.int64)
        commit_us = np.array([_micros(t.begin.commit_time) for t in txns], dtype=np.int64)
        written_in_txn = np.zeros(len(txns), dtype=np.int64)
        ordered: dict[str, tuple[np.ndarray, pa.Table]] = {}
        last_row = np.full(n, -1, dtype=np.int64)  # a message's last written row: its seq
        for qualified, (rows, order, msg) in tables.items():
            txn = txn_of[msg]
            seq = before[msg] - base[txn] + 1 + rows["sub"].to_numpy()[order]
            commit_lsn = final_lsn[txn]
            new = (commit_lsn > committed.commit_lsn) | (
                (commit_lsn == committed.commit_lsn) & (seq > committed.seq)
            )
            keep = np.flatnonzero(new)
            written_in_txn += np.bincount(txn[keep], minlength=len(txns))
            np.maximum.at(last_row, msg[keep], seq[keep])
            picked = order[keep]
            fields = rows.select(list(ROW_FIELDS))
            if len(picked) != rows.num_rows or (picked[1:] < picked[:-1]).any():
                fields = fields.take(picked)  # one copy, only when out of order or re-read
            msg, txn, seq = msg[keep], txn[keep], seq[keep]
            rows = pa.Table.from_arrays(
                [
                    *fields.columns,
                    pa.array(batch.lsn[msg], pa.int64()),
                    pa.array(final_lsn[txn], pa.int64()),
                    pa.array(seq, pa.int64()),
                    pa.array(xid[txn], pa.int64()),
                    pa.array(commit_us[txn] + _PG_EPOCH_US, pa.timestamp("us", tz="UTC")),
                ],
                schema=_ROWS,
            )
            ordered[qualified] = (msg, rows)
        for t, count in zip(txns, written_in_txn.tolist(), strict=True):
            t.written += count
        written = np.zeros(n, dtype=np.int64)
        for msg, _ in ordered.values():
            written += np.bincount(msg, minlength=n)
        self.written += int(written.sum())
        self.transactions += sum(
            1 for _, number, _ in commits if number is not None and txns[number].written > 0
        )

        # Commit whenever batch_size rows are buffered, as the per-message loop did.
        commit_at = np.array([i for i, _, _ in commits], dtype=np.int64)
        commit_end = [end for _, _, end in commits]
        with_rows = np.flatnonzero(written)
        total = self.pending + np.cumsum(written)
        taken = 0  # rows of this batch handed to the buffers so far
        done = -1  # messages up to here are in the buffers
        while True:
            cut = int(np.searchsorted(total, taken + self.batch_size, "left"))
            if cut >= n or total[cut] - taken < self.batch_size:
                break
            self._buffer(ordered, done, cut, txn_of, final_lsn, last_row, with_rows)
            ended = int(np.searchsorted(commit_at, cut))
            if ended:
                self.last_end = commit_end[ended - 1]
            confirmed = self._flush_and_advance(self.last_end, confirmed)
            taken = int(total[cut])
            done = cut
        self._buffer(ordered, done, n - 1, txn_of, final_lsn, last_row, with_rows)
        if commit_end:
            self.last_end = commit_end[-1]
        self.open_txn = None
        if current is not None:
            self.open_txn = txns[current]
            self.open_txn.seq = int(before[n] - base[current])
        return confirmed

    def _buffer(
        self,
        ordered: dict[str, tuple[np.ndarray, pa.Table]],
        done: int,
        upto: int,
        txn_of: np.ndarray,
        final_lsn: np.ndarray,
        last_row: np.ndarray,
        with_rows: np.ndarray,
    ) -> None:
        """Move the rows of messages ``(done, upto]`` to the buffers; the last of them is the
        position the next commit records."""
        for qualified, (msg, rows) in ordered.items():
            lo, hi = np.searchsorted(msg, [done, upto], "right")
            if hi > lo:
                self.buffers[qualified].append(rows.slice(lo, hi - lo))
                self.pending += int(hi - lo)
        last = with_rows[(with_rows > done) & (with_rows <= upto)]
        if len(last):
            m = int(last[-1])
            self.last_written = Position(int(final_lsn[txn_of[m]]), int(last_row[m]))

    def _decode_rows(
        self,
        batch: MessageBatch,
        lo: int,
        hi: int,
        is_row: np.ndarray,
        txn_of: np.ndarray,
        relations: RelationCache,
        pieces: dict[str, list[pa.Table]],
    ) -> None:
        """Add the rows of the row changes among messages ``[lo, hi)`` inside a transaction."""
        index = lo + np.flatnonzero(is_row[lo:hi] & (txn_of[lo:hi] >= 0))
        for table, found in decode_changes(batch, index, relations, self.keys).items():
            pieces[table] += found

    def _relation(self, message: Relation, lsn: int) -> None:
        qualified = _qualified(message)
        if qualified not in self.buffers:
            return
        new = [[c.name, c.type_oid, c.type_modifier] for c in message.columns]
        old = self.columns.get(qualified)
        if old is None:
            stored = self.stored(f"columns:{qualified}")
            old = json.loads(stored) if stored else None
        if old is not None and old != new:
            for change in _diff(qualified, old, new, int_to_lsn(lsn)):
                log.warning("%s: %s", self.spec.name, change.detail)
                self.schema_changes.append(change)
        if old != new:
            self.schema_dirty.add(qualified)
        self.columns[qualified] = new


def decode_changes(
    batch: MessageBatch,
    index: np.ndarray,
    relations: RelationCache,
    keys: dict[str, list[str] | None],
) -> dict[str, list[pa.Table]]:
    """The bronze rows of the row changes ``index`` of ``batch`` (messages of one set of
    Relation messages, inside transactions), per captured table (``keys``: each one's
    change-log key, None for the whole row), as pieces of ``_PIECE``: built column by column a
    relation and a message type at a time, the rare message the columns do not take by
    :func:`change_rows`. Raises ``PgOutputError`` for a malformed message."""
    pieces: dict[str, list[pa.Table]] = {q: [] for q in keys}
    if not len(index):
        return pieces
    short = index[batch.end[index] - batch.start[index] < 6]  # no room for oid and tag
    for m in short.tolist():
        decode(batch.datas[m])  # raises, naming what is missing
        raise PgOutputError(f"a {len(batch.datas[m])}-byte row change")  # pragma: no cover
    oid = batch.be32(batch.start[index] + 1)
    group = batch.kind[index].astype(np.int64) << 32 | oid
    for value in np.unique(group).tolist():
        messages = index[group == value]
        relation = relations.relation(value & 0xFFFFFFFF)
        qualified = _qualified(relation)
        if qualified not in keys:
            continue
        kind = value >> 32
        rows = _Rows(batch, messages, relation, keys[qualified])
        try:
            if kind == _I:
                slow = rows.inserts()
            elif kind == _D:
                slow = rows.deletes()
            else:
                slow = rows.updates()
        except pa.ArrowInvalid:  # a value that is not UTF-8: the decoder says which
            rows.pieces.clear()
            slow = messages
        pieces[qualified] += rows.pieces
        for m in slow.tolist():  # the rare message the columns do not take
            changed = change_rows(decode(batch.datas[m]), relations, keys)
            for sub, (table, fields) in enumerate(changed):
                pieces[table].append(
                    _piece(
                        np.array([m]), sub, **{f: constant(fields.get(f), 1) for f in ROW_FIELDS}
                    )
                )
    return pieces


def change_rows(
    message: Message, relations: RelationCache, keys: dict[str, list[str] | None]
) -> list[tuple[str, dict[str, Any]]]:
    """The bronze rows of one row change of a captured table (none for another table), one
    message at a time in Python: two for a primary-key update. The reference the columns of
    :func:`decode_changes` match, and their fallback for what they do not take (an unchanged
    TOAST value with no old row to fill it from, a binary value)."""
    assert isinstance(message, Insert | Update | Delete)
    relation = relations.relation(message.relation_oid)
    qualified = _qualified(relation)
    if qualified not in keys:
        return []
    key = keys[qualified]
    if isinstance(message, Insert):
        after = relations.row(message.relation_oid, message.new)
        return [(qualified, {"op": "c", "key": _key(after, key), "after": _dumps(after)})]
    if isinstance(message, Delete):
        old = relations.row(message.relation_oid, message.old)
        before = _dumps(old) if message.old_kind == "O" else None
        return [(qualified, {"op": "d", "key": _key(old, key), "before": before})]
    new = relations.row(message.relation_oid, message.new)
    old = relations.row(message.relation_oid, message.old) if message.old is not None else None
    unchanged = [c for c, v in new.items() if v is UNCHANGED_TOAST]
    for column in unchanged:  # not sent: the old row has it under REPLICA IDENTITY FULL
        if old is not None and message.old_kind == "O" and old[column] is not UNCHANGED_TOAST:
            new[column] = old[column]
    missing = [c for c, v in new.items() if v is UNCHANGED_TOAST]
    after = {c: v for c, v in new.items() if v is not UNCHANGED_TOAST}
    before = _dumps(old) if old is not None and message.old_kind == "O" else None
    new_key = _key(new, key)
    toast = ",".join(missing) or None
    if old is not None and _key(old, key) != new_key:  # a primary-key update
        return [
            (qualified, {"op": "d", "key": _key(old, key), "before": before}),
            (
                qualified,
                {"op": "c", "key": new_key, "after": _dumps(after), "unchanged_toast": toast},
            ),
        ]
    return [
        (
            qualified,
            {
                "op": "u",
                "key": new_key,
                "before": before,
                "after": _dumps(after),
                "unchanged_toast": toast,
            },
        )
    ]


class _Rows:
    """The bronze rows of the row changes of one relation and one message type in a batch,
    built column by column (``pieces``). Each method returns the messages it left to the
    per-message path: anything but well-formed text tuples of the relation's width, and an
    update's unchanged TOAST value that no old row fills."""

    def __init__(
        self,
        batch: MessageBatch,
        messages: np.ndarray,
        relation: Relation,
        keys: list[str] | None,
    ) -> None:
        self.batch = batch
        self.messages = messages
        self.names = list(relation.column_names)
        self.keys = self.names if keys is None else keys
        self.start = batch.start[messages]
        self.end = batch.end[messages]
        self.tag = batch.u8(self.start + 5)
        self.pieces: list[pa.Table] = []

    def _tuples(self, pos: np.ndarray) -> Tuples:
        return self.batch.read_tuples(pos, self.end, len(self.names))

    def _columns(self, tuples: Tuples, rows: np.ndarray) -> dict[str, pa.Array]:
        """Each column's values for ``rows`` (positions in ``messages``)."""
        columns = {}
        for j, name in enumerate(self.names):
            kinds = tuples.kinds[j, rows]
            columns[name] = self.batch.strings(
                tuples.starts[j, rows], tuples.lengths[j, rows], kinds == TEXT
            )
        return columns

    def _json(self, names: list[str], columns: dict[str, pa.Array], length: int) -> pa.Array:
        values = [columns.get(n, constant(None, length)) for n in names]
        return json_objects(names, values, length)

    def _split(self, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.flatnonzero(good), self.messages[~good]

    def inserts(self) -> np.ndarray:
        new = self._tuples(self.start + 6)
        rows, slow = self._split(
            (self.tag == _N) & new.ok & (new.end == self.end) & (new.kinds != UNCHANGED).all(0)
        )
        if len(rows):
            columns = self._columns(new, rows)
            self.pieces.append(
                _piece(
                    self.messages[rows],
                    0,
                    op=constant("c", len(rows)),
                    key=self._json(self.keys, columns, len(rows)),
                    after=self._json(self.names, columns, len(rows)),
                )
            )
        return slow

    def deletes(self) -> np.ndarray:
        old = self._tuples(self.start + 6)
        rows, slow = self._split(
            ((self.tag == _K) | (self.tag == _O))
            & old.ok
            & (old.end == self.end)
            & (old.kinds != UNCHANGED).all(0)
        )
        if len(rows):
            columns = self._columns(old, rows)
            n = len(rows)
            full = self.tag[rows] == _O
            before = None
            if full.any():
                before = pc.if_else(
                    pa.array(full), self._json(self.names, columns, n), constant(None, n)
                )
            self.pieces.append(
                _piece(
                    self.messages[rows],
                    0,
                    op=constant("d", n),
                    key=self._json(self.keys, columns, n),
                    before=before,
                )
            )
        return slow

    def updates(self) -> np.ndarray:
        has_old = (self.tag == _K) | (self.tag == _O)
        old = self._tuples(self.start + 6)  # meaningless where there is no old tuple
        new_at = np.where(has_old, old.end + 1, self.start + 6)
        new = self._tuples(new_at)
        tag_ok = np.where(
            has_old,
            old.ok & (self.batch.u8(old.end) == _N) & (old.kinds != UNCHANGED).all(0),
            self.tag == _N,
        )
        # An unchanged TOAST value is not sent; under REPLICA IDENTITY FULL the old row has it.
        fill = (new.kinds == UNCHANGED) & (self.tag == _O) & (old.kinds != UNCHANGED)
        new_kinds = np.where(fill, old.kinds, new.kinds)
        new = Tuples(
            new_kinds,
            np.where(fill, old.starts, new.starts),
            np.where(fill, old.lengths, new.lengths),
            new.end,
            new.ok,
        )
        rows, slow = self._split(
            tag_ok & new.ok & (new.end == self.end) & (new_kinds != UNCHANGED).all(0)
        )
        if not len(rows):
            return slow
        n = len(rows)
        columns = self._columns(new, rows)
        after = self._json(self.names, columns, n)
        new_key = self._json(self.keys, columns, n)
        with_old = has_old[rows]
        before = old_key = None
        moved = np.zeros(n, dtype=bool)
        if with_old.any():
            # Old values only where an old tuple was sent; NULL rows elsewhere.
            present = np.flatnonzero(with_old)
            old_columns = self._columns(old, rows[present])
            spread = pa.array(np.cumsum(with_old) - 1, pa.int64(), mask=~with_old)
            old_columns = {name: column.take(spread) for name, column in old_columns.items()}
            full = self.tag[rows] == _O
            if full.any():
                before = pc.if_else(
                    pa.array(full), self._json(self.names, old_columns, n), constant(None, n)
                )
            old_key = self._json(self.keys, old_columns, n)
            same = pc.fill_null(pc.equal(old_key, new_key), True)
            moved = with_old & ~same.to_numpy(zero_copy_only=False)
        stay = np.flatnonzero(~moved)
        if len(stay):
            self.pieces.append(
                _piece(
                    self.messages[rows[stay]],
                    0,
                    op=constant("u", len(stay)),
                    key=new_key.take(stay),
                    before=None if before is None else before.take(stay),
                    after=after.take(stay),
                )
            )
        go = np.flatnonzero(moved)
        if len(go):  # a primary-key update: a delete of the old key, a create of the new
            assert old_key is not None
            self.pieces.append(
                _piece(
                    self.messages[rows[go]],
                    0,
                    op=constant("d", len(go)),
                    key=old_key.take(go),
                    before=None if before is None else before.take(go),
                )
            )
            self.pieces.append(
                _piece(
                    self.messages[rows[go]],
                    1,
                    op=constant("c", len(go)),
                    key=new_key.take(go),
                    after=after.take(go),
                )
            )
        return slow


class _SnapshotRows:
    """A table's snapshot as bronze rows: PostgreSQL's CSV (``COPY … TO STDOUT``) parsed by
    Arrow, JSON built by Arrow, fed to DuckDB in INSERTs of whole row groups."""

    def __init__(
        self, names: list[str], keys: list[str], *, first_seq: int, lsn: int, taken_at: Any
    ) -> None:
        self.names = names
        self.keys = keys
        self.next_seq = first_seq
        self.lsn = lsn
        self.taken_at = pa.scalar(taken_at, pa.timestamp("us", tz="UTC"))
        self.rows = 0

    def tables(self, stream: Any) -> Iterator[pa.Table]:
        """The rows in tables of exactly ``SNAPSHOT_INSERT_ROWS`` (the last one less): one
        INSERT each, whole row groups that DuckDB writes as they come, leaving no partial
        row group between two INSERTs for the checkpoint to rewrite."""
        pending: list[pa.RecordBatch] = []
        count = 0
        for batch in self._batches(stream):
            pending.append(batch)
            count += batch.num_rows
            while count >= SNAPSHOT_INSERT_ROWS:
                rows = pa.Table.from_batches(pending, _NUMBERED)
                yield rows.slice(0, SNAPSHOT_INSERT_ROWS)
                rest = rows.slice(SNAPSHOT_INSERT_ROWS)
                pending, count = rest.to_batches(), rest.num_rows
        if count:
            yield pa.Table.from_batches(pending, _NUMBERED)

    def _batches(self, stream: Any) -> Iterator[pa.RecordBatch]:
        head = stream.read(1)
        if not head:
            return  # an empty table: no CSV at all
        csv = pcsv.open_csv(
            _Prepend(head, stream),
            read_options=pcsv.ReadOptions(column_names=self.names, block_size=_CSV_BLOCK),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types={n: STRING for n in self.names},
                strings_can_be_null=True,
                null_values=[""],  # NULL is an unquoted empty field; "" an empty string
                quoted_strings_can_be_null=False,
            ),
        )
        for values in csv:
            yield self._rows(values)

    def _rows(self, values: pa.RecordBatch) -> pa.RecordBatch:
        n = values.num_rows
        seq = np.arange(self.next_seq, self.next_seq + n, dtype=np.int64)
        self.next_seq += n
        self.rows += n
        columns = dict(zip(self.names, values.columns, strict=True))
        keys = [columns.get(k, constant(None, n)) for k in self.keys]
        seqs = pa.array(seq, pa.int64())
        return pa.RecordBatch.from_arrays(
            [
                constant("r", n),
                json_objects(self.keys, keys, n),
                constant(None, n),
                json_objects(self.names, values.columns, n),
                constant(None, n),
                pa.array(np.full(n, self.lsn, dtype=np.int64)),
                pa.array(np.full(n, self.lsn, dtype=np.int64)),
                seqs,
                pa.nulls(n, pa.int64()),
                pa.repeat(self.taken_at, n),
                seqs,  # unique in the snapshot's one batch
            ],
            schema=_NUMBERED,
        )


_NUMBERED = _ROWS.append(pa.field("_row_number", pa.int64()))


class _Prepend(io.RawIOBase):
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._rest.readinto(buffer)


def _qualified(relation: Relation) -> str:
    return f"{relation.namespace}.{relation.name}"


def _micros(moment: Any) -> int:
    """Microseconds since PostgreSQL's epoch (2000-01-01 UTC)."""
    return (moment - _PG_EPOCH) // timedelta(microseconds=1)


def _spans(datas: list[bytes], limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive ranges of messages of at most ``limit`` bytes together (a larger message
    alone)."""
    ends = np.cumsum(np.fromiter(map(len, datas), dtype=np.int64, count=len(datas)))
    lo = 0
    while lo < len(datas):
        floor = ends[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(ends, floor + limit, "right")), lo + 1)
        yield lo, hi
        lo = hi


def _key(row: dict[str, Any], keys: list[str] | None) -> str:
    """The change's key as JSON: the key columns, or the whole row (None)."""
    return _dumps({k: row.get(k) for k in (row if keys is None else keys)})


def _diff(table: str, old: list[list[Any]], new: list[list[Any]], lsn: str) -> list[SchemaChange]:
    before = {name: tuple(kind) for name, *kind in old}
    after = {name: tuple(kind) for name, *kind in new}
    changes = []
    for name in after.keys() - before.keys():
        changes.append(
            SchemaChange(
                table=table,
                column=name,
                change="added",
                lsn=lsn,
                detail=f"{table}.{name} was added (at {lsn})",
            )
        )
    for name in before.keys() - after.keys():
        changes.append(
            SchemaChange(
                table=table,
                column=name,
                change="dropped",
                lsn=lsn,
                detail=f"{table}.{name} was dropped (at {lsn})",
            )
        )
    for name in before.keys() & after.keys():
        if before[name] != after[name]:
            changes.append(
                SchemaChange(
                    table=table,
                    column=name,
                    change="type_changed",
                    lsn=lsn,
                    detail=f"{table}.{name} changed type (oid, typmod) {before[name]} -> "
                    f"{after[name]} at {lsn}",
                )
            )
    return sorted(changes, key=lambda c: (c.change, c.column))


def ingest_cdc(
    warehouse: Warehouse,
    source: PostgresChangeSource,
    *,
    run_id: str | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> CdcIngestReport:
    """Snapshot (first run) and every committed change since, into the bronze change logs."""
    spec = source.spec
    with warehouse.connect() as conn, checkpoint_threshold(conn):
        with transaction(conn):
            for table in spec.tables:
                ensure_bronze_table(conn, spec.bronze_table(table), CDC_COLUMNS)
        capture = _Capture(conn, source, run_id, batch_size or spec.batch_size, on_batch)
        snapshot_rows = 0
        if capture.stored("snapshot") is None:
            snapshot_rows = capture.snapshot()
        changes, transactions, confirmed = capture.stream()
        return CdcIngestReport(
            source=spec.name,
            snapshot_rows=snapshot_rows,
            changes=changes,
            transactions=transactions,
            batch_ids=capture.batch_ids,
            rows_by_table={
                spec.bronze_table(t): capture.rows_by_table[t.qualified] for t in spec.tables
            },
            position=capture.stored("change"),
            confirmed_lsn=int_to_lsn(confirmed) if confirmed is not None else None,
            schema_changes=capture.schema_changes,
            warnings=capture.warnings,
        )


__all__ = ["CDC_COLUMNS", "CdcIngestReport", "Position", "SchemaChange", "ingest_cdc"]
