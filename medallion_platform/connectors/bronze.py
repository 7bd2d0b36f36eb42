"""Appending to a bronze table: lineage columns, schema evolution by addition, one shape.

Every connector writes bronze through here, so every bronze table carries the same lineage
(``_batch_id``, ``_ingested_at``, ``_source``, ``_row_number``, ``_parse_error``,
``_extra_fields``) plus the connector's own (a file hash, a raw JSON payload, …).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

import duckdb
import pyarrow as pa

from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.memory import memory_bound
from medallion_platform.warehouse.warehouse import (
    add_missing_columns,
    ensure_layout,
    table_exists,
)

BRONZE_SCHEMA = "bronze"
ROW_NUMBER = "_row_number"
PARSE_ERROR = "_parse_error"
EXTRA_FIELDS = "_extra_fields"
ROW_GROUP_ROWS = 122_880
"""DuckDB's row group: an INSERT of whole row groups is compressed and written to the database
file as it runs; a smaller one waits in memory for COMMIT. Batch appends in multiples of it."""
LINEAGE_COLUMNS: dict[str, str] = {
    "_batch_id": "BIGINT",
    "_ingested_at": "TIMESTAMPTZ",
    "_source": "VARCHAR",
    ROW_NUMBER: "BIGINT",
    PARSE_ERROR: "VARCHAR",
    EXTRA_FIELDS: "VARCHAR",
}


def whole_row_groups(table: pa.Table) -> pa.Table:
    """``table`` as one contiguous chunk per row group (the last one less). Fed many small
    Arrow chunks, DuckDB's parallel insert leaves partly filled row groups that the checkpoint
    then rewrites (4-5 s and twice the file size per 1M stream messages, measured)."""
    table = table.combine_chunks()
    return pa.Table.from_batches(table.to_batches(max_chunksize=ROW_GROUP_ROWS), table.schema)


def ensure_bronze_table(
    conn: duckdb.DuckDBPyConnection, table: str, extra_lineage: Mapping[str, str]
) -> None:
    """Create ``bronze.<table>`` with its lineage columns, so it exists before any data."""
    ensure_layout(conn)
    if not table_exists(conn, BRONZE_SCHEMA, table):
        columns = {**LINEAGE_COLUMNS, **extra_lineage}
        ddl = ", ".join(f"{quote(n)} {t}" for n, t in columns.items())
        conn.execute(f"CREATE TABLE {qualified(BRONZE_SCHEMA, table)} ({ddl})")


def add_data_columns(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    columns: Iterable[str],
    lineage: Mapping[str, str] | None = None,
) -> None:
    """Schema evolution by addition: data columns new to ``bronze.<table>`` are added as
    VARCHAR (older rows read NULL)."""
    reserved = set(LINEAGE_COLUMNS) | set(lineage or {})
    data_columns = {name: "VARCHAR" for name in columns if name not in reserved}
    add_missing_columns(conn, BRONZE_SCHEMA, table, data_columns)


def append_batch(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    batch: pa.Table | pa.RecordBatchReader,
    *,
    batch_id: int | None,
    source: str | None = None,
    constants: Mapping[str, str] | None = None,
    lineage: Mapping[str, str] | None = None,
    evolve: bool = True,
    source_column: str | None = None,
) -> int:
    """Append ``batch`` (text columns + ``_row_number``) to ``bronze.<table>``.

    New data columns are added as VARCHAR first (older rows read NULL); ``_source`` becomes
    ``<source>#row=<n>`` (or comes with the batch when ``source`` is None, for batches that
    span several origins), and so does ``_batch_id`` when ``batch_id`` is None (several
    batches' rows in one append); ``source_column`` names a column of the batch holding each
    row's origin instead (``_source`` is then ``<origin>#row=<n>``, the column not stored);
    ``constants`` are per-batch lineage values (``_file_hash``).
    ``evolve=False`` skips the column check, for a caller that ran :func:`add_data_columns`
    once for a stream of batches of one shape. A RecordBatchReader is appended in one INSERT
    that DuckDB feeds from it as it goes, on all its threads (the caller counts its rows).
    Returns the number of rows appended (0 for a reader).
    """
    if evolve:
        add_data_columns(conn, table, batch.schema.names, lineage)
    rows = batch.num_rows if isinstance(batch, pa.Table) else 0
    if isinstance(batch, pa.Table) and rows == 0:
        return 0
    constants = dict(constants or {})
    select = ["now() AS _ingested_at"]
    params: list = []
    if batch_id is not None:
        select.append("?::BIGINT AS _batch_id")
        params.append(batch_id)
    star = "*"
    if source is not None:
        select.append("? || '#row=' || _row_number AS _source")
        params.append(source)
    elif source_column is not None:
        select.append(f"{quote(source_column)} || '#row=' || _row_number AS _source")
        star = f"* EXCLUDE ({quote(source_column)})"
    select += [f"? AS {quote(name)}" for name in constants]
    params += constants.values()
    conn.register("_bronze_batch", batch)
    try:
        conn.execute(
            f"INSERT INTO {qualified(BRONZE_SCHEMA, table)} BY NAME "
            f"SELECT {', '.join(select)}, {star} FROM _bronze_batch",
            params,
        )
    finally:
        conn.unregister("_bronze_batch")
    return rows


SMALL_COMMITS_CHECKPOINT = "128MiB"
"""WAL a connector that commits small batches (CDC's ``batch_size``, REST's pages) lets grow
before DuckDB checkpoints; DuckDB's default is 16 MiB. Each checkpoint has a cost of its own:
at 16 MiB, half of a 310k-change CDC capture's CPU went into them (8.2 → 5.3 CPU s at 128
MiB, peak RSS lower too), and REST's commits took twice as long. The WAL, and what a crash
replays, stay bounded by this size."""


@contextmanager
def setting(conn: duckdb.DuckDBPyConnection, name: str, value: str | int) -> Iterator[None]:
    """DuckDB's setting ``name`` for the block, restored afterwards (a setting of the
    database instance, which other connections of this process may share)."""
    (before,) = conn.execute(f"SELECT current_setting('{name}')").fetchone()
    conn.execute(f"SET {name} = '{value}'")
    try:
        yield
    finally:
        conn.execute(f"SET {name} = '{before}'")


def checkpoint_threshold(
    conn: duckdb.DuckDBPyConnection, size: str = SMALL_COMMITS_CHECKPOINT
) -> AbstractContextManager[None]:
    """DuckDB's ``checkpoint_threshold`` for the block (see :data:`SMALL_COMMITS_CHECKPOINT`)."""
    return setting(conn, "checkpoint_threshold", size)


APPEND_MEMORY_LIMIT = 256 << 20
"""DuckDB's ``memory_limit`` while a loader appends to bronze (when the warehouse's is higher).

Appends stream through DuckDB, but its buffer pool keeps every block it writes (tag
``BASE_TABLE`` in ``duckdb_memory()``) until the limit forces it out: with the platform's
default (a quarter of the machine) a 20M-row load held 650 MB of them at its end, so the
process grew with the data (peak 1.0 GiB at 5M rows, 1.8 GiB at 20M). Under this limit the
cache is evicted as it fills (those blocks are on disk already); a group of small files'
transaction may spill a little to the warehouse's temp directory."""


def append_memory(
    conn: duckdb.DuckDBPyConnection, configured: str, bound: int = APPEND_MEMORY_LIMIT
) -> AbstractContextManager[None]:
    """Run bronze appends under ``bound`` bytes of DuckDB memory, then restore ``configured``
    (the warehouse's limit). A configured limit at or below the bound is kept as it is."""
    return memory_bound(conn, configured, bound, what="bronze appends")
