"""Read a landed file into batches of text columns, row by row, losing nothing.

Every value is kept as text (a parser's opinion of "12,99" must not cost us the row). A row
that does not fit the header keeps what it has: missing fields are NULL, extra fields go to
``_extra_fields`` as a JSON array, and ``_parse_error`` says what was wrong. A row with a NUL
byte in a field is kept the same way, flagged wherever it is in the file (silver quarantines
it). A file that cannot be read at all (empty, UTF-16, binary, not valid in its encoding)
raises :class:`FileReadError` with the reason, and the caller rejects it whole. Files
compressed with gzip or zstd are read transparently (recognized by their first bytes).

CSV rows are parsed by Arrow's C++ reader and JSON lines by DuckDB's JSON functions, with no
Python object per row: Python reads a CSV's header, re-reads the rare row of the wrong width
that Arrow hands back, and words the rare invalid JSON line's error.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from medallion_platform.connectors.bronze import (
    EXTRA_FIELDS,
    PARSE_ERROR,
    ROW_GROUP_ROWS,
    ROW_NUMBER,
    whole_row_groups,
)
from medallion_platform.connectors.files.spec import FileFeed
from medallion_platform.warehouse.identifiers import normalize_column_name, quote

DEFAULT_BATCH_ROWS = 100_000
T = TypeVar("T")
ARROW_BLOCK_BYTES = 4 << 20
"""Bytes Arrow parses at a time: large enough to amortize the call, small enough to stay out
of the memory budget."""
HEADER_MAX_BYTES = 16 << 20
COMBINE_MAX_BYTES = 1 << 30
"""A batch is regrouped into row-group chunks (a copy) only below this size; a string column
past 2 GiB in one chunk would not fit Arrow's 32-bit offsets."""


class FileReadError(Exception):
    """The file cannot be read at all; ``reason`` says why, in words for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unique_column_names(raw_headers: list[str]) -> list[str]:
    """Normalize headers; a name that repeats gets ``_2``, ``_3`` … so nothing collides.

    Every result is a valid identifier of at most 63 characters, suffix included.
    """
    names: list[str] = []
    for raw in raw_headers:
        base = normalize_column_name(raw)
        if base.startswith("_"):  # leading '_' is reserved for lineage columns
            base = ("c" + base)[:63]
        name, n = base, 1
        while name in names:
            n += 1
            suffix = f"_{n}"
            name = base[: 63 - len(suffix)] + suffix
        names.append(name)
    return names


@lru_cache(maxsize=4096)
def _unique_names(keys: tuple[str, ...]) -> list[str]:
    """Records of one source share their keys: normalize each key set once."""
    return unique_column_names(list(keys))


def read_batches(
    path: Path,
    feed: FileFeed,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.Table]:
    """Yield the file as Arrow tables of text columns plus ``_row_number`` and error columns.

    Any failure to read the file, at any point in it, is a :class:`FileReadError`: the caller
    rolls back what it appended and rejects the file, and the other files still load.
    """
    _check_readable(path, feed)
    readers = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}
    try:
        yield from readers[feed.format](path, feed, batch_rows)
    except (FileReadError, FileNotFoundError):  # a vanished file is not a bad file
        raise
    except (OSError, pa.ArrowException) as exc:
        kind = compression_of(path)
        what = f"decompress the {kind} file (truncated or corrupt?)" if kind else "read the file"
        raise FileReadError(f"cannot {what}: {type(exc).__name__}: {exc}") from exc
    except (UnicodeError, ValueError) as exc:
        raise FileReadError(f"cannot read the file: {type(exc).__name__}: {exc}") from exc


COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
COMPRESSED_SUFFIXES = (".gz", ".zst")
_UNICODE_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
BINARY_NUL_SHARE = 0.10
"""A text file has no NUL bytes; one whose first 8 KB are this much NUL is not text at all
(binary, or UTF-16 without a byte-order mark). Fewer NULs flag their rows instead."""


def compression_of(path: Path) -> str | None:
    """``gzip`` or ``zstd`` when the file starts like one (whatever its name), else None."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return next((kind for magic, kind in COMPRESSION_MAGIC.items() if head.startswith(magic)), None)


