"""The capture's columnar path against its per-message reference.

Changes are decoded a batch at a time into Arrow columns (``decode_changes``) and JSON is
built by Arrow's string kernels (``json_objects``); the per-message path (``decode`` and
``change_rows``, ``json.dumps``) is what the capture did before and stays the reference: for
any messages, both must give the same bronze rows, byte for byte, and the same error.
Against a real PostgreSQL: values that CSV and pgoutput's text format spell differently
(NULL and the empty string, quotes, line breaks, a literal ``\\N``) land as PostgreSQL prints
them, in the snapshot and in the changes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from medallion_platform.connectors.cdc.columnar import MessageBatch, json_objects
from medallion_platform.connectors.cdc.ingest import (
    ROW_FIELDS,
    change_rows,
    decode_changes,
    ingest_cdc,
)
from medallion_platform.connectors.cdc.pgoutput import (
    UNCHANGED_TOAST,
    PgOutputError,
    RelationCache,
    decode,
)
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.cdc_db import Db, cdc_database
from medallion_platform_tests.connectors.cdc.test_pgoutput import (
    delete,
    insert,
    relation,
    tuple_data,
    update,
)

ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
PIECES = ["", "a", "é", "東京", "🚀", '"', "\\", "\n", "\r", "\t", "\b", "\f", "\x00", "\x01"]
PIECES += ["\x1f", "\x7f", "\u2028", "/", ",", "\\N", " ", "null"]


def text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 6)))


# -- JSON from Arrow columns -----------------------------------------------------------------


@pytest.mark.parametrize("null_share", [0.0, 0.3, 1.0])
def test_json_objects_write_what_json_dumps_writes(null_share: float) -> None:
    rng = random.Random(7)
    names = ["id", 'say "hi"', "ünï", "back\\slash", "tab\there"]
    rows = [[None if rng.random() < null_share else text(rng) for _ in names] for _ in range(3_000)]
    columns = [pa.array([r[j] for r in rows], pa.large_string()) for j in range(len(names))]
    got = json_objects(names, columns, len(rows)).to_pylist()
    assert got == [ENCODER.encode(dict(zip(names, r, strict=True))) for r in rows]


def test_json_objects_of_no_column_and_of_sliced_columns() -> None:
    assert json_objects([], [], 2).to_pylist() == ["{}", "{}"]
    column = pa.array(['a"', "b", None, "c\n"], pa.large_string()).slice(1, 2)
    assert json_objects(["k"], [column], 2).to_pylist() == ['{"k":"b"}', '{"k":null}']


# -- row changes: columns against the per-message path ---------------------------------------

ACCOUNTS, NOTES, LINES = 16_400, 16_401, 16_402
RELATIONS = [
    # REPLICA IDENTITY FULL, keyed by its primary key
    relation(ACCOUNTS, "public", "accounts", "f", [(1, c, 25, -1) for c in ("id", "name", "doc")]),
    # FULL without a key: keyed by the whole row
    relation(NOTES, "public", "notes", "f", [(1, "author", 25, -1), (1, "body", 25, -1)]),
    # DEFAULT identity, a two-column key declared in another order than the table's
    relation(LINES, "public", "lines", "d",
             [(1, "order_id", 25, -1), (1, "line_no", 23, -1), (0, "sku", 25, -1),
              (0, "note", 25, -1)]),
]  # fmt: skip
KEYS: dict[str, list[str] | None] = {
    "public.accounts": ["id"],
    "public.notes": None,
    "public.lines": ["line_no", "order_id"],
}
WIDTH = {ACCOUNTS: 3, NOTES: 2, LINES: 4}


def relations() -> RelationCache:
    cache = RelationCache()
    for data in RELATIONS:
        cache.apply(decode(data))
    return cache


FULL = {ACCOUNTS, NOTES}  # REPLICA IDENTITY FULL: updates and deletes carry the whole old row


def random_change(rng: random.Random) -> bytes:
    """An insert, update or delete shaped as pgoutput sends them: the whole old row under
    REPLICA IDENTITY FULL (and unchanged TOAST values in the new one, filled from it), else
    the old key when the key changed; unchanged TOAST values with no old row; NULLs."""
    oid = rng.choice([ACCOUNTS, NOTES, LINES])
    width = WIDTH[oid]
    keyed = 2 if oid == LINES else 1

    def row(toast: float = 0.0) -> list[Any]:
        values: list[Any] = [None if rng.random() < 0.15 else text(rng) for _ in range(width)]
        values[0] = rng.choice(["1", "2", "x"])  # keys collide often: key changes happen
        return [
            UNCHANGED_TOAST if j >= keyed and rng.random() < toast else v
            for j, v in enumerate(values)
        ]

    def key_only(values: list[Any]) -> list[Any]:
        return [v if j < keyed else None for j, v in enumerate(values)]

    kind = rng.random()
    if kind < 0.35:
        return insert(oid, *row())
    if kind < 0.55:
        old = row()
        return delete(oid, b"O", *old) if oid in FULL else delete(oid, b"K", *key_only(old))
    new = row(toast=0.2)
    if oid in FULL:
        return update(oid, tuple(new), tuple(row()), kind=b"O")
    if rng.random() < 0.5:
        return update(oid, tuple(new))
    return update(oid, tuple(new), tuple(key_only(row())), kind=b"K")


def by_columns(messages: list[bytes]) -> list[tuple[Any, ...]]:
    batch = MessageBatch(list(range(len(messages))), messages)
    index = np.arange(len(messages))
    found = decode_changes(batch, index, relations(), KEYS)
    rows = []
    for table, pieces in found.items():
        for piece in pieces:
            for r in piece.to_pylist():
                rows.append((r["msg"], r["sub"], table, *(r[f] for f in ROW_FIELDS)))
    return sorted(rows, key=lambda r: (r[0], r[1]))


def by_message(messages: list[bytes]) -> list[tuple[Any, ...]]:
    cache = relations()
    rows = []
    for m, data in enumerate(messages):
        for sub, (table, fields) in enumerate(change_rows(decode(data), cache, KEYS)):
            rows.append((m, sub, table, *(fields.get(f) for f in ROW_FIELDS)))
    return rows


def outcome(function: Any, messages: list[bytes]) -> Any:
    try:
        return function(messages)
    except (PgOutputError, TypeError) as exc:
        return type(exc), str(exc)


def test_a_batch_of_changes_gives_the_rows_of_the_per_message_path() -> None:
    rng = random.Random(20261204)
    for _ in range(60):
        messages = [random_change(rng) for _ in range(rng.randrange(1, 400))]
        want = by_message(messages)
        assert by_columns(messages) == want
    # and what the cases were: every op, key changes, unchanged TOAST left as such
    ops = {(r[2], r[3]) for r in want}
    assert {op for _, op in ops} == {"c", "u", "d"}
    assert any(r[7] for r in want), "no unchanged TOAST value left unfilled"


def test_an_unchanged_toast_value_is_filled_from_the_old_row_or_named() -> None:
    new = ("1", "renamed", UNCHANGED_TOAST)
    filled = update(ACCOUNTS, new, ("1", "old", "a long document"), kind=b"O")
    named = update(ACCOUNTS, new)  # no old row: the value was not sent
    rows = by_columns([filled, named])
    assert rows == by_message([filled, named])
    assert json.loads(rows[0][6])["doc"] == "a long document" and rows[0][7] is None
    assert "doc" not in json.loads(rows[1][6]) and rows[1][7] == "doc"


def test_a_key_change_is_a_delete_then_a_create() -> None:
    moved = update(LINES, ("o1", "2", "s", None), ("o1", "1", None, None), kind=b"K")
    rows = by_columns([moved])
    assert rows == by_message([moved])
    assert [(r[1], r[3], json.loads(r[4])) for r in rows] == [
        (0, "d", {"line_no": "1", "order_id": "o1"}),
        (1, "c", {"line_no": "2", "order_id": "o1"}),
    ]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        # a value that is not UTF-8
        (b"I" + (ACCOUNTS).to_bytes(4, "big") + b"N" + tuple_data("1", "x", "y")[:-1] + b"\xff",
         "invalid UTF-8"),
        # cut short inside a value
        (insert(ACCOUNTS, "1", "name", "a document")[:-3], "truncated"),
        # bytes left over
        (insert(ACCOUNTS, "1", "n", "d") + b"\x00", "trailing bytes"),
        # a tuple narrower than the relation
        (insert(ACCOUNTS, "1", "n"), "has 3 columns in its Relation message"),
        # a relation never announced
        (insert(99_999, "1"), "no Relation message seen"),
        # an unknown column kind
        (b"I" + (ACCOUNTS).to_bytes(4, "big") + b"N\x00\x01x", "column kind b'x'"),
        # six bytes: no room for a tuple
        (b"D" + (ACCOUNTS).to_bytes(4, "big") + b"K", "truncated"),
    ],
)  # fmt: skip
def test_a_malformed_change_raises_what_the_decoder_raises(message: bytes, error: str) -> None:
    good = [insert(ACCOUNTS, "1", "a", "b")] * 3
    messages = [*good, message, *good]
    got = outcome(by_columns, messages)
    assert got == outcome(by_message, messages)
    assert got[0] is PgOutputError and error in got[1]


def test_a_binary_value_fails_as_the_per_message_path_fails() -> None:
    """The capture never asks for the binary format; a binary value is not JSON text."""
    binary = b"I" + (NOTES).to_bytes(4, "big") + b"N" + tuple_data("ann", b"\x00\x01")
    got = outcome(by_columns, [binary])
    assert got == outcome(by_message, [binary]) and got[0] is TypeError


# -- a real PostgreSQL: values CSV and pgoutput spell differently ----------------------------

TRICKY = ["", None, 'say "hi", then go', "two\nlines\r\n", "\\N", "tab\there", "ünï 🚀", " "]


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[Db]:
    with cdc_database(postgres, "cdc_columnar_values") as database:
        yield database


def test_snapshot_and_changes_keep_postgresql_text_exactly(db: Db, warehouse: Warehouse) -> None:
    """The snapshot comes as CSV (COPY), changes as pgoutput text: NULL must stay NULL and an
    empty string empty, quotes, commas, line breaks and a literal backslash-N as they are."""
    rows = [(f"cus_{i:06d}", f"c{i}@example.com", value) for i, value in enumerate(TRICKY)]
    with db.connect() as conn, conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO customers (customer_id, email, segment) VALUES (%s, %s, %s)", rows
        )
    ingest_cdc(warehouse, db.source())
    with db.connect() as conn, conn.transaction():
        conn.cursor().executemany(
            "UPDATE customers SET email = %s WHERE customer_id = %s",
            [(f"{value or 'x'}@example.com", cid) for cid, _, value in rows],
        )
    ingest_cdc(warehouse, db.source())
    with warehouse.connect() as conn:
        logged = conn.execute(
            f"SELECT op, after FROM bronze.{db.name}_customers ORDER BY commit_lsn, seq"
        ).fetchall()
    assert [op for op, _ in logged] == ["r"] * len(rows) + ["u"] * len(rows)
    with db.connect() as conn:
        text = conn.execute(
            "SELECT customer_id, email, segment, updated_at::text FROM customers "
            "ORDER BY customer_id"
        ).fetchall()
    names = ["customer_id", "email", "segment", "updated_at"]
    changes = [after for op, after in logged if op == "u"]
    assert changes == [ENCODER.encode(dict(zip(names, r, strict=True))) for r in text]
    snapshot = [json.loads(after) for op, after in logged if op == "r"]
    assert [s["segment"] for s in snapshot] == TRICKY
