"""The demo app database against a real PostgreSQL (no mocks): CDC and silver are tested against
it, so its promises are checked here, down to what logical decoding (``pgoutput``) emits."""

from __future__ import annotations

import csv
import re
import struct
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.devkit.demo import app_db
from medallion_platform.devkit.demo.generator import generate_landing_files
from medallion_platform_tests.conftest import fresh_database

CUSTOMERS = 200
ORDERS = 600
SLOT = "appdb_test_slot"  # slots are cluster-wide: a name no other test uses


def _seeded(postgres: PostgresServer, name: str, *, seed: int = 7) -> psycopg.Connection[Any]:
    conn = postgres.connect(dbname=fresh_database(postgres, name))
    app_db.seed(conn, customers=CUSTOMERS, orders=ORDERS, seed=seed)
    return conn


@pytest.fixture(scope="module")
def catalog_skus(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The SKUs of the products catalog the file generator writes (scale 0.25: 500 SKUs)."""
    landing = tmp_path_factory.mktemp("landing")
    generate_landing_files(landing, scale=0.25, days=1)
    (full,) = (landing / "products").glob("catalog_full_*.csv")
    with full.open(encoding="utf-8", newline="") as handle:
        return {row["sku"] for row in csv.DictReader(handle)}


def _count(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {t: _count(conn, f"SELECT count(*) FROM public.{t}") for t in app_db.TABLES}


def _newest(snap: dict[str, list[dict[str, Any]]]) -> datetime:
    """The newest timestamp in a snapshot: where the workload's clock resumes."""
    columns = ("created_at", "placed_at", "updated_at")
    return max(row[c] for rows in snap.values() for row in rows for c in columns if c in row)


def _assert_consistent(snap: dict[str, list[dict[str, Any]]]) -> None:
    """Referential integrity, totals and statuses: what every state of the database keeps."""
    customers = {row["customer_id"]: row for row in snap["customers"]}
    lines: dict[str, list[dict[str, Any]]] = {}
    for item in snap["order_items"]:
        lines.setdefault(item["order_id"], []).append(item)
    assert set(lines) <= {order["order_id"] for order in snap["orders"]}
    for order in snap["orders"]:
        assert order["customer_id"] in customers
        assert order["status"] in app_db.STATUSES
        assert order["currency"] in ("USD", "EUR")
        assert order["updated_at"] >= order["placed_at"]
        items = lines[order["order_id"]]  # every order has at least one line
        assert 1 <= len(items) <= 5
        assert all(item["line_no"] >= 1 for item in items)  # gaps once a line is removed
        assert order["order_total"] == sum(i["quantity"] * i["unit_price"] for i in items)
    for customer in snap["customers"]:
        assert customer["updated_at"] >= customer["created_at"]
        assert customer["segment"] in app_db.SEGMENTS
    emails = [customer["email"] for customer in snap["customers"]]
    assert len(set(emails)) == len(emails)


# --------------------------------------------------------------------------------------------
# Schema and seed
# --------------------------------------------------------------------------------------------


def test_schema_is_idempotent_with_full_replica_identity(postgres: PostgresServer) -> None:
    with postgres.connect(dbname=fresh_database(postgres, "appdb_schema")) as conn:
        app_db.create_schema(conn)
        app_db.create_schema(conn)
        identities = dict(
            conn.execute(
                "SELECT relname, relreplident FROM pg_class"
                " WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1"
            ).fetchall()
        )
        assert identities == {"customers": "f", "orders": "f", "order_items": "d"}
        keys = conn.execute(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace AND contype IN ('p', 'f')"
            " ORDER BY 1, 2"
        ).fetchall()
        assert keys == [
            ("customers", "PRIMARY KEY (customer_id)"),
            ("order_items", "FOREIGN KEY (order_id) REFERENCES orders(order_id) ON DELETE CASCADE"),
            ("order_items", "PRIMARY KEY (order_id, line_no)"),
            ("orders", "FOREIGN KEY (customer_id) REFERENCES customers(customer_id)"),
            ("orders", "PRIMARY KEY (order_id)"),
        ]
        types = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name IN"
            " ('marketing_opt_in', 'order_total', 'unit_price', 'placed_at', 'first_name')"
            " ORDER BY 1, 2"
        ).fetchall()
        assert types == [
            ("customers", "first_name", "text", "YES"),
            ("customers", "marketing_opt_in", "boolean", "NO"),
            ("order_items", "unit_price", "numeric", "NO"),
            ("orders", "order_total", "numeric", "NO"),
            ("orders", "placed_at", "timestamp with time zone", "NO"),
        ]
        assert _counts(conn) == {"customers": 0, "orders": 0, "order_items": 0}