def open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed if it is gzip or zstd."""
    kind = compression_of(path)
    if kind is None:
        return path.open("rb")
    return io.BufferedReader(pa.CompressedInputStream(pa.OSFile(str(path)), kind))


_UTF8 = ("utf-8", "utf-8-sig")


class _TextTap:
    """The decompressed text on its way to Arrow: transcoded to UTF-8 when the feed's encoding
    is another (strictly: a byte the encoding lacks raises), watched for NUL bytes and line
    ends, with a look ahead at the first bytes for the header."""

    def __init__(self, stream: io.BufferedIOBase, encoding: str) -> None:
        self._stream = stream
        self._decoder = (
            None if encoding in _UTF8 else codecs.getincrementaldecoder(encoding)("strict")
        )
        self._buffer = b""
        self._eof = False
        self.closed = False
        self.saw_nul = False
        self.newlines = 0
        self.tail = b""

    def _pull(self, size: int) -> bytes:
        while True:
            block = self._stream.read(size)
            if self._decoder is None:
                return block
            text = self._decoder.decode(block, final=not block)
            if text or not block:
                return text.encode("utf-8")

    def peek(self, size: int) -> tuple[bytes, bool]:
        """At least ``size`` bytes from the start, unless the stream is shorter (then True)."""
        while len(self._buffer) < size and not self._eof:
            block = self._pull(size - len(self._buffer))
            self._eof = not block
            self._buffer += block
        return self._buffer, self._eof

    def read(self, size: int = -1) -> bytes:
        if not self._buffer:
            self._buffer = self._pull(size)
        if size < 0 or len(self._buffer) <= size:
            block, self._buffer = self._buffer, b""
        else:
            block, self._buffer = self._buffer[:size], self._buffer[size:]
        if block:
            self.saw_nul = self.saw_nul or b"\x00" in block
            self.newlines += block.count(b"\n")
            self.tail = (self.tail + block)[-8:]
        return block

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


@contextmanager
def _open_text(path: Path, encoding: str) -> Iterator[_TextTap]:
    """The file's text as UTF-8 bytes, decompressed."""
    with open_binary(path) as stream:
        yield _TextTap(stream, encoding)


