"""Stream messages into bronze, exactly once: positions commit with the rows.

Each batch is one warehouse transaction: the raw messages are appended to bronze and the
last position of every partition in the batch is saved in ``_meta.positions`` before
COMMIT; the broker is told (``acknowledge``) only after it. A crash anywhere leaves the
committed positions with exactly the rows they cover, and the rerun reads after them.

Bronze keeps each payload exactly as received: UTF-8 text as is, anything else base64 with a
``_parse_error`` saying so, and an oversized message whole but flagged, so silver can
quarantine it with its partition and offset.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Literal

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from medallion_platform.connectors.bronze import append_batch, ensure_bronze_table
from medallion_platform.connectors.streams.base import (
    PositionPastEnd,
    Positions,
    StreamMessage,
    StreamSource,
)
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.warehouse import next_batch_id, set_position, transaction

log = logging.getLogger(__name__)

STREAM_LINEAGE = {
    "_stream": "VARCHAR",
    "_partition": "VARCHAR",
    "_offset": "VARCHAR",
    "_key": "VARCHAR",
    "_broker_timestamp_ms": "BIGINT",
    "_payload_bytes": "BIGINT",
    "payload": "VARCHAR",
}


class StreamIngestReport(BaseModel):
    stream: str
    table: str
    messages: int
    batches: int
    batch_ids: list[int]
    positions: Positions
    flagged: int


def position_source(source: StreamSource) -> str:
    return f"stream:{source.name}"


def load_positions(conn: duckdb.DuckDBPyConnection, source: StreamSource) -> Positions:
    rows = conn.execute(
        "SELECT key, position FROM _meta.positions WHERE source = ?", [position_source(source)]
    ).fetchall()
    return {partition: position for partition, position in rows}


def _text(data: bytes | None) -> tuple[str | None, bool]:
    if data is None:
        return None, True
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), False


def _batch_table(
    source: StreamSource, messages: list[StreamMessage], max_message_bytes: int
) -> tuple[pa.Table, int]:
    columns: dict[str, list] = {
        name: [] for name in (*STREAM_LINEAGE, "_source", "_row_number", "_parse_error")
    }
    flagged = 0
    for n, message in enumerate(messages, start=1):
        payload, is_text = _text(message.value)
        key, _ = _text(message.key)
        problems = []
        if not is_text:
            problems.append(f"binary payload ({len(message.value)} bytes), kept as base64")
        if len(message.value) > max_message_bytes:
            problems.append(
                f"message of {len(message.value)} bytes exceeds max_message_bytes "
                f"({max_message_bytes})"
            )
        flagged += bool(problems)
        columns["_stream"].append(source.name)
        columns["_partition"].append(message.partition)
        columns["_offset"].append(message.offset)
        columns["_key"].append(key)
        columns["_broker_timestamp_ms"].append(message.timestamp_ms)
        columns["_payload_bytes"].append(len(message.value))
        columns["payload"].append(payload)
        columns["_source"].append(f"{source.name}[{message.partition}]@{message.offset}")
        columns["_row_number"].append(n)
        columns["_parse_error"].append("; ".join(problems) or None)
    types = {
        "_broker_timestamp_ms": pa.int64(),
        "_payload_bytes": pa.int64(),
        "_row_number": pa.int64(),
    }
    table = pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in columns.items()})
    return table, flagged


BatchHook = Callable[[int, int], None]


def ingest_stream(
    warehouse: Warehouse,
    table: str,
    source: StreamSource,
    *,
    run_id: str | None = None,
    batch_size: int = 5_000,
    max_messages: int | None = None,
    max_message_bytes: int = 1_000_000,
    on_batch: BatchHook | None = None,
    offset_reset: Literal["fail", "earliest"] = "fail",
) -> StreamIngestReport:
    """Read everything after the committed positions (or ``max_messages``) into bronze.

    A committed position past the end of its partition (topic recreated) raises
    ``PositionPastEnd`` unless ``offset_reset="earliest"``: then that partition is read again
    from its start, and the new positions commit with the first batch that reads it.
    """
    total = flagged = 0
    batch_ids: list[int] = []
    with warehouse.connect() as conn:
        with transaction(conn):
            ensure_bronze_table(conn, table, STREAM_LINEAGE)
            positions = load_positions(conn, source)
        while max_messages is None or total < max_messages:
            want = batch_size if max_messages is None else min(batch_size, max_messages - total)
            try:
                messages = source.read_batch(positions, want)
            except PositionPastEnd as exc:
                if offset_reset != "earliest":
                    raise
                log.warning("%s; reading %s from the start", exc, sorted(exc.partitions))
                positions = {p: o for p, o in positions.items() if p not in exc.partitions}
                messages = source.read_batch(positions, want)
            if not messages:
                break
            batch, batch_flagged = _batch_table(source, messages, max_message_bytes)
            reached = dict(positions)
            for message in messages:  # ordered within each partition: the last one wins
                reached[message.partition] = message.offset
            with transaction(conn):
                batch_id = next_batch_id(conn, position_source(source), run_id)
                append_batch(conn, table, batch, batch_id=batch_id, lineage=STREAM_LINEAGE)
                for partition, offset in reached.items():
                    if positions.get(partition) != offset:
                        set_position(conn, position_source(source), partition, offset, batch_id)
            positions = reached
            source.acknowledge(positions)  # only after the warehouse committed
            total += len(messages)
            flagged += batch_flagged
            batch_ids.append(batch_id)
            log.info("%s: %d messages committed", source.name, total)
            if on_batch:
                on_batch(len(batch_ids), total)
    return StreamIngestReport(
        stream=source.name,
        table=table,
        messages=total,
        batches=len(batch_ids),
        batch_ids=batch_ids,
        positions=positions,
        flagged=flagged,
    )