def test_seed_is_deterministic_and_realistic(
    postgres: PostgresServer, catalog_skus: set[str]
) -> None:
    with (
        _seeded(postgres, "appdb_seed_a") as a,
        _seeded(postgres, "appdb_seed_b") as b,
        _seeded(postgres, "appdb_seed_c", seed=8) as c,
    ):
        snap = app_db.snapshot(a)
        assert snap == app_db.snapshot(b)
        assert snap != app_db.snapshot(c)

    customers, orders, items = snap["customers"], snap["orders"], snap["order_items"]
    assert [row["customer_id"] for row in customers] == [
        f"cus_{n:06d}" for n in range(1, CUSTOMERS + 1)
    ]
    assert [row["order_id"] for row in orders] == [f"ord_{n:07d}" for n in range(1, ORDERS + 1)]
    assert {item["sku"] for item in items} <= catalog_skus
    assert all(re.fullmatch(r"SKU-\d{6}", item["sku"]) for item in items)
    _assert_consistent(snap)

    start, end = app_db.DEFAULT_START, datetime(2025, 10, 31, tzinfo=UTC)
    created = {row["customer_id"]: row["created_at"] for row in customers}
    placed = [order["placed_at"] for order in orders]
    assert placed == sorted(placed)  # ord_0000001 was placed first, as in the payments API
    assert all(start <= at < end for at in placed)
    assert all(order["updated_at"] < end for order in orders)
    assert all(created[order["customer_id"]] <= order["placed_at"] for order in orders)
    assert all(row["updated_at"] <= end for row in customers)

    statuses = Counter(order["status"] for order in orders)
    assert set(statuses) <= set(app_db.STATUSES)
    assert statuses["delivered"] > ORDERS / 2  # most orders of a month are delivered by its end
    assert statuses["cancelled"] > 0 and statuses["returned"] > 0
    currencies = Counter(order["currency"] for order in orders)
    assert currencies["USD"] > currencies["EUR"] > 0
    assert {row["segment"] for row in customers} == set(app_db.SEGMENTS)
    assert 1 <= sum(row["marketing_opt_in"] for row in customers) < CUSTOMERS
    sizes = Counter(Counter(item["order_id"] for item in items).values())
    assert set(sizes) == {1, 2, 3, 4, 5}
    # A SKU has one list price (sales take 20% off it), whatever the order.
    prices: dict[str, set[Decimal]] = {}
    for item in items:
        prices.setdefault(item["sku"], set()).add(item["unit_price"])
    assert all(len(p) <= 2 for p in prices.values())


def test_seed_at_demo_scale_is_fast_and_refuses_a_seeded_database(
    postgres: PostgresServer,
) -> None:
    with postgres.connect(dbname=fresh_database(postgres, "appdb_seed_scale")) as conn:
        began = time.perf_counter()
        summary = app_db.seed(conn, customers=2_000, orders=6_000)
        elapsed = time.perf_counter() - began
        assert elapsed < 5.0
        assert (summary.customers, summary.orders) == (2_000, 6_000)
        assert _counts(conn) == {
            "customers": 2_000,
            "orders": 6_000,
            "order_items": summary.order_items,
        }
        assert 6_000 < summary.order_items < 5 * 6_000
        with pytest.raises(ValueError, match="empty tables"):
            app_db.seed(conn, customers=1, orders=0)
        with conn.transaction(), pytest.raises(ValueError, match="outside any transaction"):
            app_db.apply_workload(conn, transactions=1)
        with pytest.raises(ValueError, match=">= 2"):
            app_db.bulk_update(conn, rows=1)


# --------------------------------------------------------------------------------------------
# Workload, as logical decoding sees it
# --------------------------------------------------------------------------------------------