def _first_undecodable(path: Path, encoding: str) -> UnicodeDecodeError | None:
    """The first byte of the file its encoding cannot decode, if any (an error path only)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    with open_binary(path) as fh:
        try:
            while block := fh.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            return exc
    return None


def _csv_error(path: Path, encoding: str, exc: pa.ArrowInvalid) -> FileReadError | pa.ArrowInvalid:
    """Arrow's verdict in our words: invalid UTF-8 names its byte, as Python's decoder did."""
    message = str(exc)
    if "UTF8" not in message and "CSV parse error" not in message:
        return exc  # a decompression error: read_batches words it
    bad = _first_undecodable(path, encoding)
    if bad is not None:
        return _decode_error(bad, encoding)
    return FileReadError(f"not a readable CSV file: {message}")


def _check_readable(path: Path, feed: FileFeed) -> None:
    size = path.stat().st_size
    if size == 0:
        raise FileReadError("file is empty (0 bytes)")
    if feed.format == "parquet":
        return
    try:
        with open_binary(path) as fh:
            head = fh.read(8192)
    except (OSError, pa.ArrowException) as exc:
        raise FileReadError(f"cannot decompress the file: {exc}") from exc
    if not head:
        raise FileReadError("file is empty (it decompresses to 0 bytes)")
    for bom, name in _UNICODE_BOMS.items():
        if head.startswith(bom):
            raise FileReadError(f"file is {name} text; re-export it as UTF-8")
    nul_share = head.count(0) / len(head)
    if nul_share >= BINARY_NUL_SHARE:
        raise FileReadError(
            f"file is binary, not text ({nul_share:.0%} of its first {len(head):,} bytes are "
            "NUL bytes; UTF-16 without a byte-order mark looks like this too)"
        )


def _check_required(columns: list[str], feed: FileFeed) -> None:
    missing = [c for c in feed.required_columns if c not in columns]
    if missing:
        raise FileReadError(
            f"missing required column(s) {', '.join(missing)}; header has {', '.join(columns)}"
        )


def _decode_error(exc: UnicodeDecodeError, encoding: str) -> FileReadError:
    return FileReadError(
        f"not valid {encoding} text (byte 0x{exc.object[exc.start]:02x} cannot be decoded); "
        "re-export the file as UTF-8"
    )


def _read_csv(path: Path, feed: FileFeed, batch_rows: int) -> Iterator[pa.Table]:
    opts = feed.csv
    with _open_text(path, opts.encoding) as tap:
        try:
            header = _csv_header(tap, feed)
            columns = unique_column_names(header)
            _check_required(columns, feed)
            yield from _csv_tables(tap, feed, columns, batch_rows)
        except UnicodeDecodeError as exc:  # the header, or a non-UTF-8 feed while transcoding
            raise _decode_error(exc, opts.encoding) from exc
        except pa.ArrowInvalid as exc:
            raise _csv_error(path, opts.encoding, exc) from exc


def _csv_header(tap: _TextTap, feed: FileFeed) -> list[str]:
    """The header row, parsed by Python's csv module from the first bytes of the file.

    Arrow then numbers the header as record 1 and every data row after it, so the two agree
    on where the header ends (quoted newlines included).
    """
    opts = feed.csv
    size = 1 << 16
    while True:
        prefix, at_eof = tap.peek(size)
        codec = "utf-8-sig" if opts.encoding == "utf-8-sig" else "utf-8"  # transcoded: UTF-8
        decoder = codecs.getincrementaldecoder(codec)(errors="strict")
        text = decoder.decode(prefix, final=at_eof)
        reader = csv.reader(
            io.StringIO(text, newline=""),
            delimiter=opts.delimiter,
            quotechar=opts.quotechar,
            strict=True,
        )
        try:
            header = next((record for record in reader if record), None)
        except csv.Error as exc:
            if at_eof:
                raise FileReadError(
                    f"not a readable CSV file (line {reader.line_num}): {exc}"
                ) from exc
            header = None
        if header is not None:
            try:
                more = next(reader, None) is not None
            except csv.Error:
                more = True  # a data row follows; Arrow judges it
            if more or at_eof:  # the header row ended inside what was read
                return header
        elif at_eof:
            raise FileReadError("file has no header row")
        if size >= HEADER_MAX_BYTES:
            raise FileReadError(f"the header row is longer than {HEADER_MAX_BYTES:,} bytes")
        size *= 4


def _csv_tables(
    tap: _TextTap, feed: FileFeed, columns: list[str], batch_rows: int
) -> Iterator[pa.Table]:
    """Arrow's C++ reader parses the rows; Python sees only whole batches and the rare
    wrong-width row (Arrow hands it over with its record number, see :class:`_CsvRows`)."""
    opts = feed.csv
    rows = _CsvRows(columns, opts.delimiter, opts.quotechar)
    reader = pacsv.open_csv(
        tap,
        read_options=pacsv.ReadOptions(
            use_threads=False,  # record numbers are known only to a serial reader
            block_size=ARROW_BLOCK_BYTES,
            autogenerate_column_names=True,  # the header is record 1, dropped below
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=opts.delimiter,
            quote_char=opts.quotechar,
            double_quote=True,
            escape_char=False,
            newlines_in_values=True,
            ignore_empty_lines=True,  # a blank line is not a row (as for Python's csv)
            invalid_row_handler=rows.invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={f"f{i}": pa.string() for i in range(len(columns))},
            check_utf8=True,
            strings_can_be_null=False,  # "", "NA", "NULL" are text like any other
            quoted_strings_can_be_null=False,
        ),
    )
    if len(reader.schema) != len(columns):
        raise FileReadError(
            f"not a readable CSV file: its header has {len(columns)} fields for Python's csv "
            f"module and {len(reader.schema)} for Arrow's reader"
        )
    chunks = _Rechunk(batch_rows)
    first = True
    for batch in reader:
        if first:
            batch, first = batch.slice(1), False  # the header row
        for table in chunks.add([rows.number(batch)]):
            yield _flag(table, tap)
    last = rows.finish()
    _check_last_quote(rows, tap, opts.quotechar)
    for table in chunks.add([last] if last is not None else []):
        yield _flag(table, tap)
    tail = chunks.flush()
    if tail is not None or not chunks.emitted:
        yield _flag(tail if tail is not None else rows.empty(), tap)


def _flag(table: pa.Table, tap: _TextTap) -> pa.Table:
    """NUL bytes are looked for only once the file is known to hold one (a memchr per block)."""
    return flag_nul_bytes(table) if tap.saw_nul else table


class _CsvRows:
    """Numbers Arrow's batches of well-formed rows and rebuilds the wrong-width rows it skips.

    Arrow's serial reader numbers records from 1 (the header), skipping blank lines, and calls
    :meth:`invalid` for each wrong-width row while parsing, before the batch that follows it
    is returned (it may parse one block ahead: later rows wait in ``_bad``). So a batch of
    ``m`` good rows holds the next ``m`` record numbers that are not wrong-width rows. The
    wrong-width rows of a batch are rebuilt together and put back in place by one ``take``.
    """

    def __init__(self, columns: list[str], delimiter: str, quotechar: str) -> None:
        self.width = len(columns)
        self.delimiter = delimiter
        self.quotechar = quotechar
        self.schema = pa.schema(
            [(name, pa.string()) for name in columns]
            + [(ROW_NUMBER, pa.int64()), (PARSE_ERROR, pa.string()), (EXTRA_FIELDS, pa.string())]
        )
        self._bad: deque[pacsv.InvalidRow] = deque()
        self._next = 2  # the record number of the first data row
        self.last_value: str | None = None
        """The last field of the last row so far, when that row had the right width."""
        self.last_row = 0

    def invalid(self, row: pacsv.InvalidRow) -> str:
        if row.number is None or row.number < 0:  # only a threaded reader loses count
            return "error"
        self._bad.append(row)
        return "skip"

    def number(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch``'s rows with their numbers, and the wrong-width rows among them, in order."""
        first, end = self._next, self._next + batch.num_rows
        bad: list[pacsv.InvalidRow] = []
        while self._bad and self._bad[0].number < end:
            bad.append(self._bad.popleft())
            end += 1
        self._next = end
        records = np.arange(first, end, dtype=np.int64)
        if bad:
            records = records[~np.isin(records, [row.number for row in bad])]
        good = pa.RecordBatch.from_arrays(
            [*batch.columns, pa.array(records - 1), *self._no_errors(batch.num_rows)],
            schema=self.schema,
        )
        if good.num_rows and (not bad or bad[-1].number < records[-1]):
            self.last_value = good.column(self.width - 1)[-1].as_py()
            self.last_row = int(records[-1]) - 1
        elif bad:
            self.last_value = None
        if not bad:
            return good
        merged = pa.Table.from_batches([good, self._wrong_width(bad)])
        order = np.argsort(merged.column(ROW_NUMBER).to_numpy(), kind="stable")
        return merged.take(order).combine_chunks().to_batches()[0]

    def finish(self) -> pa.RecordBatch | None:
        """The wrong-width rows after the last well-formed one."""
        if not self._bad:
            return None
        bad, self._bad = list(self._bad), deque()
        self.last_value = None
        return self._wrong_width(bad)

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def _no_errors(self, n: int) -> list[pa.Array]:
        return [pa.nulls(n, pa.string()), pa.nulls(n, pa.string())]

    def _wrong_width(self, rows: list[pacsv.InvalidRow]) -> pa.RecordBatch:
        """The rows Arrow skipped, re-read by Python's csv module: what fits the header in its
        columns (NULL for what is missing), the rest as a JSON array, and the reason."""
        columns: list[list[str | None]] = [[] for _ in range(self.width)]
        numbers, errors, extras = [], [], []
        for row in rows:
            number = row.number - 1
            reader = csv.reader(
                io.StringIO(row.text, newline=""),
                delimiter=self.delimiter,
                quotechar=self.quotechar,
                strict=True,
            )
            try:
                fields = [value for record in reader for value in record]  # one record
            except csv.Error as exc:
                raise FileReadError(f"not a readable CSV file (row {number}): {exc}") from exc
            n = len(fields)
            for i, column in enumerate(columns):
                column.append(fields[i] if i < n else None)
            numbers.append(number)
            errors.append(f"row {number}: expected {self.width} fields, found {n}")
            extras.append(json.dumps(fields[self.width :]) if n > self.width else None)
        arrays = [pa.array(column, pa.string()) for column in columns]
        arrays += [pa.array(numbers, pa.int64()), pa.array(errors, pa.string())]
        arrays.append(pa.array(extras, pa.string()))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _check_last_quote(rows: _CsvRows, tap: _TextTap, quotechar: str) -> None:
    """An unclosed quote swallows the rest of the file into the last field of one row, which
    Arrow accepts: refuse it as Python's csv module did, don't guess where the row ended.

    Only a field holding a line break can be one; it was quoted, so the file must end with
    its closing quote (then line ends). An unclosed quote in an earlier field leaves a short
    row, which :class:`_CsvRows` re-reads strictly.
    """
    value = rows.last_value
    if value is None or ("\n" not in value and "\r" not in value):
        return
    if tap.tail.rstrip(b"\r\n").endswith(quotechar.encode()):
        return
    line = max(1, tap.newlines - value.count("\n") + 1)
    raise FileReadError(
        f"not a readable CSV file (line {line}): row {rows.last_row} opens a quoted field that "
        "is never closed (it would swallow the rest of the file)"
    )


