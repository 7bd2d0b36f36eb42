"""Decode PostgreSQL's built-in ``pgoutput`` logical replication messages (protocol version 1).

Plain Python, no database access: ``decode(data)`` turns the bytes of one message into a
value object; ``RelationCache`` keeps the Relation messages so that Insert/Update/Delete tuples
become ``{column: value}`` rows. The format is PostgreSQL's "Logical Replication Message
Formats" (``src/backend/replication/logical/proto.c``). The bytes are what
``pg_logical_slot_{peek,get}_binary_changes(slot, NULL, n, 'proto_version', '1',
'publication_names', 'pub')`` returns in its ``data`` column, one message per row: in that SQL
interface there is no ``'w'`` XLogData wrapper, the first byte is the message type. (A
walsender consumer strips the 25-byte XLogData header first and passes the rest here.)

Values in a tuple: ``None`` for SQL NULL (``'n'``), ``UNCHANGED_TOAST`` for a TOASTed value
that the update did not change and the server therefore did not send (``'u'``; the consumer
keeps the value it already has), ``str`` for the text format (``'t'``, UTF-8: the database
encoding must be UTF8) and ``bytes`` for the binary format (``'b'``, only with the ``binary``
option). LSNs are ``int`` (compare them as numbers, never as text: ``"0/A" > "0/10"``);
``lsn_to_int``/``int_to_lsn`` convert from/to PostgreSQL's ``XXX/XXX`` text.

Positions in the SQL interface (checked against PostgreSQL 18 in the tests): a Commit row's
``lsn`` column is ``Commit.end_lsn``, the position to resume after; a Begin row's is the LSN
of the transaction's first change (PostgreSQL 15+ sends BEGIN lazily, with that change), not
``Begin.final_lsn``, which is the commit record's; Relation/Type rows carry the LSN of the
change they precede. A LogicalMessage's ``lsn`` is the *end* of its WAL record. Transactions
without a published change are not sent at all, and TRUNCATE (new relfilenode) makes the
server send the Relation (and Type) messages of its tables again.

Only protocol version 1 is decoded. Versions 2+ insert an xid into Relation/Type/Insert/...
messages inside streamed transactions and add Stream*/Prepare messages; those type bytes
raise ``PgOutputError`` rather than being misread, and a message with bytes left over after
its last field is rejected too.

Why frozen slotted dataclasses and not pydantic models: a CDC batch decodes hundreds of
thousands of messages that come from our own byte-level parser, so there is nothing for
validation to check. Measured on Python 3.11 for a two-field message: a frozen slotted
dataclass costs ~0.5 µs to build, a validated pydantic v2 model ~1.0 µs and
``model_construct`` ~1.9 µs (it is slower than validating). The messages are immutable,
hashable values; anything that needs pydantic (a bronze row, an API model) is built from them
downstream.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final, Literal, TypeAlias

__all__ = [
    "UNCHANGED_TOAST",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "PgOutputError",
    "Relation",
    "RelationCache",
    "Truncate",
    "TupleData",
    "Type",
    "UnchangedToast",
    "Update",
    "Value",
    "decode",
    "int_to_lsn",
    "lsn_to_int",
]


class PgOutputError(ValueError):
    """The bytes are not a well-formed pgoutput (protocol version 1) message."""


class UnchangedToast(enum.Enum):
    """The type of ``UNCHANGED_TOAST``: a single, picklable, identity-comparable member."""

    UNCHANGED_TOAST = "u"

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = UnchangedToast.UNCHANGED_TOAST
"""A TOASTed column the UPDATE did not change: its value was not sent, keep the previous one."""

Value: TypeAlias = str | bytes | UnchangedToast | None
TupleData: TypeAlias = tuple[Value, ...]
"""One value per published column, in the order of the relation's Relation message."""

