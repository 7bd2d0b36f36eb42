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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from medallion_platform.connectors.bronze import append_batch, ensure_bronze_table
from medallion_platform.connectors.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
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
from medallion_platform.warehouse import Warehouse
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
_ARROW_TYPES = {
    "BIGINT": pa.int64(),
    "VARCHAR": pa.string(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
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
    """Compact JSON; one shared encoder (``json.dumps`` with options builds one per call)."""
    return _ENCODER.encode(row)


class _Rows:
    """Bronze rows being gathered for one table, column by column."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {
            name: [] for name in (*CDC_COLUMNS, "_source", "_row_number")
        }

    def __len__(self) -> int:
        return len(self.columns["op"])

    def add(self, **values: Any) -> None:
        for name, column in self.columns.items():
            column.append(values.get(name))

    def table(self) -> pa.Table:
        types = {n: _ARROW_TYPES[t] for n, t in CDC_COLUMNS.items()}
        types |= {"_source": pa.string(), "_row_number": pa.int64()}
        return pa.table({n: pa.array(v, types[n]) for n, v in self.columns.items()})


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
        self.buffers: dict[str, _Rows] = {t.qualified: _Rows() for t in self.spec.tables}
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
        self.pending = 0  # rows in the buffers (checked after every change: kept, not summed)
        self._commit_lsn_text = (-1, "")

    # -- bookkeeping ---------------------------------------------------------------------

    def stored(self, key: str) -> str | None:
        row = self.conn.execute(
            "SELECT position FROM _meta.positions WHERE source = ? AND key = ?",
            [position_source(self.spec), key],
        ).fetchone()
        return row[0] if row else None

    def buffered(self) -> int:
        return self.pending

    def _append_buffers(self, batch_id: int) -> None:
        for qualified, rows in self.buffers.items():
            if len(rows):
                table = self.spec.table(qualified)
                assert table is not None
                append_batch(
                    self.conn,
                    self.spec.bronze_table(table),
                    rows.table(),
                    batch_id=batch_id,
                    lineage=CDC_COLUMNS,
                )
                self.rows_by_table[qualified] += len(rows)
                self.buffers[qualified] = _Rows()
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
                    keys = self.keys[table.qualified] or names
                    self.columns[table.qualified] = [list(c) for c in columns]
                    self.schema_dirty.add(table.qualified)
                    buffer = self.buffers[table.qualified]
                    where = f"{self.spec.name}:{table.qualified}@snapshot {lsn_text}"
                    for values in reader.rows(table, names):
                        rows += 1
                        after = dict(zip(names, values, strict=True))
                        buffer.add(
                            op="r",
                            source_table=table.qualified,
                            key=_dumps({k: after[k] for k in keys}),
                            after=_dumps(after),
                            lsn=lsn_text,
                            commit_lsn=snap.consistent_lsn,
                            seq=rows,
                            commit_ts=taken_at,
                            _source=f"{where}#{rows}",
                            _row_number=rows,  # unique in the snapshot's one batch
                        )
                        if len(buffer) >= self.batch_size:
                            self._append_buffers(batch_id)
                            buffer = self.buffers[table.qualified]
                self._append_buffers(batch_id)
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
        written = transactions = 0
        txn: Begin | None = None
        seq = 0
        txn_rows = 0
        last_end: int | None = None
        # Everything committed before this WAL position is read now; afterwards the slot can
        # move up to it even when its last transactions published nothing of ours (else the
        # lag the sensor watches would never drain). The flush position, unless decoding up
        # to it would wait for WAL that nothing flushes (see readable_upto).
        upto = self.source.readable_upto(state.current_lsn)
        for lsn, data in self.source.changes(upto):
            message = decode(data)
            if isinstance(message, Relation):
                relations.apply(message)
                self._relation(message, lsn)
                continue
            if isinstance(message, Begin):
                txn, seq, txn_rows = message, 0, 0
                continue
            if isinstance(message, Commit):
                last_end = message.end_lsn
                transactions += txn_rows > 0
                txn = None
                if self.buffered() >= self.batch_size:
                    confirmed = self._flush_and_advance(last_end, confirmed)
                continue
            if txn is None or not isinstance(message, Insert | Update | Delete | Truncate):
                continue  # Type, Origin, logical messages: nothing for bronze
            for row in self._rows(message, relations, txn, lsn):
                seq += 1
                position = Position(txn.final_lsn, seq)
                if position <= committed:
                    continue  # re-read after a crash between commit and slot advance
                table, values = row
                values |= {"seq": seq, "_source": f"{values['_source']}#{seq}"}
                buffer = self.buffers[table]
                buffer.add(**values, _row_number=len(buffer) + 1)
                self.pending += 1
                self.last_written = position
                written += 1
                txn_rows += 1
            if self.buffered() >= self.batch_size:  # inside a large transaction: bounded memory
                confirmed = self._flush_and_advance(last_end, confirmed)
        return written, transactions, self._flush_and_advance(max(upto, last_end or 0), confirmed)

    def _flush_and_advance(self, last_end: int | None, confirmed: int) -> int:
        """Commit the buffers, then move the slot past every transaction now fully in bronze."""
        self.flush()
        if last_end is not None and last_end > confirmed:
            self.source.advance(last_end)
            return last_end
        return confirmed

    def _relation(self, message: Relation, lsn: int) -> None:
        qualified = f"{message.namespace}.{message.name}"
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

    def _rows(
        self,
        message: Insert | Update | Delete | Truncate,
        relations: RelationCache,
        txn: Begin,
        lsn: int,
    ) -> list[tuple[str, dict[str, Any]]]:
        """The bronze rows for one change (two for a primary-key update, one per table for a
        TRUNCATE); ``seq`` and the row number are filled in by the caller."""
        common = {
            "lsn": int_to_lsn(lsn),
            "commit_lsn": txn.final_lsn,
            "xid": txn.xid,
            "commit_ts": txn.commit_time,
        }
        if isinstance(message, Truncate):
            out = []
            for oid in message.relation_oids:
                relation = relations.relation(oid)
                qualified = f"{relation.namespace}.{relation.name}"
                if qualified in self.buffers:
                    out.append(
                        (
                            qualified,
                            {
                                **common,
                                "op": "t",
                                "source_table": qualified,
                                "_source": self._where(qualified, txn),
                            },
                        )
                    )
            return out
        relation = relations.relation(message.relation_oid)
        qualified = f"{relation.namespace}.{relation.name}"
        if qualified not in self.buffers:
            return []
        keys = self.keys[qualified]
        base = {**common, "source_table": qualified, "_source": self._where(qualified, txn)}
        if isinstance(message, Insert):
            after = relations.row(message.relation_oid, message.new)
            return [
                (qualified, base | {"op": "c", "key": _key(after, keys), "after": _dumps(after)})
            ]
        if isinstance(message, Delete):
            old = relations.row(message.relation_oid, message.old)
            before = _dumps(old) if message.old_kind == "O" else None
            return [(qualified, base | {"op": "d", "key": _key(old, keys), "before": before})]
        new = relations.row(message.relation_oid, message.new)
        old = relations.row(message.relation_oid, message.old) if message.old is not None else None
        unchanged = [c for c, v in new.items() if v is UNCHANGED_TOAST]
        for column in unchanged:  # not sent: the old row has it under REPLICA IDENTITY FULL
            if old is not None and message.old_kind == "O" and old[column] is not UNCHANGED_TOAST:
                new[column] = old[column]
        missing = [c for c, v in new.items() if v is UNCHANGED_TOAST]
        after = {c: v for c, v in new.items() if v is not UNCHANGED_TOAST}
        before = _dumps(old) if old is not None and message.old_kind == "O" else None
        new_key = _key(new, keys)
        if old is not None and _key(old, keys) != new_key:  # a primary-key update
            return [
                (qualified, base | {"op": "d", "key": _key(old, keys), "before": before}),
                (
                    qualified,
                    base
                    | {
                        "op": "c",
                        "key": new_key,
                        "after": _dumps(after),
                        "unchanged_toast": ",".join(missing) or None,
                    },
                ),
            ]
        return [
            (
                qualified,
                base
                | {
                    "op": "u",
                    "key": new_key,
                    "before": before,
                    "after": _dumps(after),
                    "unchanged_toast": ",".join(missing) or None,
                },
            )
        ]

    def _where(self, qualified: str, txn: Begin) -> str:
        if self._commit_lsn_text[0] != txn.final_lsn:  # once per transaction, not per change
            self._commit_lsn_text = (txn.final_lsn, int_to_lsn(txn.final_lsn))
        return f"{self.spec.name}:{qualified}@{self._commit_lsn_text[1]}"


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
    with warehouse.connect() as conn:
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
