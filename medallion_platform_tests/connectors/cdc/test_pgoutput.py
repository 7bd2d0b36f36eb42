"""The pgoutput decoder: byte-level messages built here from the protocol spec, then the real
thing, decoded from a real PostgreSQL's ``pg_logical_slot_peek_binary_changes``."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import random
import struct
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from medallion_platform.connectors.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    PgOutputError,
    Relation,
    RelationCache,
    Truncate,
    Type,
    Update,
    Value,
    decode,
    int_to_lsn,
    lsn_to_int,
)
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform_tests.conftest import fresh_database

# -- a small encoder, straight from "Logical Replication Message Formats" (protocol 1) -------

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def cstring(text: str) -> bytes:
    return text.encode() + b"\0"


def micros(moment: datetime) -> int:
    return (moment - PG_EPOCH) // timedelta(microseconds=1)


def tuple_data(*values: Value) -> bytes:
    out = struct.pack(">H", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(value, str):
            encoded = value.encode()
            out += b"t" + struct.pack(">I", len(encoded)) + encoded
        else:
            assert isinstance(value, bytes)
            out += b"b" + struct.pack(">I", len(value)) + value
    return out


def begin(final_lsn: int, at: datetime, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, micros(at), xid)


def commit(commit_lsn: int, end_lsn: int, at: datetime, flags: int = 0) -> bytes:
    return b"C" + struct.pack(">BQQq", flags, commit_lsn, end_lsn, micros(at))


def origin(commit_lsn: int, name: str) -> bytes:
    return b"O" + struct.pack(">Q", commit_lsn) + cstring(name)


def relation(
    oid: int, namespace: str, name: str, identity: str, columns: list[tuple[int, str, int, int]]
) -> bytes:
    out = b"R" + struct.pack(">I", oid) + cstring(namespace) + cstring(name)
    out += identity.encode() + struct.pack(">H", len(columns))
    for flags, column, type_oid, typmod in columns:
        out += struct.pack(">B", flags) + cstring(column) + struct.pack(">Ii", type_oid, typmod)
    return out


def type_message(oid: int, namespace: str, name: str) -> bytes:
    return b"Y" + struct.pack(">I", oid) + cstring(namespace) + cstring(name)


def insert(oid: int, *values: Value) -> bytes:
    return b"I" + struct.pack(">I", oid) + b"N" + tuple_data(*values)


def update(
    oid: int, new: tuple[Value, ...], old: tuple[Value, ...] | None = None, kind: bytes = b""
) -> bytes:
    out = b"U" + struct.pack(">I", oid)
    if old is not None:
        out += kind + tuple_data(*old)
    return out + b"N" + tuple_data(*new)


def delete(oid: int, kind: bytes, *old: Value) -> bytes:
    return b"D" + struct.pack(">I", oid) + kind + tuple_data(*old)


def truncate(options: int, *oids: int) -> bytes:
    return b"T" + struct.pack(f">IB{len(oids)}I", len(oids), options, *oids)


def message(flags: int, lsn: int, prefix: str, content: bytes) -> bytes:
    return (
        b"M"
        + struct.pack(">BQ", flags, lsn)
        + cstring(prefix)
        + struct.pack(">I", len(content))
        + content
    )


def encode(decoded: Message) -> bytes:
    """The bytes of a decoded message, by the encoder above: the real server's messages must
    come back byte for byte (nothing skipped, nothing misread)."""
    match decoded:
        case Begin():
            return begin(decoded.final_lsn, decoded.commit_time, decoded.xid)
        case Commit():
            return commit(decoded.commit_lsn, decoded.end_lsn, decoded.commit_time, decoded.flags)
        case Origin():
            return origin(decoded.commit_lsn, decoded.name)
        case Relation():
            columns = [(c.flags, c.name, c.type_oid, c.type_modifier) for c in decoded.columns]
            namespace = "" if decoded.namespace == "pg_catalog" else decoded.namespace
            return relation(
                decoded.relation_oid, namespace, decoded.name, decoded.replica_identity, columns
            )
        case Type():
            namespace = "" if decoded.namespace == "pg_catalog" else decoded.namespace
            return type_message(decoded.type_oid, namespace, decoded.name)
        case Insert():
            return insert(decoded.relation_oid, *decoded.new)
        case Update():
            kind = (decoded.old_kind or "").encode()
            return update(decoded.relation_oid, decoded.new, decoded.old, kind)
        case Delete():
            return delete(decoded.relation_oid, decoded.old_kind.encode(), *decoded.old)
        case Truncate():
            return truncate(decoded.options, *decoded.relation_oids)
        case LogicalMessage():
            return message(decoded.flags, decoded.lsn, decoded.prefix, decoded.content)
    raise AssertionError(decoded)


AT = datetime(2024, 5, 1, 12, 34, 56, 789012, tzinfo=UTC)
ORDERS = 16_384

ALL_KINDS: tuple[Value, ...] = (
    "42",
    None,
    UNCHANGED_TOAST,
    "Zoë Ångström — 東京 🚀",
    "",
    b"\x00\xff\x00",
    b"",
)

# One well-formed message of each kind (and variant), for the truncation and fuzz tests.
SAMPLES: dict[str, bytes] = {
    "begin": begin(0x16_B374D848, AT, 761),
    "commit": commit(0x16_B374D848, 0x16_B374D878, AT),
    "origin": origin(0xABCDEF, "upstream"),
    "relation": relation(
        ORDERS, "sales", "orders", "d", [(1, "id", 23, -1), (0, "amount", 1700, 655366)]
    ),
    "type": type_message(16_386, "public", "mood"),
    "insert": insert(ORDERS, *ALL_KINDS),
    "update": update(ORDERS, ("1", "b")),
    "update_key": update(ORDERS, ("2", "b"), ("1", None), kind=b"K"),
    "update_old": update(ORDERS, ("1", UNCHANGED_TOAST), ("1", "a"), kind=b"O"),
    "delete_key": delete(ORDERS, b"K", "1", None),
    "delete_old": delete(ORDERS, b"O", "1", "a"),
    "truncate": truncate(3, ORDERS, 16_390),
    "message": message(1, 0x1B009F8, "medallion", b"pay\x00load"),
}


# -- messages --------------------------------------------------------------------------------


def test_begin() -> None:
    assert decode(SAMPLES["begin"]) == Begin(final_lsn=0x16_B374D848, commit_time=AT, xid=761)
    assert decode(begin(1, PG_EPOCH, 0)).commit_time == datetime(2000, 1, 1, tzinfo=UTC)
    before = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert decode(begin(1, before, 2**32 - 1)) == Begin(1, before, 2**32 - 1)


def test_commit_time_is_aware_utc() -> None:
    decoded = decode(SAMPLES["commit"])
    assert decoded == Commit(
        flags=0, commit_lsn=0x16_B374D848, end_lsn=0x16_B374D878, commit_time=AT
    )
    assert isinstance(decoded, Commit)
    assert decoded.commit_time.utcoffset() == timedelta(0)
    assert decoded.commit_time.isoformat() == "2024-05-01T12:34:56.789012+00:00"


def test_origin() -> None:
    assert decode(SAMPLES["origin"]) == Origin(commit_lsn=0xABCDEF, name="upstream")
    assert decode(origin(0, "nœud-2")) == Origin(0, "nœud-2")


def test_relation() -> None:
    decoded = decode(
        relation(
            ORDERS,
            "ventes",
            "commandes_été",
            "f",
            [(1, "id", 23, -1), (1, "montant", 1700, 655366), (1, "étiquette", 1043, 24)],
        )
    )
    assert decoded == Relation(
        relation_oid=ORDERS,
        namespace="ventes",
        name="commandes_été",
        replica_identity="f",
        columns=(
            Column(flags=1, name="id", type_oid=23, type_modifier=-1),
            Column(flags=1, name="montant", type_oid=1700, type_modifier=655366),
            Column(flags=1, name="étiquette", type_oid=1043, type_modifier=24),
        ),
    )
    assert isinstance(decoded, Relation)
    assert decoded.column_names == ("id", "montant", "étiquette")
    assert decoded.key_columns == ("id", "montant", "étiquette")


def test_relation_key_flags_and_pg_catalog_namespace() -> None:
    decoded = decode(
        relation(7, "", "t", "d", [(0, "a", 25, -1), (1, "b", 23, -1), (1, "c", 23, -1)])
    )
    assert isinstance(decoded, Relation)
    assert decoded.namespace == "pg_catalog"  # sent as "" to save space
    assert [column.is_key for column in decoded.columns] == [False, True, True]
    assert decoded.key_columns == ("b", "c")
    assert decode(relation(7, "s", "no_columns", "n", [])) == Relation(
        7, "s", "no_columns", "n", ()
    )


def test_type() -> None:
    assert decode(SAMPLES["type"]) == Type(type_oid=16_386, namespace="public", name="mood")
    assert decode(type_message(9, "", "x")) == Type(9, "pg_catalog", "x")


def test_insert_with_every_tuple_data_kind() -> None:
    decoded = decode(SAMPLES["insert"])
    assert decoded == Insert(relation_oid=ORDERS, new=ALL_KINDS)
    assert isinstance(decoded, Insert)
    number, null, toast, text, empty, binary, empty_binary = decoded.new
    assert number == "42" and null is None
    assert toast is UNCHANGED_TOAST and toast is not None and toast != ""
    assert text == "Zoë Ångström — 東京 🚀" and isinstance(text, str)
    assert empty == "" and isinstance(empty, str)
    assert binary == b"\x00\xff\x00" and isinstance(binary, bytes)
    assert empty_binary == b"" and isinstance(empty_binary, bytes)
    assert decode(insert(ORDERS)) == Insert(ORDERS, ())


def test_large_text_value() -> None:
    body = "Grüße " * 50_000
    assert decode(insert(1, "1", body)) == Insert(1, ("1", body))


def test_update_without_old_tuple() -> None:
    assert decode(SAMPLES["update"]) == Update(
        relation_oid=ORDERS, old_kind=None, old=None, new=("1", "b")
    )


def test_update_with_old_key() -> None:
    assert decode(SAMPLES["update_key"]) == Update(ORDERS, "K", ("1", None), ("2", "b"))


def test_update_with_old_row_and_unchanged_toast() -> None:
    assert decode(SAMPLES["update_old"]) == Update(ORDERS, "O", ("1", "a"), ("1", UNCHANGED_TOAST))


def test_delete() -> None:
    assert decode(SAMPLES["delete_key"]) == Delete(ORDERS, old_kind="K", old=("1", None))
    assert decode(SAMPLES["delete_old"]) == Delete(ORDERS, old_kind="O", old=("1", "a"))


@pytest.mark.parametrize(
    ("options", "cascade", "restart_identity"),
    [(0, False, False), (1, True, False), (2, False, True), (3, True, True)],
)
def test_truncate(options: int, cascade: bool, restart_identity: bool) -> None:
    decoded = decode(truncate(options, ORDERS, 16_390, 2**32 - 1))
    assert decoded == Truncate(options=options, relation_oids=(ORDERS, 16_390, 2**32 - 1))
    assert isinstance(decoded, Truncate)
    assert (decoded.cascade, decoded.restart_identity) == (cascade, restart_identity)


def test_logical_message() -> None:
    decoded = decode(SAMPLES["message"])
    assert decoded == LogicalMessage(
        flags=1, lsn=0x1B009F8, prefix="medallion", content=b"pay\x00load"
    )
    assert isinstance(decoded, LogicalMessage) and decoded.transactional
    plain = decode(message(0, 5, "", b""))
    assert plain == LogicalMessage(0, 5, "", b"")
    assert isinstance(plain, LogicalMessage) and not plain.transactional


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = SAMPLES["insert"]
    assert decode(bytearray(data)) == decode(memoryview(data)) == decode(data)


def test_messages_are_immutable_values() -> None:
    decoded = decode(SAMPLES["update_old"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.relation_oid = 1  # type: ignore[misc]
    assert hash(decoded) == hash(decode(SAMPLES["update_old"]))
    assert decoded.TAG == "U" and Begin.TAG == "B" and LogicalMessage.TAG == "M"


def test_unchanged_toast_sentinel() -> None:
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"
    assert pickle.loads(pickle.dumps(UNCHANGED_TOAST)) is UNCHANGED_TOAST
    assert UNCHANGED_TOAST not in (None, "", b"", "u")


# -- errors ----------------------------------------------------------------------------------


def test_empty_buffer() -> None:
    with pytest.raises(PgOutputError, match="empty"):
        decode(b"")


@pytest.mark.parametrize("type_byte", [b"S", b"E", b"c", b"A", b"P", b"w", b"k", b"\x00", b"\xff"])
def test_unknown_message_type_names_the_byte_and_offset(type_byte: bytes) -> None:
    with pytest.raises(PgOutputError, match=r"unknown pgoutput message type .* at offset 0") as err:
        decode(type_byte + b"\x00" * 20)
    assert repr(type_byte) in str(err.value)
    assert f"0x{type_byte[0]:02x}" in str(err.value)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_is_a_pgoutput_error(name: str) -> None:
    data = SAMPLES[name]
    assert encode(decode(data)) == data  # whole: fine
    for end in range(1, len(data)):
        with pytest.raises(PgOutputError):
            decode(data[:end])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_trailing_bytes_are_rejected(name: str) -> None:
    with pytest.raises(PgOutputError, match="trailing"):
        decode(SAMPLES[name] + b"\x00")


def test_truncated_value_names_the_offset() -> None:
    data = insert(ORDERS, "hello")
    with pytest.raises(PgOutputError, match=r"Insert message: TupleData truncated at offset 13"):
        decode(data[:-1])
    with pytest.raises(PgOutputError, match=r"Insert message truncated .*offset 9"):
        decode(data[:11])


def test_garbled_input() -> None:
    head = b"I" + struct.pack(">I", ORDERS) + b"N" + struct.pack(">H", 1)
    with pytest.raises(PgOutputError, match=r"unknown TupleData column kind b'x' at offset 8"):
        decode(head + b"x")
    with pytest.raises(PgOutputError, match="4294967295-byte value"):
        decode(head + b"t" + b"\xff\xff\xff\xff" + b"abc")
    with pytest.raises(PgOutputError, match="invalid UTF-8"):
        decode(head + b"t" + struct.pack(">I", 2) + b"\xc3\x28")
    with pytest.raises(PgOutputError, match=r"unexpected tuple tag b'K' at offset 5"):
        decode(b"I" + struct.pack(">I", ORDERS) + b"K" + tuple_data("1"))
    with pytest.raises(PgOutputError, match=r"unexpected tuple tag b'X' at offset 5"):
        decode(b"U" + struct.pack(">I", ORDERS) + b"X" + tuple_data("1"))
    with pytest.raises(PgOutputError, match=r"unexpected tuple tag b'K'"):
        decode(b"U" + struct.pack(">I", ORDERS) + b"K" + tuple_data("1") + b"K" + tuple_data("1"))
    with pytest.raises(PgOutputError, match=r"unexpected tuple tag b'N' at offset 5"):
        decode(b"D" + struct.pack(">I", ORDERS) + b"N" + tuple_data("1"))
    with pytest.raises(PgOutputError, match="unterminated string"):
        decode(b"Y" + struct.pack(">I", 1) + b"public")
    with pytest.raises(PgOutputError, match="relation oids need"):
        decode(b"T" + struct.pack(">IB", 1_000_000, 0) + b"\x00" * 8)
    with pytest.raises(PgOutputError, match="timestamp out of range"):
        decode(b"B" + struct.pack(">QqI", 1, 2**63 - 1, 1))


def test_random_corruption_raises_only_pgoutput_errors() -> None:
    """Flipped, dropped and inserted bytes in valid messages, and random noise: whatever
    comes out, it is a message or a PgOutputError, never IndexError/struct.error/…"""
    rng = random.Random(20240501)
    outcomes: Counter[str] = Counter()

    def attempt(data: bytes) -> str:
        try:
            decode(data)
        except PgOutputError:
            return "rejected"
        return "decoded"

    samples = list(SAMPLES.values())
    for _ in range(20_000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(data))
            action = rng.random()
            if action < 0.6:
                data[position] = rng.randrange(256)
            elif action < 0.8:
                del data[position]
            else:
                data.insert(position, rng.randrange(256))
        outcomes[attempt(bytes(data))] += 1
    for _ in range(5_000):
        outcomes[
            attempt(bytes([rng.choice(b"BCORYIUDTM")]) + rng.randbytes(rng.randrange(40)))
        ] += 1
    assert outcomes["decoded"] > 1_000 and outcomes["rejected"] > 10_000


# -- relation cache --------------------------------------------------------------------------


def test_relation_cache_names_values() -> None:
    cache = RelationCache()
    for data in (
        SAMPLES["begin"],
        relation(ORDERS, "sales", "orders", "d", [(1, "id", 23, -1), (0, "note", 25, -1)]),
        SAMPLES["type"],
    ):
        cache.apply(decode(data))
    assert ORDERS in cache and 1 not in cache
    assert cache.types[16_386] == Type(16_386, "public", "mood")
    assert cache.key_columns(ORDERS) == ["id"]

    change = decode(update(ORDERS, ("2", UNCHANGED_TOAST), ("1", None), kind=b"K"))
    assert isinstance(change, Update) and change.old is not None
    assert cache.row(ORDERS, change.new) == {"id": "2", "note": UNCHANGED_TOAST}
    assert cache.row(ORDERS, change.old) == {"id": "1", "note": None}
    assert cache.key(ORDERS, change.old) == {"id": "1"}

    # ALTER TABLE: a new Relation message replaces the old one.
    cache.apply(
        decode(
            relation(
                ORDERS,
                "sales",
                "orders",
                "f",
                [(1, "id", 23, -1), (1, "note", 25, -1), (1, "score", 23, -1)],
            )
        )
    )
    assert cache.key_columns(ORDERS) == ["id", "note", "score"]
    assert cache.row(ORDERS, ("3", "n", None)) == {"id": "3", "note": "n", "score": None}
    assert cache.relation(ORDERS).replica_identity == "f"


def test_relation_cache_errors() -> None:
    cache = RelationCache()
    with pytest.raises(PgOutputError, match="no Relation message seen for relation oid 99"):
        cache.row(99, ("1",))
    with pytest.raises(PgOutputError, match="oid 99"):
        cache.key_columns(99)
    cache.apply(decode(relation(99, "s", "t", "d", [(1, "id", 23, -1)])))
    with pytest.raises(PgOutputError, match=r"s\.t \(oid 99\) has 1 columns .* 2 values"):
        cache.row(99, ("1", "2"))


# -- LSNs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("0/0", 0),
        ("0/1", 1),
        ("0/1AFD768", 0x1AFD768),
        ("16/B374D848", 0x16_B374D848),
        ("1/0", 1 << 32),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
    ],
)
def test_lsn_round_trip(text: str, number: int) -> None:
    assert lsn_to_int(text) == number
    assert int_to_lsn(number) == text


def test_lsn_parsing_is_lenient_like_pg_lsn() -> None:
    assert lsn_to_int("16/b374d848") == lsn_to_int("16/B374D848")
    assert lsn_to_int("00000016/0000000A") == 0x16_0000000A
    assert lsn_to_int("0/A") < lsn_to_int("0/10")  # compare numbers, not text
    assert int_to_lsn(0x16_0000000A) == "16/A"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "0/",
        "/0",
        "0//0",
        "123456789/0",
        "0/123456789",
        "G/0",
        "+1/0",
        " 0/0",
        "0/0 ",
        "0x1/0",
        "1_0/0",
    ],
)
def test_bad_lsn_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL LSN"):
        lsn_to_int(text)


@pytest.mark.parametrize("number", [-1, 2**64])
def test_bad_lsn_number(number: int) -> None:
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        int_to_lsn(number)


# -- a real PostgreSQL -----------------------------------------------------------------------

PEEK = (
    "SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes("
    "%s, NULL, NULL, 'proto_version', '1', 'publication_names', 'pub', 'messages', 'true'"
    "{options})"
)


@pytest.fixture
def cdc_db(
    postgres: PostgresServer, request: pytest.FixtureRequest
) -> Iterator[psycopg.Connection[Any]]:
    """A fresh database with a publication ``pub`` and a pgoutput slot named after the test;
    the slot is dropped afterwards (it would hold WAL on the session's server)."""
    name = f"cdc_{request.node.name.removeprefix('test_')}"[:60]
    with postgres.connect(dbname=fresh_database(postgres, name)) as conn:
        try:
            yield conn
        finally:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (name,),
            )