class _Rechunk:
    """Regroups record batches into tables of exactly ``batch_rows`` rows (the last shorter)."""

    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = max(1, batch_rows)
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0
        self.emitted = False

    def add(self, pieces: list[pa.RecordBatch]) -> Iterator[pa.Table]:
        for piece in pieces:
            while piece.num_rows:
                take = min(piece.num_rows, self.batch_rows - self.rows)
                self.pending.append(piece.slice(0, take))
                self.rows += take
                piece = piece.slice(take)
                if self.rows == self.batch_rows:
                    yield self._emit()

    def flush(self) -> pa.Table | None:
        return self._emit() if self.rows else None

    def _emit(self) -> pa.Table:
        table = pa.Table.from_batches(self.pending)
        self.pending, self.rows, self.emitted = [], 0, True
        if table.num_rows > ROW_GROUP_ROWS and table.nbytes < COMBINE_MAX_BYTES:
            # Chunks of one row group each: DuckDB inserts them on all its threads at once.
            table = whole_row_groups(table)
        return table


def flag_nul_bytes(table: pa.Table) -> pa.Table:
    """Flag the rows whose fields hold a NUL byte (``_parse_error`` names them), wherever in
    the file they are: the row is kept, and silver quarantines it. Vectorized, no row loop."""
    data = [n for n in table.column_names if n not in (ROW_NUMBER, PARSE_ERROR, EXTRA_FIELDS)]
    hits = {
        name: pc.fill_null(pc.match_substring(table[name], "\x00"), False)
        for name in data
        if table.num_rows
    }
    if not any(pc.any(mask).as_py() for mask in hits.values()):
        return table
    errors = table[PARSE_ERROR].to_pylist()
    numbers = table[ROW_NUMBER].to_pylist()
    masks = {name: mask.to_pylist() for name, mask in hits.items()}
    for i in range(table.num_rows):
        fields = [name for name, mask in masks.items() if mask[i]]
        if fields:
            reason = f"row {numbers[i]}: a NUL byte in field(s) {', '.join(fields)}"
            errors[i] = f"{errors[i]}; {reason}" if errors[i] else reason
    index = table.column_names.index(PARSE_ERROR)
    return table.set_column(index, PARSE_ERROR, pa.array(errors, pa.string()))