# Replica identity (pg_class.relreplident), as sent in a Relation message.
REPLICA_IDENTITY_DEFAULT: Final = "d"  # the primary key
REPLICA_IDENTITY_NOTHING: Final = "n"
REPLICA_IDENTITY_FULL: Final = "f"  # all columns
REPLICA_IDENTITY_INDEX: Final = "i"  # a chosen unique index

COLUMN_FLAG_KEY: Final = 1
TRUNCATE_CASCADE: Final = 1
TRUNCATE_RESTART_IDENTITY: Final = 2
MESSAGE_TRANSACTIONAL: Final = 1

_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Begin:
    """'B': start of a committed transaction; its changes follow, then a Commit."""

    TAG: ClassVar[str] = "B"
    final_lsn: int  # the LSN of the commit record
    commit_time: datetime  # aware, UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """'C': end of the transaction opened by the last Begin."""

    TAG: ClassVar[str] = "C"
    flags: int  # unused, 0
    commit_lsn: int  # the LSN of the commit record (= Begin.final_lsn)
    end_lsn: int  # the end of the commit record: where the next transaction can start
    commit_time: datetime  # aware, UTC


@dataclass(frozen=True, slots=True)
class Origin:
    """'O': the transaction was replayed from another node (replication origin)."""

    TAG: ClassVar[str] = "O"
    commit_lsn: int  # the commit's LSN on the origin server
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    flags: int  # COLUMN_FLAG_KEY: part of the replica identity
    name: str
    type_oid: int
    type_modifier: int  # atttypmod, -1 when the type has none

    @property
    def is_key(self) -> bool:
        return bool(self.flags & COLUMN_FLAG_KEY)


@dataclass(frozen=True, slots=True)
class Relation:
    """'R': a table's published columns, sent before its first change in a session and again
    after any change to its definition (ALTER TABLE), its replica identity or publication."""

    TAG: ClassVar[str] = "R"
    relation_oid: int
    namespace: str  # the schema; PostgreSQL sends "" for pg_catalog, reported as "pg_catalog"
    name: str
    replica_identity: str  # REPLICA_IDENTITY_*: 'd', 'n', 'f' or 'i'
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.flags & COLUMN_FLAG_KEY)


@dataclass(frozen=True, slots=True)
class Type:
    """'Y': a non-built-in column type (enum, domain, user type), sent before its Relation."""

    TAG: ClassVar[str] = "Y"
    type_oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    TAG: ClassVar[str] = "I"
    relation_oid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    """'U'. ``old`` is sent only when needed: ``old_kind`` 'K' (replica identity DEFAULT or
    INDEX, and the key changed: the key columns, every other column NULL) or 'O' (REPLICA
    IDENTITY FULL: the whole old row); otherwise both are None."""

    TAG: ClassVar[str] = "U"
    relation_oid: int
    old_kind: Literal["K", "O"] | None
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    """'D'. ``old_kind`` 'K': the key columns (others NULL); 'O': the whole old row."""

    TAG: ClassVar[str] = "D"
    relation_oid: int
    old_kind: Literal["K", "O"]
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    TAG: ClassVar[str] = "T"
    options: int  # TRUNCATE_CASCADE | TRUNCATE_RESTART_IDENTITY
    relation_oids: tuple[int, ...]

    @property
    def cascade(self) -> bool:
        return bool(self.options & TRUNCATE_CASCADE)

    @property
    def restart_identity(self) -> bool:
        return bool(self.options & TRUNCATE_RESTART_IDENTITY)


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """'M': ``pg_logical_emit_message`` (only with the ``messages`` option)."""

    TAG: ClassVar[str] = "M"
    flags: int  # MESSAGE_TRANSACTIONAL
    lsn: int
    prefix: str
    content: bytes

    @property
    def transactional(self) -> bool:
        return bool(self.flags & MESSAGE_TRANSACTIONAL)


Message: TypeAlias = (
    Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage
)


# -- decoding ------------------------------------------------------------------------------

