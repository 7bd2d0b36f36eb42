"""What is in the warehouse, read-only: tables per layer, positions, files, quarantine,
each stream's committed offsets beside the broker's latest (its lag), and each CDC source's
replication slot (confirmed LSN, lag in bytes, last captured commit)."""

from __future__ import annotations

import os
from datetime import datetime

import duckdb
from pydantic import BaseModel, computed_field

from medallion_platform.config import platform_config
from medallion_platform.connectors.cdc.pgoutput import int_to_lsn
from medallion_platform.connectors.cdc.postgres import PostgresChangeSource
from medallion_platform.connectors.cdc.spec import CdcSource
from medallion_platform.connectors.files.landing import unmatched_files
from medallion_platform.connectors.streams import BrokerUnavailable
from medallion_platform.connectors.streams.spec import StreamSpec
from medallion_platform.contracts.drift import DriftReport, detect_drift
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import LAYER_SCHEMAS, Warehouse
from medallion_platform.warehouse.identifiers import qualified
from medallion_platform.warehouse.warehouse import table_exists


class TableStatus(BaseModel):
    layer: str
    table: str
    rows: int
    last_batch_id: int | None


class PositionStatus(BaseModel):
    source: str
    key: str
    position: str
    batch_id: int | None
    committed_at: datetime


class FileIssue(BaseModel):
    feed: str
    path: str
    status: str
    reason: str | None
    stored_at: str | None


class StreamPartitionStatus(BaseModel):
    partition: str
    committed: str | None
    latest: str | None
    lag: int | None


class StreamStatus(BaseModel):
    stream: str
    topic: str
    broker: str
    reachable: bool
    note: str | None = None
    partitions: list[StreamPartitionStatus]

    @computed_field
    @property
    def lag(self) -> int | None:
        """Messages waiting on the broker after the committed offsets (None: not asked)."""
        return sum(p.lag or 0 for p in self.partitions) if self.reachable else None


class SlotStatus(BaseModel):
    """A CDC source: what the warehouse committed, and its slot as the server reports it."""

    source: str
    slot: str
    committed_position: str | None
    last_commit_ts: datetime | None
    reachable: bool = False
    confirmed_lsn: str | None = None
    current_lsn: str | None = None
    lag_bytes: int | None = None
    active: bool | None = None
    note: str | None = None


class PlatformStatus(BaseModel):
    warehouse: str
    tables: list[TableStatus]
    positions: list[PositionStatus]
    streams: list[StreamStatus] = []
    slots: list[SlotStatus] = []
    files: dict[str, dict[str, int]]
    file_issues: list[FileIssue]
    unmatched_files: list[str] = []
    """Files in a feed's landing folder that no feed's glob takes: never loaded."""
    drift: list[DriftReport] = []
    """Contracts whose inputs lack one of their columns or carry new ones."""
    quarantine: dict[str, int]
    watermarks: dict[str, int]


def read_status(
    settings: PlatformSettings,
    lock_timeout_s: float = 60.0,
    streams: list[StreamSpec] | None = None,
    cdc_sources: list[CdcSource] | None = None,
) -> PlatformStatus:
    """Open the warehouse read-only (waiting for a running writer) and summarize it; then ask
    each declared stream's broker (address from the environment) for its latest offsets."""
    path = settings.warehouse_path
    if not path.exists():
        raise FileNotFoundError(
            f"No warehouse at {path}. Run `medallion demo` (or a job) first, or set "
            "MEDALLION_HOME to the platform home you meant."
        )
    cdc_sources = platform_config().cdc_sources if cdc_sources is None else cdc_sources
    warehouse = Warehouse(path, read_only=True, lock_timeout_s=lock_timeout_s)
    with warehouse.connect() as conn:
        status = _status(conn, str(path))
        last_commits = {s.name: _last_commit(conn, s) for s in cdc_sources}
        drift = [detect_drift(conn, c) for c in platform_config().contracts]
        status.drift = [report for report in drift if report.drifted]
    # The brokers are asked after the warehouse is closed: a slow broker holds no lock.
    committed: dict[str, dict[str, str]] = {}
    for p in status.positions:
        if p.source.startswith("stream:"):
            committed.setdefault(p.source.removeprefix("stream:"), {})[p.key] = p.position
    streams = platform_config().streams if streams is None else streams
    status.streams = [_stream_status(s, committed.get(s.name, {})) for s in streams]
    status.unmatched_files = unmatched_files(settings.landing_dir, platform_config().feeds)
    cdc_positions = {p.source: p.position for p in status.positions if p.key == "change"}
    status.slots = [
        _slot_status(s, cdc_positions.get(f"cdc:{s.name}"), last_commits[s.name])
        for s in cdc_sources
    ]
    return status