JSON_BLOCK_BYTES = 16 << 20
"""Bytes of JSON lines DuckDB flattens at a time."""


def _read_jsonl(path: Path, feed: FileFeed, batch_rows: int) -> Iterator[pa.Table]:
    """JSON lines, flattened by DuckDB's JSON functions a block of lines at a time.

    A block whose keys collide once normalized ("id" and "ID") or repeat within an object
    takes the Python path, which names such keys record by record as before.
    """
    encoding = feed.csv.encoding
    line_no = 0
    yielded = False
    with _open_text(path, encoding) as tap, duckdb.connect() as conn:
        try:
            for block in _line_blocks(tap, strip_bom=encoding == "utf-8-sig"):
                lines = _line_array(block)
                table = _json_block(conn, lines, line_no, feed.required_columns)
                line_no += len(lines)
                for offset in range(0, table.num_rows, max(1, batch_rows)):
                    yield table.slice(offset, batch_rows)
                    yielded = True
        except pa.ArrowInvalid as exc:  # not valid UTF-8 (other encodings are transcoded)
            bad = _first_undecodable(path, encoding)
            if bad is None:
                raise
            raise _decode_error(bad, encoding) from exc
        except UnicodeDecodeError as exc:
            raise _decode_error(exc, encoding) from exc
    if not yielded:
        yield records_table([])


def _line_blocks(tap: _TextTap, *, strip_bom: bool) -> Iterator[bytes]:
    """The stream in blocks of whole lines (each ending in ``\\n``, but maybe the last)."""
    pending = b""
    first = True
    while block := tap.read(JSON_BLOCK_BYTES):
        if first and strip_bom and block.startswith(codecs.BOM_UTF8):
            block = block[len(codecs.BOM_UTF8) :]
        first = False
        data = pending + block
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        pending = data[cut:]
    if pending:
        yield pending


