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
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
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


def escape_json(column: pa.Array) -> pa.Array:
    """Text as it goes between the quotes of a JSON string (json.dumps' escapes)."""
    if not pc.any(pc.match_substring_regex(column, _NEEDS_ESCAPE)).as_py():
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
    quoted = pc.binary_join_element_wise(quote, escape_json(column.cast(STRING)), quote, _EMPTY)
    return pc.fill_null(quoted, pa.scalar("null", STRING))


def json_objects(names: Sequence[str], columns: Sequence[pa.Array], length: int) -> pa.Array:
    """``{"name":value,...}`` per row, values JSON strings or null: the compact, non-ASCII
    encoding of ``json.dumps(dict(zip(names, row)), ensure_ascii=False, separators=(",", ":"))``
    for rows of text and None."""
    if not names:
        return pa.repeat(pa.scalar("{}", STRING), length)
    pieces: list[pa.Array | pa.Scalar] = []
    for i, (name, column) in enumerate(zip(names, columns, strict=True)):
        label = ("{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":"
        pieces += [pa.scalar(label, STRING), json_values(column)]
    return pc.binary_join_element_wise(*pieces, pa.scalar("}", STRING), _EMPTY)


def constant(value: str | None, length: int) -> pa.Array:
    """A text column of one value (or NULL)."""
    if value is None:
        return pa.nulls(length, STRING)
    return pa.repeat(pa.scalar(value, STRING), length)


# -- a batch of pgoutput messages ----------------------------------------------------------


class MessageBatch:
    """pgoutput messages fetched together: their bytes in one buffer, read with numpy.

    ``kind`` is each message's type byte (0 for an empty message), ``start``/``end`` its bytes
    in ``buf``. Values found in the buffer become views into ``buffer`` (no copy)."""

    MAX_BYTES = (1 << 31) - 1
    """A string view addresses its buffer with 32-bit offsets."""

    def __init__(self, lsns: Sequence[int], datas: Sequence[bytes]) -> None:
        self.datas = datas
        self.size = len(datas)
        self.lsn = np.array(lsns, dtype=np.int64)
        array = pa.array(datas, pa.large_binary())
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[: self.size + 1]
        self.buffer = array.buffers()[2] or pa.py_buffer(b"")
        self.buf = np.frombuffer(self.buffer, dtype=np.uint8)
        self.start = offsets[:-1]
        self.end = offsets[1:]
        if self.buffer.size > self.MAX_BYTES:
            raise ValueError(f"a message batch holds at most {self.MAX_BYTES} bytes")
        nonempty = self.end > self.start
        self.kind = np.zeros(self.size, dtype=np.uint8)
        self.kind[nonempty] = self.buf[self.start[nonempty]]

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self.buf[np.minimum(pos, len(self.buf) - 1)].astype(np.int64)

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
        if len(self.buf):  # values of up to 12 bytes are stored in the view itself
            index = np.minimum(starts[:, None] + np.arange(12), len(self.buf) - 1)
            views[:, 4:] = np.where(np.arange(12) < lengths[:, None], self.buf[index], 0)
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
