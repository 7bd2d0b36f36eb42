"""Read a landed file into batches of text columns, row by row, losing nothing.

Every value is kept as text (a parser's opinion of "12,99" must not cost us the row). A row
that does not fit the header keeps what it has: missing fields are NULL, extra fields go to
``_extra_fields`` as a JSON array, and ``_parse_error`` says what was wrong. A row with a NUL
byte in a field is kept the same way, flagged wherever it is in the file (silver quarantines
it). A file that cannot be read at all (empty, UTF-16, binary, not valid in its encoding)
raises :class:`FileReadError` with the reason, and the caller rejects it whole. Files
compressed with gzip or zstd are read transparently (recognized by their first bytes).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from functools import lru_cache
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medallion_platform.connectors.bronze import EXTRA_FIELDS, PARSE_ERROR, ROW_NUMBER
from medallion_platform.connectors.files.spec import FileFeed
from medallion_platform.warehouse.identifiers import normalize_column_name

DEFAULT_BATCH_ROWS = 100_000


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
    path: Path, feed: FileFeed, batch_rows: int = DEFAULT_BATCH_ROWS
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
    # Strict decoding: a wrong encoding rejects the file instead of silently mangling values.
    raw = open_binary(path)
    with io.TextIOWrapper(raw, encoding=opts.encoding, errors="strict", newline="") as fh:
        reader = csv.reader(fh, delimiter=opts.delimiter, quotechar=opts.quotechar, strict=True)
        try:
            try:
                header = next(reader)
            except StopIteration:
                raise FileReadError("file has no header row") from None
            columns = unique_column_names(header)
            _check_required(columns, feed)
            width = len(columns)
            for table in _csv_batches(reader, columns, width, batch_rows):
                yield flag_nul_bytes(table)
        except UnicodeDecodeError as exc:
            raise _decode_error(exc, opts.encoding) from exc
        except csv.Error as exc:
            raise FileReadError(f"not a readable CSV file (line {reader.line_num}): {exc}") from exc


def _csv_batches(
    reader: Iterator[list[str]], columns: list[str], width: int, batch_rows: int
) -> Iterator[pa.Table]:
    """Batches of rows; a batch whose rows all fit the header takes a fast path (no per-row
    bookkeeping), and only a batch with a blank or wrong-width line is walked row by row."""
    next_number = 1
    yielded = False
    while chunk := list(islice(reader, batch_rows)):
        if all(len(record) == width for record in chunk):
            numbers = list(range(next_number, next_number + len(chunk)))
            next_number += len(chunk)
            yield _table(columns, chunk, numbers, None, None)
        else:
            table, next_number = _checked_chunk(chunk, columns, width, next_number)
            yield table
        yielded = True
    if not yielded:
        yield _table(columns, [], [], None, None)


def _checked_chunk(
    chunk: list[list[str]], columns: list[str], width: int, next_number: int
) -> tuple[pa.Table, int]:
    rows: list[list[str | None]] = []
    numbers: list[int] = []
    errors: list[str | None] = []
    extras: list[str | None] = []
    for record in chunk:
        n = len(record)
        if n == 0:  # a blank line is not a row
            continue
        if n == width:
            rows.append(record)  # type: ignore[arg-type]
            errors.append(None)
            extras.append(None)
        else:
            if n < width:
                rows.append(record + [None] * (width - n))
                extras.append(None)
            else:
                rows.append(record[:width])  # type: ignore[arg-type]
                extras.append(json.dumps(record[width:]))
            errors.append(f"row {next_number}: expected {width} fields, found {n}")
        numbers.append(next_number)
        next_number += 1
    return _table(columns, rows, numbers, errors, extras), next_number


def _table(
    columns: list[str],
    rows: list[list[str]] | list[list[str | None]],
    numbers: list[int],
    errors: list[str | None] | None,
    extras: list[str | None] | None,
) -> pa.Table:
    n = len(rows)
    if rows:
        data = {
            name: pa.array(values, pa.string())
            for name, values in zip(columns, zip(*rows, strict=True), strict=True)
        }
    else:
        data = {name: pa.array([], pa.string()) for name in columns}
    data[ROW_NUMBER] = pa.array(numbers, pa.int64())
    data[PARSE_ERROR] = pa.array(errors, pa.string()) if errors else pa.nulls(n, pa.string())
    data[EXTRA_FIELDS] = pa.array(extras, pa.string()) if extras else pa.nulls(n, pa.string())
    return pa.table(data)


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


def _read_jsonl(path: Path, feed: FileFeed, batch_rows: int) -> Iterator[pa.Table]:
    decoder = codecs.getincrementaldecoder(feed.csv.encoding)(errors="strict")
    records: list[dict[str, str | None]] = []
    line_no = 0
    with open_binary(path) as fh:
        try:
            for raw in fh:
                line_no += 1
                text = decoder.decode(raw).strip()
                if not text:
                    continue
                records.append(_json_record(text, line_no, feed.required_columns))
                if len(records) >= batch_rows:
                    yield records_table(records)
                    records = []
        except UnicodeDecodeError as exc:
            raise _decode_error(exc, feed.csv.encoding) from exc
    if records or line_no == 0:
        yield records_table(records)


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