def create_slot(conn: psycopg.Connection[Any]) -> str:
    name = conn.info.dbname
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    return name


def peek(
    conn: psycopg.Connection[Any], slot: str, options: str = ""
) -> list[tuple[str, int, Message]]:
    rows = conn.execute(PEEK.format(options=options), (slot,)).fetchall()
    decoded = [(lsn, int(xid), decode(data)) for lsn, xid, data in rows]
    assert [encode(message) for _, _, message in decoded] == [data for _, _, data in rows]
    return decoded


def transactions(
    rows: list[tuple[str, int, Message]],
) -> list[tuple[Begin, Commit, list[Message]] | LogicalMessage]:
    """Group the peeked rows by transaction, checking what holds for every one of them: the
    ``xid`` column of every row is the Begin's xid, Begin and Commit agree, LSNs never go back,
    and the server's LSN text round-trips through our helpers."""
    grouped: list[tuple[Begin, Commit, list[Message]] | LogicalMessage] = []
    current: tuple[Begin, list[tuple[str, Message]]] | None = None
    begin_lsn = ""
    last = 0
    for lsn, xid, decoded in rows:
        assert int_to_lsn(lsn_to_int(lsn)) == lsn
        assert lsn_to_int(lsn) >= last
        last = lsn_to_int(lsn)
        if isinstance(decoded, Begin):
            assert current is None, "Begin inside a transaction"
            assert xid == decoded.xid
            current, begin_lsn = (decoded, []), lsn
        elif isinstance(decoded, Commit):
            assert current is not None, "Commit outside a transaction"
            opened, changes = current
            assert xid == opened.xid
            assert decoded.commit_lsn == opened.final_lsn
            assert decoded.commit_time == opened.commit_time
            assert decoded.flags == 0
            assert decoded.end_lsn > decoded.commit_lsn
            # The SQL interface's lsn column: the commit row carries the end of the commit
            # record (where a consumer resumes), the Begin row the LSN of the first change.
            assert lsn_to_int(lsn) == decoded.end_lsn
            assert begin_lsn == changes[0][0]
            assert all(lsn_to_int(at) <= opened.final_lsn for at, _ in changes)
            grouped.append((opened, decoded, [change for _, change in changes]))
            current = None
        elif current is None:
            assert isinstance(decoded, LogicalMessage) and not decoded.transactional
            assert xid == 0
            assert lsn_to_int(lsn) == decoded.lsn
            grouped.append(decoded)
        else:
            assert xid == current[0].xid
            current[1].append((lsn, decoded))
    assert current is None, "the last transaction has no Commit"
    return grouped