def _line_array(block: bytes) -> pa.StringArray:
    """The block's lines as one Arrow string array over the block's own bytes (no copy, no
    Python object per line); invalid UTF-8 raises ArrowInvalid."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + 1
    if not len(ends) or ends[-1] != len(block):
        ends = np.append(ends, len(block))
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    lines = pa.StringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(block))
    lines.validate(full=True)
    return lines


def _pointer(key: str) -> str:
    """A JSON Pointer (RFC 6901) to a top-level key, whatever characters it holds."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _json_block(
    conn: duckdb.DuckDBPyConnection, lines: pa.StringArray, before: int, required: list[str]
) -> pa.Table:
    """One block of lines (the first is line ``before + 1``) as bronze text columns."""
    numbers = pa.array(np.arange(before + 1, before + 1 + len(lines), dtype=np.int64))
    conn.register("_lines", pa.table({"n": numbers, "line": lines}))
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE _json AS
        WITH texts AS (
            SELECT n, trim(line, ' \t\r\n') AS text FROM _lines
        ), checked AS (
            SELECT n, text, json_valid(text) AS ok FROM texts WHERE text <> ''
        ), typed AS (
            SELECT *, CASE WHEN ok THEN json_type(text) = 'OBJECT' ELSE false END AS obj
            FROM checked
        )
        SELECT *, CASE WHEN obj THEN json_keys(text) END AS keys FROM typed
        """
    )
    conn.unregister("_lines")
    keys = [
        key
        for (key,) in conn.execute(
            """
            SELECT key FROM (
                SELECT n, unnest(keys) AS key, generate_subscripts(keys, 1) AS pos
                FROM _json WHERE obj
            ) GROUP BY key ORDER BY min(n), arg_min(pos, n)
            """
        ).fetchall()
    ]
    names = [_unique_names((key,))[0] for key in keys]
    repeated = conn.execute(
        "SELECT coalesce(bool_or(len(list_distinct(keys)) < len(keys)), false) FROM _json"
    ).fetchone()[0]
    if len(set(names)) < len(names) or repeated:
        return _json_block_in_python(conn, required)
    by_name = dict(zip(names, keys, strict=True))
    missing = [
        f"CASE WHEN NOT list_contains(keys, {_sql_text(by_name[r])}) THEN {_sql_text(r)} END"
        if r in by_name
        else _sql_text(r)
        for r in required
    ]
    missing_sql = f"nullif(concat_ws(', ', {', '.join(missing)}), '')" if missing else "NULL"
    values = ", ".join(f"vals[{i + 1}] AS {quote(name)}" for i, name in enumerate(names))
    paths = "[" + ", ".join(_sql_text(_pointer(key)) for key in keys) + "]"
    table = conn.execute(
        f"""
        SELECT {values + "," if values else ""}
            n AS {ROW_NUMBER},
            CASE
                WHEN NOT ok THEN NULL
                WHEN NOT obj THEN 'line ' || n || ': not a JSON object'
                ELSE 'line ' || n || ': missing required field(s) ' || {missing_sql}
            END AS {PARSE_ERROR},
            CASE WHEN NOT obj THEN to_json([text]) END AS {EXTRA_FIELDS},
            ok AS _ok
        FROM (
            SELECT *, CASE WHEN obj THEN json_extract_string(text, {paths if keys else "[]"}) END
                AS vals
            FROM _json
        )
        ORDER BY n
        """
    ).fetch_arrow_table()
    ok = table.column("_ok")  # data columns never start with "_"
    table = table.drop_columns(["_ok"])
    if not pc.all(ok).as_py():  # invalid lines: Python's parser says what is wrong
        table = _invalid_json_reasons(conn, table, ok)
    return table


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _invalid_json_reasons(
    conn: duckdb.DuckDBPyConnection, table: pa.Table, ok: pa.ChunkedArray
) -> pa.Table:
    bad = pc.invert(ok)
    texts = conn.execute("SELECT n, text FROM _json WHERE NOT ok ORDER BY n").fetchall()
    reasons = []
    for n, text in texts:
        try:
            json.loads(text)
            reasons.append(f"line {n}: invalid JSON")
        except json.JSONDecodeError as exc:
            reasons.append(f"line {n}: invalid JSON ({exc.msg})")
        except ValueError as exc:
            reasons.append(f"line {n}: invalid JSON ({exc})")
    errors = pc.replace_with_mask(
        table.column(PARSE_ERROR).combine_chunks(), bad.combine_chunks(), pa.array(reasons)
    )
    return table.set_column(table.column_names.index(PARSE_ERROR), PARSE_ERROR, errors)


def _json_block_in_python(conn: duckdb.DuckDBPyConnection, required: list[str]) -> pa.Table:
    """The block record by record in Python (keys colliding once normalized, or repeated)."""
    records = [
        _json_record(text, n, required)
        for n, text in conn.execute("SELECT n, text FROM _json ORDER BY n").fetchall()
    ]
    return records_table(records)


def _json_record(text: str, line_no: int, required: list[str]) -> dict[str, str | None]:
    """One JSON line; a line that is not an object, or lacks a required key, keeps its text
    and says why in ``_parse_error`` (per record: a JSON file has no header to reject)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return {
            ROW_NUMBER: line_no,
            PARSE_ERROR: f"line {line_no}: invalid JSON ({exc.msg})",
            EXTRA_FIELDS: json.dumps([text]),
        }
    if not isinstance(value, dict):
        return {
            ROW_NUMBER: line_no,
            PARSE_ERROR: f"line {line_no}: not a JSON object",
            EXTRA_FIELDS: json.dumps([text]),
        }
    return flatten_object(value, line_no, required, where=f"line {line_no}")