def _tuple(data: bytes, pos: int) -> tuple[list[str | None], int]:
    """pgoutput TupleData: Int16 column count, then per column 'n' (null), 'u' (unchanged
    TOAST) or 't' + Int32 length + text."""
    (columns,) = struct.unpack_from(">h", data, pos)
    pos += 2
    values: list[str | None] = []
    for _ in range(columns):
        kind = data[pos : pos + 1]
        pos += 1
        if kind == b"t":
            (length,) = struct.unpack_from(">i", data, pos)
            values.append(data[pos + 4 : pos + 4 + length].decode())
            pos += 4 + length
        else:
            values.append(None)
    return values, pos


def _decode(
    messages: list[bytes], relations: dict[int, str]
) -> list[list[tuple[str, str, tuple[str | None, ...], bool]]]:
    """Transactions of ``(op, table, key, has_old_image)`` from pgoutput protocol-1 messages."""
    transactions: list[list[tuple[str, str, tuple[str | None, ...], bool]]] = []
    for data in messages:
        op = chr(data[0])
        if op == "B":
            transactions.append([])
        if op not in "IUD":
            continue
        (oid,) = struct.unpack_from(">I", data, 1)
        table = relations[oid]
        pos, old = 5, False
        if data[pos : pos + 1] in (b"K", b"O"):
            old = data[pos : pos + 1] == b"O"
            values, pos = _tuple(data, pos + 1)
        if op != "D":
            assert data[pos : pos + 1] == b"N"
            values, pos = _tuple(data, pos + 1)
        key = tuple(values[: len(app_db.KEYS[table])])
        transactions[-1].append((op, table, key, old))
    return transactions


@pytest.fixture
def slot_conn(postgres: PostgresServer) -> Iterator[psycopg.Connection[Any]]:
    """A seeded database with a publication of the three tables and a pgoutput slot made before
    anything else happens in it; the slot is dropped afterwards (slots hold WAL)."""
    conn = _seeded(postgres, "appdb_workload")
    conn.execute("CREATE PUBLICATION appdb_pub FOR TABLE customers, orders, order_items")
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
    try:
        yield conn
    finally:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))
        conn.close()


def test_workload_changes_every_table_and_pgoutput_sees_it(
    slot_conn: psycopg.Connection[Any],
) -> None:
    conn = slot_conn
    before = _counts(conn)
    seeded = app_db.snapshot(conn)
    summary = app_db.apply_workload(conn, transactions=600, seed=1)
    after = _counts(conn)

    assert summary.transactions == 600
    for table in app_db.TABLES:
        changes: app_db.TableChanges = getattr(summary, table)
        assert changes.inserts > 0 and changes.updates > 0 and changes.deletes > 0, table
        assert after[table] == before[table] + changes.inserts - changes.deletes, table
    snap = app_db.snapshot(conn)
    _assert_consistent(snap)
    # The simulated clock resumed at the seed's newest timestamp; nothing is stamped after it.
    assert summary.clock_start == _newest(seeded) < datetime(2025, 10, 31, tzinfo=UTC)
    assert summary.clock_start < _newest(snap) <= summary.clock_end

    relations = {_count(conn, "SELECT %s::regclass::oid", f"public.{t}"): t for t in app_db.TABLES}
    messages = [
        bytes(row[0])
        for row in conn.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', 'appdb_pub')",
            (SLOT,),
        )
    ]
    transactions = _decode(messages, relations)
    assert len(transactions) == summary.transactions  # one commit each, none empty
    ops = Counter((op, table) for txn in transactions for op, table, _, _ in txn)
    for table in app_db.TABLES:
        changes = getattr(summary, table)
        assert ops["I", table] == changes.inserts, table
        assert ops["U", table] == changes.updates, table
        assert ops["D", table] == changes.deletes, table
    # Ids come from sequences: new ones continue the seed's, in order; a deleted id never returns.
    new_customers = [
        key[0] for txn in transactions for op, t, key, _ in txn if (op, t) == ("I", "customers")
    ]
    new_orders = [
        key[0] for txn in transactions for op, t, key, _ in txn if (op, t) == ("I", "orders")
    ]
    assert new_customers == [
        f"cus_{n:06d}" for n in range(CUSTOMERS + 1, CUSTOMERS + 1 + summary.customers.inserts)
    ]
    assert new_orders == [
        f"ord_{n:07d}" for n in range(ORDERS + 1, ORDERS + 1 + summary.orders.inserts)
    ]
    # Before-images for customers and orders (REPLICA IDENTITY FULL), keys only for items.
    for txn in transactions:
        for op, table, _, old in txn:
            if op in "UD":
                assert old == (table != "order_items"), (op, table)
    # Several tables in one transaction, and the same row updated twice in one transaction.
    assert any(len({table for _, table, _, _ in txn}) == 3 for txn in transactions)
    for table in app_db.TABLES:
        assert any(_updates_a_row_twice(txn, table) for txn in transactions), table