def test_pgoutput_from_a_real_postgres(cdc_db: psycopg.Connection[Any]) -> None:
    conn = cdc_db
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    conn.execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, name text, note text, balance numeric(10, 2))"
    )
    conn.execute("ALTER TABLE accounts REPLICA IDENTITY FULL")
    conn.execute("CREATE TABLE documents (id int PRIMARY KEY, title text, body text, mood mood)")
    # Stored out of line and uncompressed: any body over ~2 kB is TOASTed, whatever its content.
    conn.execute("ALTER TABLE documents ALTER COLUMN body SET STORAGE EXTERNAL")
    conn.execute("CREATE PUBLICATION pub FOR TABLE accounts, documents")
    slot = create_slot(conn)
    accounts, documents, mood = conn.execute(
        "SELECT 'accounts'::regclass::oid, 'documents'::regclass::oid, 'mood'::regtype::oid"
    ).fetchone()  # type: ignore[misc]
    body = "Grüße aus Köln. " * 1_000  # 17 kB of UTF-8

    started = datetime.now(UTC)
    with conn.transaction():
        conn.execute(
            "INSERT INTO accounts VALUES (1, 'Zoë Ångström', NULL, 10.5), (2, '', 'x', NULL)"
        )
        conn.execute("INSERT INTO documents VALUES (1, 'draft', %s, 'sad')", (body,))
    conn.execute("UPDATE accounts SET name = 'Zoé' WHERE id = 1")
    conn.execute("UPDATE documents SET title = 'final', mood = 'happy' WHERE id = 1")
    conn.execute("UPDATE documents SET id = 2 WHERE id = 1")
    conn.execute("UPDATE accounts SET id = 3 WHERE id = 2")
    conn.execute("SELECT pg_logical_emit_message(false, 'medallion', 'outside')")
    conn.execute("DELETE FROM documents WHERE id = 2")
    with conn.transaction():
        conn.execute("DELETE FROM accounts WHERE id = 3")
        conn.execute("SELECT pg_logical_emit_message(true, 'medallion', 'inside')")
    conn.execute("TRUNCATE documents, accounts RESTART IDENTITY CASCADE")
    conn.execute("ALTER TABLE accounts ADD COLUMN score int")
    conn.execute("INSERT INTO accounts VALUES (4, 'd', NULL, 0, 42)")

    rows = peek(conn, slot)
    grouped = transactions(rows)

    accounts_v1 = Relation(
        accounts,
        "public",
        "accounts",
        "f",
        (
            Column(1, "id", 23, -1),
            Column(1, "name", 25, -1),
            Column(1, "note", 25, -1),
            Column(1, "balance", 1700, (10 << 16 | 2) + 4),
        ),
    )
    accounts_v2 = dataclasses.replace(
        accounts_v1, columns=(*accounts_v1.columns, Column(1, "score", 23, -1))
    )
    documents_v1 = Relation(
        documents,
        "public",
        "documents",
        "d",
        (
            Column(1, "id", 23, -1),
            Column(0, "title", 25, -1),
            Column(0, "body", 25, -1),
            Column(0, "mood", mood, -1),
        ),
    )
    U = UNCHANGED_TOAST
    expected: list[list[Message] | LogicalMessage] = [
        [
            accounts_v1,
            Insert(accounts, ("1", "Zoë Ångström", None, "10.50")),
            Insert(accounts, ("2", "", "x", None)),
            Type(mood, "public", "mood"),
            documents_v1,
            Insert(documents, ("1", "draft", body, "sad")),
        ],
        [Update(accounts, "O", ("1", "Zoë Ångström", None, "10.50"), ("1", "Zoé", None, "10.50"))],
        # The body was not changed: not sent ('u'), and no old tuple (the key did not change).
        [Update(documents, None, None, ("1", "final", U, "happy"))],
        # The key changed: the old key ('K', other columns NULL), the body still unchanged.
        [Update(documents, "K", ("1", None, None, None), ("2", "final", U, "happy"))],
        [Update(accounts, "O", ("2", "", "x", None), ("3", "", "x", None))],
        LogicalMessage(0, 0, "medallion", b"outside"),  # lsn checked below
        [Delete(documents, "K", ("2", None, None, None))],
        [
            Delete(accounts, "O", ("3", "", "x", None)),
            LogicalMessage(1, 0, "medallion", b"inside"),
        ],
        # TRUNCATE gives the tables new files: their Relation messages (and the Type before
        # documents') are sent again.
        [
            Type(mood, "public", "mood"),
            documents_v1,
            accounts_v1,
            Truncate(3, (documents, accounts)),
        ],
        # ALTER TABLE ... ADD COLUMN: a new Relation before the next change (the ALTER's own
        # transaction has no published change and is skipped).
        [accounts_v2, Insert(accounts, ("4", "d", None, "0.00", "42"))],
    ]

    def without_message_lsn(item: Any) -> Any:
        if isinstance(item, LogicalMessage):
            return dataclasses.replace(item, lsn=0)
        if isinstance(item, tuple):
            return [without_message_lsn(change) for change in item[2]]
        return item

    assert [without_message_lsn(item) for item in grouped] == expected

    # Transactions: distinct, increasing xids; commit times now, in UTC, in order.
    txns = [item for item in grouped if isinstance(item, tuple)]
    xids = [opened.xid for opened, _, _ in txns]
    assert xids == sorted(set(xids))
    times = [closed.commit_time for _, closed, _ in txns]
    assert times == sorted(times)
    assert started - timedelta(seconds=5) <= times[0] <= times[-1] <= datetime.now(UTC)
    assert all(moment.tzinfo is UTC for moment in times)
    # A message's LSN is the *end* of its WAL record (decode.c queues it at ``endptr``): here
    # the commit record follows it directly, so it equals the commit's LSN.
    inside = txns[6][2][1]
    assert isinstance(inside, LogicalMessage)
    assert txns[5][1].end_lsn < inside.lsn <= txns[6][0].final_lsn

    # The cache turns the changes into rows, following the ALTER TABLE.
    cache = RelationCache()
    named: list[dict[str, Value]] = []
    for _, _, decoded in rows:
        cache.apply(decoded)
        if isinstance(decoded, Insert | Update):
            named.append(cache.row(decoded.relation_oid, decoded.new))
    assert named[-1] == {"id": "4", "name": "d", "note": None, "balance": "0.00", "score": "42"}
    assert named[4] == {"id": "1", "title": "final", "body": U, "mood": "happy"}
    assert cache.key_columns(documents) == ["id"]
    assert cache.key_columns(accounts) == ["id", "name", "note", "balance", "score"]

    # Peeking does not consume: the same bytes again.
    assert peek(conn, slot) == rows