_u8_u64 = struct.Struct(">BQ").unpack_from
_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_u32_u8 = struct.Struct(">IB").unpack_from
_u8_u16 = struct.Struct(">BH").unpack_from
_u32_i32 = struct.Struct(">Ii").unpack_from
_u64 = struct.Struct(">Q").unpack_from
_u64_i64_u32 = struct.Struct(">QqI").unpack_from
_u8_u64_u64_i64 = struct.Struct(">BQQq").unpack_from

_NULL, _UNCHANGED, _TEXT, _BINARY = b"n"[0], b"u"[0], b"t"[0], b"b"[0]
_NEW, _KEY = b"N"[0], b"K"[0]


def _timestamp(micros: int) -> datetime:
    """TimestampTz: microseconds since 2000-01-01 00:00 UTC."""
    try:
        return _PG_EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise PgOutputError(f"timestamp out of range: {micros} µs since 2000-01-01") from None


def _string(data: bytes, pos: int) -> tuple[str, int]:
    """A NUL-terminated string at ``pos``; returns it and the offset after the NUL."""
    end = data.find(b"\0", pos)
    if end < 0:
        raise PgOutputError(f"unterminated string at offset {pos}")
    return data[pos:end].decode(), end + 1


def _tuple(data: bytes, pos: int) -> tuple[TupleData, int]:
    """TupleData at ``pos``: Int16 count, then per column a kind byte (+ Int32 length, bytes)."""
    (ncols,) = _u16(data, pos)
    pos += 2
    size = len(data)
    values: list[Value] = []
    append = values.append
    for _ in range(ncols):
        if pos >= size:
            raise PgOutputError(f"TupleData truncated at offset {pos}: expected a column kind")
        kind = data[pos]
        if kind == _TEXT:
            (length,) = _u32(data, pos + 1)
            start = pos + 5
            pos = start + length
            if pos > size:
                raise PgOutputError(
                    f"TupleData truncated at offset {start}: "
                    f"a {length}-byte value, {size - start} bytes left"
                )
            append(data[start:pos].decode())
        elif kind == _NULL:
            append(None)
            pos += 1
        elif kind == _UNCHANGED:
            append(UNCHANGED_TOAST)
            pos += 1
        elif kind == _BINARY:
            (length,) = _u32(data, pos + 1)
            start = pos + 5
            pos = start + length
            if pos > size:
                raise PgOutputError(
                    f"TupleData truncated at offset {start}: "
                    f"a {length}-byte value, {size - start} bytes left"
                )
            append(data[start:pos])
        else:
            raise PgOutputError(f"unknown TupleData column kind {bytes([kind])!r} at offset {pos}")
    return tuple(values), pos


def _tag(data: bytes, pos: int, allowed: bytes) -> int:
    """The tuple tag byte at ``pos`` ('N', 'K' or 'O'), which must be one of ``allowed``."""
    if pos >= len(data):
        raise PgOutputError(f"truncated at offset {pos}: expected a tuple tag in {allowed!r}")
    tag = data[pos]
    if tag not in allowed:
        raise PgOutputError(
            f"unexpected tuple tag {bytes([tag])!r} at offset {pos}, expected one of {allowed!r}"
        )
    return tag


def _begin(data: bytes) -> tuple[Begin, int]:
    final_lsn, micros, xid = _u64_i64_u32(data, 1)
    return Begin(final_lsn, _timestamp(micros), xid), 21


def _commit(data: bytes) -> tuple[Commit, int]:
    flags, commit_lsn, end_lsn, micros = _u8_u64_u64_i64(data, 1)
    return Commit(flags, commit_lsn, end_lsn, _timestamp(micros)), 26


def _origin(data: bytes) -> tuple[Origin, int]:
    (commit_lsn,) = _u64(data, 1)
    name, pos = _string(data, 9)
    return Origin(commit_lsn, name), pos


def _namespace(data: bytes, pos: int) -> tuple[str, int]:
    namespace, pos = _string(data, pos)
    return namespace or "pg_catalog", pos