def _updates_a_row_twice(
    txn: list[tuple[str, str, tuple[str | None, ...], bool]], table: str
) -> bool:
    updates = Counter(key for op, t, key, _ in txn if op == "U" and t == table)
    return any(count >= 2 for count in updates.values())


def test_workload_is_deterministic_and_can_be_applied_again(postgres: PostgresServer) -> None:
    with (
        _seeded(postgres, "appdb_repeat_a") as a,
        _seeded(postgres, "appdb_repeat_b") as b,
        _seeded(postgres, "appdb_repeat_c") as c,
    ):
        first = app_db.apply_workload(a, transactions=300, seed=1)
        assert app_db.apply_workload(b, transactions=300, seed=1) == first
        assert app_db.apply_workload(c, transactions=300, seed=2) != first
        snap = app_db.snapshot(a)
        assert snap == app_db.snapshot(b)
        assert snap != app_db.snapshot(c)

        # Again, with another seed: it continues from the state (clock, ids, open orders).
        before = _counts(a)
        second = app_db.apply_workload(a, transactions=300, seed=2)
        assert second.clock_start == _newest(snap) <= first.clock_end
        assert second.clock_start > first.clock_start
        after = _counts(a)
        for table in app_db.TABLES:
            changes = getattr(second, table)
            assert after[table] == before[table] + changes.inserts - changes.deletes
        _assert_consistent(app_db.snapshot(a))
        assert app_db.apply_workload(b, transactions=300, seed=2) == second
        assert app_db.snapshot(a) == app_db.snapshot(b)


# --------------------------------------------------------------------------------------------
# Bulk
# --------------------------------------------------------------------------------------------


def test_bulk_update_is_one_transaction_of_the_promised_rows(postgres: PostgresServer) -> None:
    with _seeded(postgres, "appdb_bulk") as conn:
        rows = 12_347  # not a multiple of six: the last orders get fewer lines
        changed = app_db.bulk_update(conn, rows=rows)
        assert changed == rows
        new_orders = f"order_id > 'ord_{ORDERS:07d}'"
        found = _count(conn, f"SELECT count(*) FROM orders WHERE {new_orders}")
        found += _count(conn, f"SELECT count(*) FROM order_items WHERE {new_orders}")
        assert found == rows
        assert _count(conn, f"SELECT count(*) FROM orders WHERE {new_orders}") == -(-rows // 6)
        xmins = conn.execute(
            f"SELECT DISTINCT xmin::text FROM orders WHERE {new_orders}"
            f" UNION SELECT DISTINCT xmin::text FROM order_items WHERE {new_orders}"
        ).fetchall()
        assert len(xmins) == 1
        seeded_xmins = conn.execute(
            f"SELECT DISTINCT xmin::text FROM orders WHERE NOT ({new_orders})"
        ).fetchall()
        assert xmins[0] not in seeded_xmins
        snap = app_db.snapshot(conn)
        _assert_consistent(snap)
        assert {o["status"] for o in snap["orders"] if o["order_id"] > f"ord_{ORDERS:07d}"} == {
            "placed"
        }

        # The workload goes on after it: ids and the clock continue.
        summary = app_db.apply_workload(conn, transactions=50, seed=3)
        assert summary.clock_start > max(o["placed_at"] for o in snap["orders"][:ORDERS])
        _assert_consistent(app_db.snapshot(conn))