def test_origin_binary_and_full_identity_toast(cdc_db: psycopg.Connection[Any]) -> None:
    """A replayed transaction (replication origin) and the binary tuple format; and under
    REPLICA IDENTITY FULL an unchanged TOAST value is 'u' in the new tuple but whole in the
    old one."""
    conn = cdc_db
    conn.execute(
        "CREATE TABLE blobs (id int PRIMARY KEY, doc text, raw bytea, amount numeric(10, 2))"
    )
    conn.execute("ALTER TABLE blobs REPLICA IDENTITY FULL")
    conn.execute("ALTER TABLE blobs ALTER COLUMN doc SET STORAGE EXTERNAL")
    conn.execute("CREATE PUBLICATION pub FOR TABLE blobs")
    slot = create_slot(conn)
    (blobs,) = conn.execute("SELECT 'blobs'::regclass::oid").fetchone()  # type: ignore[misc]
    doc = "ab" * 5_000
    origin_name = f"{slot}_upstream"
    replayed_at = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

    conn.execute("INSERT INTO blobs VALUES (1, %s, '\\x00ff', 1.5)", (doc,))
    conn.execute("UPDATE blobs SET amount = 2 WHERE id = 1")
    conn.execute("SELECT pg_replication_origin_create(%s)", (origin_name,))
    try:
        conn.execute("SELECT pg_replication_origin_session_setup(%s)", (origin_name,))
        with conn.transaction():
            conn.execute("SELECT pg_replication_origin_xact_setup('1A/ABCDEF', %s)", (replayed_at,))
            conn.execute("INSERT INTO blobs VALUES (2, 'o', NULL, NULL)")
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_replication_origin_session_reset()")
        conn.execute("SELECT pg_replication_origin_drop(%s)", (origin_name,))
    text_rows = transactions(peek(conn, slot))
    binary_rows = transactions(peek(conn, slot, ", 'binary', 'true'"))

    relation_v1 = Relation(
        blobs,
        "public",
        "blobs",
        "f",
        (
            Column(1, "id", 23, -1),
            Column(1, "doc", 25, -1),
            Column(1, "raw", 17, -1),
            Column(1, "amount", 1700, 655366),
        ),
    )
    assert [item[2] for item in text_rows] == [  # type: ignore[index]
        [relation_v1, Insert(blobs, ("1", doc, "\\x00ff", "1.50"))],
        [
            Update(
                blobs, "O", ("1", doc, "\\x00ff", "1.50"), ("1", UNCHANGED_TOAST, "\\x00ff", "2.00")
            )
        ],
        [Origin(lsn_to_int("1A/ABCDEF"), origin_name), Insert(blobs, ("2", "o", None, None))],
    ]
    replayed = text_rows[2]
    assert isinstance(replayed, tuple)
    assert replayed[0].commit_time == replayed_at  # the origin's commit time, not ours

    # binary: the types' send functions (int4 big-endian, bytea raw, numeric's wire format).
    one, two = struct.pack(">i", 1), struct.pack(">i", 2)
    # numeric: ndigits, weight, sign, dscale, then base-10000 digits: 1.50 = [1, 5000]
    one_fifty = struct.pack(">hhHhhh", 2, 0, 0, 2, 1, 5000)
    two_00 = struct.pack(">hhHhh", 1, 0, 0, 2, 2)
    assert [item[2] for item in binary_rows] == [  # type: ignore[index]
        [relation_v1, Insert(blobs, (one, doc.encode(), b"\x00\xff", one_fifty))],
        [
            Update(
                blobs,
                "O",
                (one, doc.encode(), b"\x00\xff", one_fifty),
                (one, UNCHANGED_TOAST, b"\x00\xff", two_00),
            )
        ],
        [Origin(lsn_to_int("1A/ABCDEF"), origin_name), Insert(blobs, (two, b"o", None, None))],
    ]
