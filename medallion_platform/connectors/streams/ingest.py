"""Stream messages into bronze, exactly once: positions commit with the rows.

Each batch is one warehouse transaction: the raw messages are appended to bronze and the
last position of every partition in the batch is saved in ``_meta.positions`` before
COMMIT; the broker is told (``acknowledge``) only after it. A crash anywhere leaves the
committed positions with exactly the rows they cover, and the rerun reads after them.

Bronze keeps each message exactly as received: the payload as UTF-8 text, anything else
base64 with a ``_parse_error`` saying so, an oversized message whole but flagged, so silver can
quarantine it with its partition and offset. A tombstone (Kafka's null value) is a NULL
payload with ``_tombstone`` true, unlike an empty value (``''``); silver applies the
contract's ``tombstones`` policy to it. Kafka's record headers are kept in ``_headers`` as a
JSON list of ``[key, value]`` pairs in the record's order, repeats included; a key or value
that is not UTF-8 is ``{"base64": "..."}`` instead of a string (flagged in place, not in
``_parse_error``: a header the contract does not read must not quarantine the event), a null
value is ``null``, and a record without headers has ``_headers`` NULL. Redis Streams have no
headers: their entries' other fields go there. ``_partition`` is a BIGINT, ``_offset`` the
source's ``offset_type`` (BIGINT for Kafka, the entry ID's text for Redis); a bronze table
made when both were VARCHAR is converted in place by the next ingest.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring as _quote  # C, as json.dumps uses
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from medallion_platform.connectors.bronze import (
    BRONZE_SCHEMA,
    ROW_GROUP_ROWS,
    append_batch,
    append_memory,
    ensure_bronze_table,
    whole_row_groups,
)
from medallion_platform.connectors.streams.base import (
    MessageColumns,
    PositionPastEnd,
    Positions,
    StreamSource,
)
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.warehouse import (
    add_missing_columns,
    next_batch_id,
    set_position,
    table_columns,
    transaction,
)

log = logging.getLogger(__name__)

STREAM_LINEAGE = {
    "_stream": "VARCHAR",
    "_partition": "BIGINT",
    "_offset": "BIGINT",
    "_key": "VARCHAR",
    "_broker_timestamp_ms": "BIGINT",
    "_payload_bytes": "BIGINT",
    "payload": "VARCHAR",
    "_tombstone": "BOOLEAN",
    "_headers": "JSON",
}
"""Bronze columns of a stream (besides the common lineage), for a source with BIGINT offsets."""

POSITION_COLUMNS = ("_partition", "_offset")


def stream_lineage(source: StreamSource) -> dict[str, str]:
    """The stream columns for this source: ``_offset`` as its ``offset_type``."""
    return {**STREAM_LINEAGE, "_offset": source.offset_type}


class BronzeLayoutError(RuntimeError):
    """A bronze table's position columns cannot hold this stream's positions; nothing changed."""


class StreamIngestReport(BaseModel):
    stream: str
    table: str
    messages: int
    batches: int
    batch_ids: list[int]
    positions: Positions
    flagged: int
    tombstones: int = 0
    binary_headers: int = 0
    """Header keys and values kept as base64 (not UTF-8)."""


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


def _header_item(data: str | bytes | None) -> tuple[str | dict[str, str] | None, int]:
    """A header key or value as JSON: text, null, or ``{"base64": ...}``; and 1 if base64."""
    if data is None or isinstance(data, str):
        return data, 0
    text, is_text = _text(data)
    return (text, 0) if is_text else ({"base64": text}, 1)


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def headers_json(
    headers: tuple[tuple[str | bytes, bytes | None], ...] | None,
) -> tuple[str | None, int]:
    """``[[key, value], ...]`` as JSON text (None without headers); and how many were base64."""
    if not headers:
        return None, 0
    try:  # all text, the common case: joined by hand, twice as fast as json.dumps
        text = ",".join(
            f"[{_quote(k if isinstance(k, str) else k.decode())},"
            f"{'null' if v is None else _quote(v.decode())}]"
            for k, v in headers
        )
        return f"[{text}]", 0
    except UnicodeDecodeError:
        pass
    pairs, binary = [], 0
    for key, value in headers:
        (k, kb), (v, vb) = _header_item(key), _header_item(value)
        pairs.append([k, v])
        binary += kb + vb
    return _dumps(pairs), binary


@dataclass(frozen=True, slots=True)
class _Batch:
    """One batch as an Arrow table, with what it counted."""

    table: pa.Table
    flagged: int
    tombstones: int
    binary_headers: int


def _texts(data: pa.ChunkedArray) -> tuple[pa.ChunkedArray | pa.Array, list[int]]:
    """The binary column as UTF-8 text in one cast; the rare value that is not UTF-8 becomes
    base64 (the rows where it did, returned)."""
    try:
        return data.cast(pa.string()), []
    except pa.ArrowInvalid:
        pass
    decoded = [_text(d) for d in data.to_pylist()]
    return pa.array([t for t, _ in decoded], pa.string()), [
        n for n, (_, ok) in enumerate(decoded) if not ok
    ]


def _batch_table(source: StreamSource, batch: MessageColumns, max_message_bytes: int) -> _Batch:
    """Bronze rows for a batch, built column by column: Python touches only the rare message
    that is flagged (not UTF-8, too large, an error) or has headers."""
    columns = batch.table
    count = len(batch)
    value = columns["value"]
    payload, binary_rows = _texts(value)
    keys, _ = _texts(columns["key"])
    sizes = pc.binary_length(value)
    oversized = pc.fill_null(pc.greater(sizes, max_message_bytes), False)
    error = columns["error"] if "error" in columns.column_names else None
    tombstone = pc.is_null(value)
    problems: dict[int, list[str]] = {}
    if error is not None and error.null_count < count:
        tombstone = pc.and_(tombstone, pc.is_null(error))
        for n, e in enumerate(error.to_pylist()):
            if e:
                problems[n] = [e]
    for n in binary_rows:
        problems.setdefault(n, []).append(
            f"binary payload ({sizes[n].as_py()} bytes), kept as base64"
        )
    for n in pc.indices_nonzero(oversized.combine_chunks()).to_pylist():
        problems.setdefault(n, []).append(
            f"message of {sizes[n].as_py()} bytes exceeds max_message_bytes ({max_message_bytes})"
        )
    parse_error = pa.nulls(count, pa.string())
    if problems:
        listed: list[str | None] = [None] * count
        for n, reasons in problems.items():
            listed[n] = "; ".join(reasons)
        parse_error = pa.array(listed, pa.string())
    headers = pa.nulls(count, pa.string())
    binary_headers = 0
    if batch.headers is not None:
        texts: list[str | None] = [None] * count
        for n, pairs in enumerate(batch.headers):
            texts[n], binary = headers_json(pairs)
            binary_headers += binary
        headers = pa.array(texts, pa.string())
    partitions, offsets = columns["partition"], columns["offset"]
    as_text = [a if a.type == pa.string() else a.cast(pa.string()) for a in (partitions, offsets)]
    arrays = {
        "_partition": partitions,
        "_offset": offsets,
        "_key": keys,
        "_broker_timestamp_ms": columns["timestamp_ms"],
        "_payload_bytes": sizes.cast(pa.int64()),
        "payload": payload,
        "_tombstone": tombstone,
        "_headers": headers,
        "_source": pc.binary_join_element_wise(f"{source.name}[", as_text[0], "]@", as_text[1], ""),
        "_row_number": pa.array(np.arange(1, count + 1, dtype=np.int64)),
        "_parse_error": parse_error,
    }
    # Bronze types the positions (Arrow's cast fails loudly on anything not an integer);
    # they stay text in _meta.positions.
    for name, sql_type in stream_lineage(source).items():
        if name in POSITION_COLUMNS:
            arrays[name] = arrays[name].cast(pa.int64() if sql_type == "BIGINT" else pa.string())
    # Many small Arrow chunks (one per consume() and partition) would leave partly filled
    # row groups for the checkpoint to rewrite.
    return _Batch(
        table=whole_row_groups(pa.table(arrays)),
        flagged=len(problems),
        tombstones=pc.sum(tombstone).as_py() or 0,
        binary_headers=binary_headers,
    )


def migrate_stream_table(
    conn: duckdb.DuckDBPyConnection, table: str, lineage: dict[str, str]
) -> list[str]:
    """Bring an existing ``bronze.<table>`` to this version's stream layout, in place.

    Tables written before positions were typed hold ``_partition``/``_offset`` as VARCHAR:
    they become BIGINT when the source's positions are integers (every stored value must be
    one, or nothing changes and ``BronzeLayoutError`` names the row). Columns added since
    (``_tombstone``, ``_headers``) are added, NULL for older rows: those rows were read
    before tombstones and headers were kept, and cannot be told apart now. Returns what
    changed, for the log. Runs in the caller's transaction.
    """
    existing = table_columns(conn, BRONZE_SCHEMA, table)
    name, shown = qualified(BRONZE_SCHEMA, table), f"{BRONZE_SCHEMA}.{table}"
    changed = []
    for column in POSITION_COLUMNS:
        have, want = existing.get(column), lineage[column]
        if have is None or have == want:
            continue
        if (have, want) != ("VARCHAR", "BIGINT"):
            raise BronzeLayoutError(
                f"{shown}.{column} is {have} but this stream's positions are {want}: the table "
                "was written by another kind of source; give this stream a bronze table of its "
                "own (its name in config/streams.yaml)"
            )
        bad = conn.execute(
            f"SELECT _source, {quote(column)} FROM {name} WHERE {quote(column)} IS NOT NULL "
            f"AND NOT regexp_full_match({quote(column)}, '-?[0-9]{{1,18}}') LIMIT 1"
        ).fetchone()
        if bad is not None:
            raise BronzeLayoutError(
                f"{shown}.{column} cannot become BIGINT: row {bad[0]} holds {bad[1]!r}, not an "
                "integer; nothing was changed or read"
            )
        conn.execute(
            f"ALTER TABLE {name} ALTER COLUMN {quote(column)} SET DATA TYPE BIGINT "
            f"USING CAST({quote(column)} AS BIGINT)"
        )
        changed.append(f"{column} VARCHAR -> BIGINT")
    added = add_missing_columns(conn, BRONZE_SCHEMA, table, lineage)
    return changed + [f"{column} added" for column in added]


BatchHook = Callable[[int, int], None]


def _batches(
    source: StreamSource, after: Positions, batch_size: int, max_messages: int | None
) -> Iterator[MessageColumns]:
    """Batches after ``after``, each read once its predecessor is committed: from a client
    that reads on between batches (Kafka's ``read_batches``), else one ``read_batch`` each."""
    read_batches = getattr(source, "read_batches", None)
    if read_batches is not None:
        yield from read_batches(after, batch_size, max_messages=max_messages)
        return
    positions, read = dict(after), 0
    while max_messages is None or read < max_messages:
        want = batch_size if max_messages is None else min(batch_size, max_messages - read)
        batch = MessageColumns.from_messages(source.read_batch(positions, want))
        if not len(batch):
            return
        yield batch
        positions.update(batch.positions())
        read += len(batch)


def ingest_stream(
    warehouse: Warehouse,
    table: str,
    source: StreamSource,
    *,
    run_id: str | None = None,
    batch_size: int = ROW_GROUP_ROWS,
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
    total = flagged = tombstones = binary_headers = 0
    batch_ids: list[int] = []
    lineage = stream_lineage(source)
    with warehouse.connect() as conn, append_memory(conn, warehouse.memory_limit):
        with transaction(conn):
            ensure_bronze_table(conn, table, lineage)
            changed = migrate_stream_table(conn, table, lineage)
            if changed:
                log.warning("bronze.%s converted in place: %s", table, "; ".join(changed))
            positions = load_positions(conn, source)
        reset: set[str] = set()
        while True:
            left = None if max_messages is None else max_messages - total
            batches = _batches(source, positions, batch_size, left)
            try:
                for messages in batches:
                    batch = _batch_table(source, messages, max_message_bytes)
                    reached = {**positions, **messages.positions()}
                    with transaction(conn):
                        batch_id = next_batch_id(conn, position_source(source), run_id)
                        append_batch(
                            conn,
                            table,
                            batch.table,
                            batch_id=batch_id,
                            lineage=lineage,
                            constants={"_stream": source.name},
                            evolve=False,  # migrate_stream_table added every column above
                        )
                        for partition, offset in reached.items():
                            if positions.get(partition) != offset:
                                set_position(
                                    conn, position_source(source), partition, offset, batch_id
                                )
                    positions = reached
                    source.acknowledge(positions)  # only after the warehouse committed
                    total += len(messages)
                    flagged += batch.flagged
                    tombstones += batch.tombstones
                    binary_headers += batch.binary_headers
                    batch_ids.append(batch_id)
                    log.info("%s: %d messages committed", source.name, total)
                    if on_batch:
                        on_batch(len(batch_ids), total)
                break
            except PositionPastEnd as exc:
                if offset_reset != "earliest" or reset & set(exc.partitions):
                    raise
                log.warning("%s; reading %s from the start", exc, sorted(exc.partitions))
                reset |= set(exc.partitions)
                positions = {p: o for p, o in positions.items() if p not in exc.partitions}
            finally:
                batches.close()
    return StreamIngestReport(
        stream=source.name,
        table=table,
        messages=total,
        batches=len(batch_ids),
        batch_ids=batch_ids,
        positions=positions,
        flagged=flagged,
        tombstones=tombstones,
        binary_headers=binary_headers,
    )