def flatten_object(
    value: dict, number: int, required: list[str], *, where: str
) -> dict[str, str | None]:
    """A JSON object as bronze text columns: scalars as text, nested values as JSON text,
    keys normalized like CSV headers; a missing required key is flagged in ``_parse_error``."""
    record: dict[str, str | None] = {ROW_NUMBER: number}  # type: ignore[dict-item]
    names = _unique_names(tuple(str(key) for key in value))  # "id" and "ID" both survive
    for name, val in zip(names, value.values(), strict=True):
        if val is None or isinstance(val, str):
            record[name] = val
        elif isinstance(val, bool):
            record[name] = "true" if val else "false"
        else:
            record[name] = json.dumps(val)
    missing = [c for c in required if c not in record]
    if missing:
        record[PARSE_ERROR] = f"{where}: missing required field(s) {', '.join(missing)}"
    return record


def records_table(records: list[dict[str, str | None]]) -> pa.Table:
    """Flattened records (see :func:`flatten_object`) as one Arrow table of text columns."""
    columns: list[str] = []
    for record in records:
        for key in record:
            if key not in columns and key not in (ROW_NUMBER, PARSE_ERROR, EXTRA_FIELDS):
                columns.append(key)
    data = {c: pa.array([r.get(c) for r in records], pa.string()) for c in columns}
    data[ROW_NUMBER] = pa.array([r[ROW_NUMBER] for r in records], pa.int64())
    data[PARSE_ERROR] = pa.array([r.get(PARSE_ERROR) for r in records], pa.string())
    data[EXTRA_FIELDS] = pa.array([r.get(EXTRA_FIELDS) for r in records], pa.string())
    return pa.table(data)


def _read_parquet(path: Path, feed: FileFeed, batch_rows: int) -> Iterator[pa.Table]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileReadError(f"not a readable Parquet file: {exc}") from exc
    names = unique_column_names(parquet.schema_arrow.names)
    _check_required(names, feed)
    offset = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
        data = {}
        for name, column in zip(names, batch.columns, strict=False):
            try:
                data[name] = column.cast(pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                data[name] = pa.array(
                    [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()],
                    pa.string(),
                )
        n = batch.num_rows
        data[ROW_NUMBER] = pa.array(range(offset + 1, offset + n + 1), pa.int64())
        data[PARSE_ERROR] = pa.nulls(n, pa.string())
        data[EXTRA_FIELDS] = pa.nulls(n, pa.string())
        offset += n
        yield pa.table(data)


def read_ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """``items``, produced ``depth`` ahead on a thread of its own (Arrow's parser and hashlib
    release the GIL, so reading the next batch or file overlaps with inserting this one).
    The producer's exception is raised here; closing this generator stops the producer."""
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            offer((done, exc))

    worker = threading.Thread(target=produce, name="read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = slots.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()
