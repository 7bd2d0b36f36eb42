"""The capture's data plane, a batch at a time: pgoutput row changes read into Arrow columns, and
JSON objects built from Arrow columns, with no Python object per row.

Why: the capture used to decode every change into a tuple, a dict and two ``json.dumps``; that
Python was 70 % of its time. Here a batch of messages sits in one buffer, read with numpy:
each tuple's values are found column by column for all messages of a relation at once, and
each value becomes a view into that buffer (Arrow's ``string_view``), so no byte is copied
before Arrow casts the column. Bronze's ``key``, ``before`` and ``after`` are then built by
Arrow's string kernels, byte for byte what ``json.dumps(..., ensure_ascii=False,
separators=(",", ":"))`` writes (the encoding the capture always used).

Only well-formed text tuples of the expected width take this path; anything else (a binary
value, a malformed message) is left to the per-message decoder, which is the reference the
tests hold this module to and which raises the precise ``PgOutputError``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TEXT, NULL, UNCHANGED, BINARY = (ord(c) for c in "tnub")
STRING = pa.large_string()
_EMPTY = pa.scalar("", STRING)
_CONTROL = r"[\x00-\x1f]"
# What json.dumps writes for the characters it escapes (ensure_ascii=False): backslash first.
_SHORT_ESCAPES = (
    ("\\", "\\\\"),
    ('"', '\\"'),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\t", "\\t"),
    ("\b", "\\b"),
    ("\f", "\\f"),
)
_OTHER_CONTROLS = tuple(chr(c) for c in range(32) if chr(c) not in "\n\r\t\b\f")


# -- JSON from Arrow columns ---------------------------------------------------------------


_ESCAPED_BYTES = np.zeros(256, dtype=bool)
_ESCAPED_BYTES[:0x20] = _ESCAPED_BYTES[ord('"')] = _ESCAPED_BYTES[ord("\\")] = True


def _text(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column if column.type == STRING else column.cast(STRING)


def _needs_escape(column: pa.Array) -> bool:
    """Whether any value holds a byte JSON escapes (a look at the value bytes, no regex)."""
    offsets, data = column.buffers()[1:3]
    if data is None or not len(column):
        return False
    ends = np.frombuffer(offsets, dtype=np.int64)[column.offset : column.offset + len(column) + 1]
    values = np.frombuffer(data, dtype=np.uint8)[ends[0] : ends[-1]]
    return bool(_ESCAPED_BYTES[values].any())


def escape_json(column: pa.Array) -> pa.Array:
    """Text as it goes between the quotes of a JSON string (json.dumps' escapes)."""
    column = _text(column)
    if not _needs_escape(column):
        return column
    for raw, escaped in _SHORT_ESCAPES:
        column = pc.replace_substring(column, raw, escaped)
    if pc.any(pc.match_substring_regex(column, _CONTROL)).as_py():
        for raw in _OTHER_CONTROLS:
            column = pc.replace_substring(column, raw, f"\\u{ord(raw):04x}")
    return column


def json_values(column: pa.Array) -> pa.Array:
    """Each value as a JSON string, NULL as ``null``."""
    quote = pa.scalar('"', STRING)
    quoted = pc.binary_join_element_wise(quote, escape_json(column), quote, _EMPTY)
    return pc.fill_null(quoted, pa.scalar("null", STRING))


def json_objects(names: Sequence[str], columns: Sequence[pa.Array], length: int) -> pa.Array:
    """``{"name":value,...}`` per row, values JSON strings or null: the compact, non-ASCII
    encoding of ``json.dumps(dict(zip(names, row)), ensure_ascii=False, separators=(",", ":"))``
    for rows of text and None. One join of all columns; a column without NULLs has its quotes
    in the literals around it."""
    if not names:
        return pa.repeat(pa.scalar("{}", STRING), length)
    pieces: list[pa.Array | str] = []
    literal = "{"
    for name, column in zip(names, columns, strict=True):
        literal += json.dumps(name, ensure_ascii=False) + ":"
        if column.null_count:
            pieces += [literal, json_values(column)]
            literal = ","
        else:
            pieces += [literal + '"', escape_json(column)]
            literal = '",'
    pieces.append(literal[:-1] + "}")
    scalars = [pa.scalar(p, STRING) if isinstance(p, str) else p for p in pieces]
    return pc.binary_join_element_wise(*scalars, _EMPTY)


def constant(value: str | None, length: int) -> pa.Array:
    """A text column of one value (or NULL)."""
    if value is None:
        return pa.nulls(length, STRING)
    return pa.repeat(pa.scalar(value, STRING), length)


# -- a batch of pgoutput messages ----------------------------------------------------------


class MessageBatch:
    """pgoutput messages fetched together: their bytes in one buffer, read with numpy.

    ``kind`` is each message's type byte (0 for an empty message), ``start``/``end`` its bytes
    in ``buf``. Values found in the buffer become views into ``buffer`` (no copy). (Joining
    the messages' bytes is 30x quicker than ``pa.array`` of them.)"""

    MAX_BYTES = (1 << 31) - 1
    """A string view addresses its buffer with 32-bit offsets."""

    def __init__(self, lsns: Sequence[int], datas: Sequence[bytes]) -> None:
        self.datas = datas
        self.size = len(datas)
        self.lsn = np.array(lsns, dtype=np.int64)
        sizes = np.fromiter(map(len, datas), dtype=np.int64, count=self.size)
        self.end = np.cumsum(sizes)
        self.start = self.end - sizes
        if self.size and self.end[-1] > self.MAX_BYTES:
            raise ValueError(f"a message batch holds at most {self.MAX_BYTES} bytes")
        # Zero padding: every position has 12 bytes after it (a string view's inline part).
        self.buffer = pa.py_buffer(b"".join(datas) + bytes(12))
        padded = np.frombuffer(self.buffer, dtype=np.uint8)
        self._padded = padded
        self.buf = padded[:-12]
        self._windows = np.lib.stride_tricks.sliding_window_view(padded, 12)
        nonempty = sizes > 0
        self.kind = np.zeros(self.size, dtype=np.uint8)
        self.kind[nonempty] = self.buf[self.start[nonempty]]

    def u8(self, pos: np.ndarray) -> np.ndarray:
        """Bytes at ``pos``; 0 past the end (the padding), never an IndexError."""
        return self._padded[np.minimum(pos, len(self.buf))].astype(np.int64)

    def be16(self, pos: np.ndarray) -> np.ndarray:
        return self.u8(pos) << 8 | self.u8(pos + 1)

    def be32(self, pos: np.ndarray) -> np.ndarray:
        return self.be16(pos) << 16 | self.be16(pos + 2)

    def read_tuples(self, pos: np.ndarray, limit: np.ndarray, width: int) -> Tuples:
        """TupleData at ``pos`` for each message (which ends at ``limit``), expected to hold
        ``width`` values, each NULL, unchanged TOAST or text.

        ``ok`` is False for a message whose tuple is anything else (another width, a binary
        value, truncated, an unknown kind): such a message takes the per-message path."""
        count = self.be16(pos)
        ok = (pos + 2 <= limit) & (count == width)
        p = np.where(ok, pos + 2, limit)
        kinds = np.empty((width, len(pos)), dtype=np.uint8)
        starts = np.empty((width, len(pos)), dtype=np.int64)
        lengths = np.empty((width, len(pos)), dtype=np.int64)
        for j in range(width):
            kind = self.u8(p)
            text = kind == TEXT
            ok &= (p < limit) & (text | (kind == NULL) | (kind == UNCHANGED))
            length = np.where(text, self.be32(p + 1), 0)
            after = p + 1 + np.where(text, 4 + length, 0)
            ok &= after <= limit
            kinds[j] = np.where(ok, kind, NULL)
            starts[j] = p + 5
            lengths[j] = np.where(ok, length, 0)
            p = np.where(ok, after, limit)
        return Tuples(kinds, starts, lengths, p, ok)

    def strings(self, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> pa.Array:
        """Text values (UTF-8 checked) at ``starts`` in the buffer; NULL where not ``valid``.

        Raises ``pyarrow.ArrowInvalid`` when a value is not valid UTF-8."""
        n = len(starts)
        lengths = np.where(valid, lengths, 0)
        views = np.zeros((n, 16), dtype=np.uint8)
        views[:, :4] = lengths.astype("<i4").view(np.uint8).reshape(n, 4)
        # Values of up to 12 bytes are stored in the view itself (zero-padded).
        inline = self._windows[np.clip(starts, 0, len(self.buf))]  # not .take: it copies all
        inline *= np.arange(12) < lengths[:, None]
        views[:, 4:] = inline
        long = lengths > 12  # longer ones: 4-byte prefix (already there), buffer 0, offset
        views[long, 8:12] = 0
        views[long, 12:] = starts[long].astype("<i4").view(np.uint8).reshape(-1, 4)
        validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
        array = pa.Array.from_buffers(
            pa.string_view(), n, [validity, pa.py_buffer(views), self.buffer]
        )
        array.validate(full=True)
        return array.cast(STRING)


@dataclass(frozen=True, slots=True)
class Tuples:
    """One TupleData per message, column by column: ``kinds[j]``, ``starts[j]`` and
    ``lengths[j]`` of value ``j``; ``end`` where each tuple stops; ``ok`` see read_tuples."""

    kinds: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    end: np.ndarray
    ok: np.ndarray

    def take(self, rows: np.ndarray) -> Tuples:
        return Tuples(
            self.kinds[:, rows],
            self.starts[:, rows],
            self.lengths[:, rows],
            self.end[rows],
            self.ok[rows],
        )


__all__ = [
    "STRING",
    "MessageBatch",
    "Tuples",
    "constant",
    "escape_json",
    "json_objects",
    "json_values",
]