def _last_commit(conn: duckdb.DuckDBPyConnection, spec: CdcSource) -> datetime | None:
    """The newest source commit captured in bronze (snapshot rows: when it was taken)."""
    tables = [
        spec.bronze_table(t)
        for t in spec.tables
        if table_exists(conn, "bronze", spec.bronze_table(t))
    ]
    if not tables:
        return None
    union = " UNION ALL ".join(
        f"SELECT max(commit_ts) AS ts FROM {qualified('bronze', t)}" for t in tables
    )
    return conn.execute(f"SELECT max(ts) FROM ({union})").fetchone()[0]


def _slot_status(
    spec: CdcSource, committed: str | None, last_commit: datetime | None
) -> SlotStatus:
    status = SlotStatus(
        source=spec.name,
        slot=spec.slot_name,
        committed_position=committed,
        last_commit_ts=last_commit,
    )
    if not os.environ.get(spec.dsn_env):
        status.note = f"{spec.dsn_env} is not set: database not asked"
        return status
    try:
        state = PostgresChangeSource.from_env(spec).slot_state()
    except Exception as exc:  # unreachable: say so (libpq's text never holds the password)
        status.note = f"database unreachable: {str(exc).splitlines()[0]}"
        return status
    status.reachable = True
    if state is None:
        status.note = "no replication slot yet: the first run creates it and takes a snapshot"
        return status
    status.confirmed_lsn = int_to_lsn(state.confirmed_lsn)
    status.current_lsn = int_to_lsn(state.current_lsn)
    status.lag_bytes = state.lag_bytes
    status.active = state.active
    return status


def _stream_status(spec: StreamSpec, committed: dict[str, str]) -> StreamStatus:
    """Committed offsets (warehouse) beside the broker's latest, when the broker answers."""
    address = os.environ.get(spec.address_env)
    partitions = {p: StreamPartitionStatus(partition=p, committed=o, latest=None, lag=None)
                  for p, o in committed.items()}  # fmt: skip
    status = StreamStatus(
        stream=spec.name, topic=spec.topic, broker=spec.broker, reachable=False, partitions=[]
    )
    if not address:
        status.note = f"{spec.address_env} is not set: broker not asked"
    else:
        password = os.environ.get(spec.password_env) if spec.password_env else None
        security = spec.kafka_security
        username_env = security.username_env if security else None
        latest: dict[str, str] = {}
        lags: dict[str, int] = {}
        try:
            source = spec.source(address, password, os.environ.get(username_env or "") or None)
        except ValueError as exc:  # e.g. SASL configured, credentials not set
            status.note = str(exc)
        else:
            try:
                latest = source.latest()
                lags = source.lag(committed)
                status.reachable = True
            except BrokerUnavailable as exc:
                status.note = f"broker unreachable: {exc}"
            finally:
                source.close()
        for p in sorted(set(partitions) | set(latest) | set(lags), key=_partition_order):
            entry = partitions.setdefault(
                p, StreamPartitionStatus(partition=p, committed=None, latest=None, lag=None)
            )
            entry.latest = latest.get(p)
            entry.lag = lags.get(p)
    status.partitions = sorted(partitions.values(), key=lambda e: _partition_order(e.partition))
    return status


def _partition_order(partition: str) -> tuple[int, str]:
    return (int(partition), "") if partition.isdigit() else (0, partition)