def _relation(data: bytes) -> tuple[Relation, int]:
    (oid,) = _u32(data, 1)
    namespace, pos = _namespace(data, 5)
    name, pos = _string(data, pos)
    identity, ncols = _u8_u16(data, pos)
    pos += 3
    columns = []
    for _ in range(ncols):
        if pos >= len(data):
            raise PgOutputError(f"truncated at offset {pos}: expected a column")
        flags = data[pos]
        column_name, pos = _string(data, pos + 1)
        type_oid, type_modifier = _u32_i32(data, pos)
        pos += 8
        columns.append(Column(flags, column_name, type_oid, type_modifier))
    return Relation(oid, namespace, name, chr(identity), tuple(columns)), pos


def _type(data: bytes) -> tuple[Type, int]:
    (oid,) = _u32(data, 1)
    namespace, pos = _namespace(data, 5)
    name, pos = _string(data, pos)
    return Type(oid, namespace, name), pos


def _insert(data: bytes) -> tuple[Insert, int]:
    (oid,) = _u32(data, 1)
    _tag(data, 5, b"N")
    new, pos = _tuple(data, 6)
    return Insert(oid, new), pos


def _update(data: bytes) -> tuple[Update, int]:
    (oid,) = _u32(data, 1)
    tag = _tag(data, 5, b"KON")
    old_kind: Literal["K", "O"] | None = None
    old = None
    pos = 6
    if tag != _NEW:
        old_kind = "K" if tag == _KEY else "O"
        old, pos = _tuple(data, pos)
        _tag(data, pos, b"N")
        pos += 1
    new, pos = _tuple(data, pos)
    return Update(oid, old_kind, old, new), pos


def _delete(data: bytes) -> tuple[Delete, int]:
    (oid,) = _u32(data, 1)
    tag = _tag(data, 5, b"KO")
    old, pos = _tuple(data, 6)
    return Delete(oid, "K" if tag == _KEY else "O", old), pos


def _truncate(data: bytes) -> tuple[Truncate, int]:
    count, options = _u32_u8(data, 1)
    end = 6 + 4 * count
    if end > len(data):
        raise PgOutputError(
            f"truncated at offset 6: {count} relation oids need {4 * count} bytes, "
            f"{len(data) - 6} left"
        )
    oids = struct.unpack_from(f">{count}I", data, 6)
    return Truncate(options, oids), end


def _message(data: bytes) -> tuple[LogicalMessage, int]:
    flags, lsn = _u8_u64(data, 1)
    prefix, pos = _string(data, 10)
    (length,) = _u32(data, pos)
    start = pos + 4
    end = start + length
    if end > len(data):
        raise PgOutputError(
            f"truncated at offset {start}: {length}-byte content, {len(data) - start} bytes left"
        )
    return LogicalMessage(flags, lsn, prefix, data[start:end]), end