def _status(conn: duckdb.DuckDBPyConnection, path: str) -> PlatformStatus:
    tables = []
    layers = [s for s in LAYER_SCHEMAS if s != "_meta"]
    for schema, table in conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN (SELECT unnest(?)) ORDER BY 1, 2",
        [layers],
    ).fetchall():
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ?",
                [schema, table],
            ).fetchall()
        }
        batch = "max(_batch_id)" if "_batch_id" in columns else "NULL"
        rows, last = conn.execute(
            f"SELECT count(*), {batch} FROM {qualified(schema, table)}"
        ).fetchone()
        tables.append(TableStatus(layer=schema, table=table, rows=rows, last_batch_id=last))

    has_meta = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = '_meta'"
    ).fetchone()[0]
    positions, files, issues, watermarks = [], {}, [], {}
    if has_meta:
        positions = [
            PositionStatus(source=s, key=k, position=p, batch_id=b, committed_at=t)
            for s, k, p, b, t in conn.execute(
                "SELECT source, key, position, batch_id, committed_at FROM _meta.positions "
                "WHERE key NOT IN ('contract', 'model', 'resets') ORDER BY 1, 2"
            ).fetchall()
        ]
        for feed, status, n in conn.execute(
            "SELECT feed, status, count(*) FROM _meta.files GROUP BY ALL ORDER BY ALL"
        ).fetchall():
            files.setdefault(feed, {})[status] = n
        issues = [
            FileIssue(feed=f, path=p, status=s, reason=r, stored_at=a)
            for f, p, s, r, a in conn.execute(
                "SELECT feed, path, status, reason, stored_at FROM _meta.files "
                "WHERE status <> 'loaded' OR reason IS NOT NULL ORDER BY batch_id"
            ).fetchall()
        ]
        watermarks = dict(
            conn.execute("SELECT consumer, last_batch_id FROM _meta.watermarks").fetchall()
        )
    quarantine = {t.table: t.rows for t in tables if t.layer == "quarantine"}
    return PlatformStatus(
        warehouse=path,
        tables=tables,
        positions=positions,
        files=files,
        file_issues=issues,
        quarantine=quarantine,
        watermarks=watermarks,
    )


def format_status(status: PlatformStatus) -> str:
    lines = [f"Warehouse: {status.warehouse}", ""]
    lines.append(f"{'layer':<11} {'table':<28} {'rows':>12} {'last batch':>11}")
    for t in status.tables:
        last = "" if t.last_batch_id is None else str(t.last_batch_id)
        lines.append(f"{t.layer:<11} {t.table:<28} {t.rows:>12,} {last:>11}")
    shown = [p for p in status.positions if not p.key.startswith("columns:")]
    if shown:  # (a CDC source's remembered table shapes are in --json only)
        lines += ["", "Committed source positions:"]
        for p in shown:
            lines.append(
                f"  {p.source:<22} {p.key:<12} {p.position}  (batch {p.batch_id}, "
                f"{p.committed_at:%Y-%m-%d %H:%M:%S})"
            )
    if status.streams:
        lines += ["", "Streams (committed in the warehouse / latest on the broker / lag):"]
        for st in status.streams:
            total = "?" if st.lag is None else f"{st.lag:,}"
            lines.append(f"  {st.stream} ({st.broker} {st.topic}): lag {total}")
            for part in st.partitions:
                lag = "?" if part.lag is None else f"{part.lag:,}"
                lines.append(
                    f"    partition {part.partition:<6} committed {part.committed or '-':<22} "
                    f"latest {part.latest or '?':<22} lag {lag}"
                )
            if st.note:
                lines.append(f"    ({st.note})")
    if status.slots:
        lines += ["", "CDC slots (confirmed LSN / lag / last captured commit):"]
        for sl in status.slots:
            lag = "?" if sl.lag_bytes is None else f"{sl.lag_bytes:,} bytes"
            last = f"{sl.last_commit_ts:%Y-%m-%d %H:%M:%S%z}" if sl.last_commit_ts else "-"
            lines.append(
                f"  {sl.source} (slot {sl.slot}): confirmed {sl.confirmed_lsn or '?'}, "
                f"lag {lag}, last commit {last}, committed {sl.committed_position or '-'}"
            )
            if sl.note:
                lines.append(f"    ({sl.note})")
    if status.files:
        lines += ["", "Files:"]
        for feed, counts in status.files.items():
            lines.append(f"  {feed:<12} " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    rejected = [i for i in status.file_issues if i.status == "rejected"]
    if rejected:
        lines += ["", "Rejected files (moved aside; fix and drop again):"]
        for i in rejected:
            lines.append(f"  {i.path}: {i.reason}")
            if i.stored_at:
                lines.append(f"      now at {i.stored_at}")
    changed = [i for i in status.file_issues if i.status == "loaded" and i.reason]
    if changed:
        lines += ["", "Loaded files that changed afterwards (their new content loads again):"]
        lines += [f"  {i.path}: {i.reason}" for i in changed]
    for report in status.drift:
        lines += ["", f"Schema drift in contract {report.contract} (check schema_drift):"]
        lines += [f"  {line}" for line in report.summary().splitlines()]
    if status.unmatched_files:
        lines += ["", "Files no feed takes (not loaded; rename them or declare a feed glob):"]
        lines += [f"  {path}" for path in status.unmatched_files]
    if status.quarantine:
        lines += ["", "Quarantined rows: " + ", ".join(
            f"{t} {n}" for t, n in status.quarantine.items()
        )]  # fmt: skip
    return "\n".join(lines)