_DECODERS: dict[int, tuple[str, Callable[[bytes], tuple[Message, int]]]] = {
    ord("B"): ("Begin", _begin),
    ord("C"): ("Commit", _commit),
    ord("O"): ("Origin", _origin),
    ord("R"): ("Relation", _relation),
    ord("Y"): ("Type", _type),
    ord("I"): ("Insert", _insert),
    ord("U"): ("Update", _update),
    ord("D"): ("Delete", _delete),
    ord("T"): ("Truncate", _truncate),
    ord("M"): ("Message", _message),
}


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one pgoutput message (the type byte first, no XLogData header).

    Raises ``PgOutputError`` for an empty buffer, an unknown message type (naming the byte and
    its offset), truncated or trailing bytes, a bad tag, invalid UTF-8 or an impossible
    timestamp."""
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise PgOutputError("empty pgoutput message")
    entry = _DECODERS.get(data[0])
    if entry is None:
        raise PgOutputError(
            f"unknown pgoutput message type {data[:1]!r} (0x{data[0]:02x}) at offset 0 "
            "(only protocol version 1 is decoded)"
        )
    name, decoder = entry
    try:
        message, end = decoder(data)
    except struct.error as exc:
        raise PgOutputError(f"{name} message truncated ({len(data)} bytes): {exc}") from None
    except UnicodeDecodeError as exc:
        raise PgOutputError(
            f"{name} message: invalid UTF-8 in a string or text value: {exc}"
        ) from None
    except PgOutputError as exc:
        raise PgOutputError(f"{name} message: {exc}") from None
    if end != len(data):
        raise PgOutputError(
            f"{name} message has {len(data) - end} unexpected trailing bytes at offset {end}"
        )
    return message


# -- relations -----------------------------------------------------------------------------


class RelationCache:
    """The latest Relation (and Type) message per oid, to name the values of row changes.

    Feed it every decoded message with ``apply`` (it ignores all but Relation and Type): the
    server sends a Relation before the first change of a table in each decoding session and
    again whenever the table's definition changes, so the cache must live as long as the
    session that produced the messages, and a consumer starting a new session starts empty.
    """

    __slots__ = ("_names", "_relations", "types")

    def __init__(self) -> None:
        self._relations: dict[int, Relation] = {}
        self._names: dict[int, tuple[str, ...]] = {}
        self.types: dict[int, Type] = {}

    def apply(self, message: Message) -> None:
        if isinstance(message, Relation):
            self._relations[message.relation_oid] = message
            self._names[message.relation_oid] = message.column_names
        elif isinstance(message, Type):
            self.types[message.type_oid] = message

    def __contains__(self, relation_oid: object) -> bool:
        return relation_oid in self._relations

    def relation(self, relation_oid: int) -> Relation:
        try:
            return self._relations[relation_oid]
        except KeyError:
            raise PgOutputError(
                f"no Relation message seen for relation oid {relation_oid}"
            ) from None

    def row(self, relation_oid: int, tuple_data: TupleData) -> dict[str, Value]:
        """``{column: str | bytes | None | UNCHANGED_TOAST}`` in the Relation's column order."""
        names = self._names.get(relation_oid)
        if names is None:
            raise PgOutputError(f"no Relation message seen for relation oid {relation_oid}")
        if len(names) != len(tuple_data):
            relation = self._relations[relation_oid]
            raise PgOutputError(
                f"{relation.namespace}.{relation.name} (oid {relation_oid}) has {len(names)} "
                f"columns in its Relation message, but the tuple has {len(tuple_data)} values"
            )
        return dict(zip(names, tuple_data, strict=True))

    def key_columns(self, relation_oid: int) -> list[str]:
        """The replica identity columns (all columns under REPLICA IDENTITY FULL; none under
        NOTHING, or DEFAULT without a primary key)."""
        return list(self.relation(relation_oid).key_columns)

    def key(self, relation_oid: int, tuple_data: TupleData) -> dict[str, Value]:
        """Only the replica identity columns of a tuple (e.g. an Update/Delete 'K' tuple)."""
        row = self.row(relation_oid, tuple_data)
        return {name: row[name] for name in self.relation(relation_oid).key_columns}


# -- LSNs ----------------------------------------------------------------------------------

_LSN_TEXT = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_MAX_LSN: Final = (1 << 64) - 1


def lsn_to_int(lsn: str) -> int:
    """``"16/B374D848"`` → ``0x16_B374D848``. Accepts what ``pg_lsn`` accepts: 1-8 hex digits
    (either case, zero padding or not) on each side of the slash."""
    match = _LSN_TEXT.fullmatch(lsn)
    if match is None:
        raise ValueError(f"not a PostgreSQL LSN: {lsn!r} (expected hex 'XXXXXXXX/XXXXXXXX')")
    return int(match[1], 16) << 32 | int(match[2], 16)


def int_to_lsn(lsn: int) -> str:
    """``0x16_B374D848`` → ``"16/B374D848"``: PostgreSQL's ``%X/%X`` (upper-case hex, no zero
    padding), as ``pg_lsn`` prints it."""
    if not 0 <= lsn <= _MAX_LSN:
        raise ValueError(f"an LSN is an unsigned 64-bit integer, got {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
