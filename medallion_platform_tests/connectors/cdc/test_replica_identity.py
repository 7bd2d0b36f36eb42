"""Capture must never hurt the source application, against a real PostgreSQL.

A table in a publication that publishes updates and deletes needs a replica identity, or
PostgreSQL refuses the *application's* UPDATE and DELETE on it ("does not have a replica
identity and publishes deletes"). So a table without a usable one is refused, with the way
out, before the platform creates or alters anything on the source; and once the publication
and the slot exist, the application's INSERT, UPDATE, DELETE and TRUNCATE work on every
captured table, including one with REPLICA IDENTITY FULL and no primary key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.connectors.cdc.postgres import CdcConfigError
from medallion_platform.connectors.cdc.spec import CdcTable
from medallion_platform.contracts import Contract, apply_contract
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.cdc_db import Db, cdc_database, insert_customers


@pytest.fixture
def db(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Db]:
    case = getattr(getattr(request.node, "callspec", None), "id", "")
    name = re.sub(r"\W+", "_", f"ri_{request.node.originalname[5:30]}_{case}").strip("_").lower()
    with cdc_database(postgres, name) as database:
        yield database


def capture(db: Db, *tables: CdcTable) -> None:
    """Capture ``customers``, ``orders`` and ``tables``."""
    db.spec = db.spec.model_copy(update={"tables": [*db.spec.tables, *tables]})


def publication_tables(db: Db) -> list[str] | None:
    """The tables of the platform's publication; None when it does not exist."""
    with db.connect() as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", [db.spec.publication_name]
        ).fetchone()
        if exists is None:
            return None
        rows = conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1",
            [db.spec.publication_name],
        ).fetchall()
    return [r[0] for r in rows]


def slots(db: Db) -> list[str]:
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", [db.name]
        ).fetchall()
    return [r[0] for r in rows]


def app_writes(db: Db, table: str, key: str, new: str, old: str) -> None:
    """What the application does to a table: every statement in its own transaction, so
    that a refusal names the statement. ``new``/``old`` are two key values."""
    for statement in (
        f"UPDATE {table} SET {key} = {new} WHERE {key} = {old}",
        f"DELETE FROM {table} WHERE {key} = {new}",
        f"TRUNCATE {table}",
    ):
        try:
            db.run(statement)
        except psycopg.Error as exc:
            pytest.fail(f"the application's {statement!r} failed: {exc}")


BAD_IDENTITIES = {
    "no_primary_key": (
        "CREATE TABLE ledger (entry text, amount int)",
        "it has no primary key",
        "ALTER TABLE public.ledger ADD PRIMARY KEY (<columns>)",
    ),
    "identity_nothing": (
        "CREATE TABLE ledger (entry text PRIMARY KEY, amount int);"
        "ALTER TABLE ledger REPLICA IDENTITY NOTHING",
        "its replica identity is NOTHING",
        "ALTER TABLE public.ledger REPLICA IDENTITY DEFAULT (its primary key, entry)",
    ),
    "identity_index_dropped": (
        "CREATE TABLE ledger (entry text NOT NULL, amount int);"
        "CREATE UNIQUE INDEX ledger_entry ON ledger (entry);"
        "ALTER TABLE ledger REPLICA IDENTITY USING INDEX ledger_entry;"
        "DROP INDEX ledger_entry",
        "its replica identity index was dropped",
        "ALTER TABLE public.ledger REPLICA IDENTITY USING INDEX",
    ),
}


@pytest.mark.parametrize("case", list(BAD_IDENTITIES))
def test_a_table_without_a_usable_replica_identity_is_refused_before_anything_is_created(
    db: Db, warehouse: Warehouse, case: str
) -> None:
    ddl, why, way = BAD_IDENTITIES[case]
    db.run(ddl)
    db.run("INSERT INTO ledger VALUES ('e1', 1), ('e2', 2)")
    insert_customers(db, 1, 3)
    capture(db, CdcTable(name="ledger"))

    with pytest.raises(CdcConfigError) as refused:
        ingest_cdc(warehouse, db.source())
    message = str(refused.value)
    assert f"CDC source {db.name}" in message and "public.ledger" in message, message
    assert why in message, message
    assert "UPDATE and DELETE" in message  # what would have broken, and for whom
    # What to do: each way out, as the statement to run or the line to write.
    assert way in message, message
    assert "ALTER TABLE public.ledger REPLICA IDENTITY FULL" in message, message
    assert "key: [" in message and "cdc_sources.yaml" in message, message
    assert "public.customers" not in message and "public.orders" not in message

    assert publication_tables(db) is None and slots(db) == []  # nothing on the source
    with warehouse.connect() as conn:
        assert conn.execute("SELECT count(*) FROM _meta.positions").fetchone() == (0,)
    app_writes(db, "ledger", "entry", "'e3'", "'e1'")  # the application is unaffected


def test_an_existing_publication_is_not_altered_to_take_a_table_without_identity(
    db: Db, warehouse: Warehouse
) -> None:
    """An admin created the publication beforehand (the README's way for a user who does not
    own the tables); a table without identity added to the configuration is not added to it."""
    db.run("CREATE TABLE ledger (entry text, amount int)")
    db.run(f"CREATE PUBLICATION {db.spec.publication_name} FOR TABLE customers, orders")
    capture(db, CdcTable(name="ledger"))
    with pytest.raises(CdcConfigError, match=r"public\.ledger: it has no primary key"):
        ingest_cdc(warehouse, db.source())
    assert publication_tables(db) == ["customers", "orders"] and slots(db) == []
    db.run("INSERT INTO ledger VALUES ('e1', 1)")
    app_writes(db, "ledger", "entry", "'e2'", "'e1'")


def test_a_declared_key_must_exist_and_be_carried_by_deletes(db: Db, warehouse: Warehouse) -> None:
    db.run("CREATE TABLE moves (move_id bigint NOT NULL, sku text); ALTER TABLE moves "
           "REPLICA IDENTITY FULL")  # fmt: skip
    capture(db, CdcTable(name="moves", key=["move_no"]))
    with pytest.raises(CdcConfigError, match=r"public\.moves: key column move_no does not exist"):
        ingest_cdc(warehouse, db.source())

    # orders has the default identity (its primary key, order_id): a DELETE carries only
    # order_id, so a key of customer_id could not be read from it.
    db.spec = db.spec.model_copy(
        update={"tables": [CdcTable(name="customers"), CdcTable(name="orders", key=["status"])]}
    )
    with pytest.raises(CdcConfigError) as refused:
        ingest_cdc(warehouse, db.source())
    message = str(refused.value)
    assert "public.orders: key [status] is not within its replica identity (order_id)" in message
    assert "declare a key within (order_id)" in message
    assert "ALTER TABLE public.orders REPLICA IDENTITY FULL" in message
    assert publication_tables(db) is None and slots(db) == []


STOCK_MOVES = """
CREATE TABLE stock_moves (move_id bigint NOT NULL, sku text NOT NULL, quantity int NOT NULL,
                          note text);
ALTER TABLE stock_moves REPLICA IDENTITY FULL;
CREATE TABLE shipments (shipment_no text NOT NULL, carrier text NOT NULL);
CREATE UNIQUE INDEX shipments_no ON shipments (shipment_no);
ALTER TABLE shipments REPLICA IDENTITY USING INDEX shipments_no;
"""

STOCK_MOVES_CONTRACT = {
    "name": "stock_moves",
    "description": "Warehouse stock movements (no primary key at the source).",
    "business_key": ["move_id"],
    "changes": {"deletes": "remove"},
    "columns": [
        {"name": "move_id", "type": "bigint", "source": "key", "json_path": "$.move_id"},
        {"name": "sku", "source": "after", "json_path": "$.sku", "required": True},
        {"name": "quantity", "type": "integer", "source": "after", "json_path": "$.quantity"},
        {"name": "note", "source": "after", "json_path": "$.note"},
    ],
    "min_rows": 0,
}


def bronze(warehouse: Warehouse, table: str) -> list[dict[str, Any]]:
    with warehouse.connect() as conn:
        cursor = conn.execute(f"SELECT * FROM bronze.{table} ORDER BY commit_lsn, seq")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def replay(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The change log applied in position order, keyed by its ``key`` JSON."""
    state: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["op"] == "t":
            state.clear()
        elif row["op"] == "d":
            del state[row["key"]]
        else:
            state[row["key"]] = json.loads(row["after"])
    return state


def source_rows(db: Db, table: str, key: list[str]) -> dict[str, dict[str, Any]]:
    """The source table as PostgreSQL's text output, keyed like the change log."""
    rows = db.state(table).values()
    return {json.dumps({k: r[k] for k in key}, separators=(",", ":")): r for r in rows}


def test_every_captured_table_stays_writable_and_a_full_identity_table_flows_to_silver(
    db: Db, warehouse: Warehouse
) -> None:
    db.run(STOCK_MOVES)
    capture(db, CdcTable(name="stock_moves", key=["move_id"]), CdcTable(name="shipments"))
    insert_customers(db, 1, 3)
    db.run("INSERT INTO orders VALUES ('ord_1', 'cus_000001', 'placed', 5.00)")
    db.run("INSERT INTO stock_moves SELECT g, 'SKU-' || g, g, NULL FROM generate_series(1, 4) g")
    db.run("INSERT INTO shipments VALUES ('shp_1', 'ups'), ('shp_2', 'dhl')")
    first = ingest_cdc(warehouse, db.source())
    assert first.snapshot_rows == 3 + 1 + 4 + 2
    assert publication_tables(db) == ["customers", "orders", "shipments", "stock_moves"]
    assert slots(db) == [db.spec.slot_name]

    # The application, with the platform's publication and slot in place: every statement
    # on every captured table works.
    app_writes(db, "customers", "customer_id", "'cus_000009'", "'cus_000001'")
    app_writes(db, "orders", "order_id", "'ord_9'", "'ord_1'")
    app_writes(db, "stock_moves", "move_id", "90", "1")
    app_writes(db, "shipments", "shipment_no", "'shp_9'", "'shp_1'")

    # Then a day's work on the key-less table: inserts, updates of a value and of the key,
    # a delete; the changes are keyed by the declared key.
    db.run("INSERT INTO stock_moves SELECT g, 'SKU-' || g, g, NULL FROM generate_series(1, 6) g")
    db.run("UPDATE stock_moves SET quantity = 40, note = 'recount' WHERE move_id = 4")
    db.run("UPDATE stock_moves SET move_id = 60 WHERE move_id = 6")
    db.run("DELETE FROM stock_moves WHERE move_id = 5")
    db.run("INSERT INTO shipments VALUES ('shp_3', 'fedex')")
    db.run("UPDATE shipments SET carrier = 'ups' WHERE shipment_no = 'shp_3'")
    second = ingest_cdc(warehouse, db.source())
    assert second.changes > 0

    moves = bronze(warehouse, f"{db.name}_stock_moves")
    updates = [r for r in moves if r["op"] == "u"]
    assert [json.loads(r["key"]) for r in updates] == [{"move_id": "4"}]  # not a delete + create
    assert json.loads(updates[0]["before"])["quantity"] == "4"  # the whole old row (FULL)
    ops = [(r["op"], json.loads(r["key"])["move_id"]) for r in moves if r["op"] not in "rt"]
    assert ops[-4:] == [("u", "4"), ("d", "6"), ("c", "60"), ("d", "5")]  # a key update moves
    assert replay(moves) == source_rows(db, "stock_moves", ["move_id"])
    shipments = bronze(warehouse, f"{db.name}_shipments")
    assert replay(shipments) == source_rows(db, "shipments", ["shipment_no"])

    contract = Contract.model_validate({**STOCK_MOVES_CONTRACT, "source": f"{db.name}_stock_moves"})
    with warehouse.transaction() as conn:
        stats = apply_contract(conn, contract)
        assert stats.quarantined == 0, stats.reasons
        silver = conn.execute(
            "SELECT move_id, sku, quantity, note FROM silver.stock_moves ORDER BY move_id"
        ).fetchall()
    with db.connect() as conn:
        truth = conn.execute(
            "SELECT move_id, sku, quantity, note FROM stock_moves ORDER BY move_id"
        ).fetchall()
    assert silver == truth and len(truth) == 5


def test_a_table_that_loses_its_identity_later_stops_the_capture_with_the_fix(
    db: Db, warehouse: Warehouse
) -> None:
    insert_customers(db, 1, 2)
    ingest_cdc(warehouse, db.source())
    db.run("ALTER TABLE orders REPLICA IDENTITY NOTHING")  # someone else's DDL, later
    with pytest.raises(psycopg.Error, match="does not have a replica identity"):
        db.run("DELETE FROM orders")  # why it matters: the application is hurt now
    with pytest.raises(CdcConfigError) as stopped:
        ingest_cdc(warehouse, db.source())
    message = str(stopped.value)
    assert "public.orders: its replica identity is NOTHING" in message, message
    assert f"it is in publication {db.spec.publication_name}" in message
    assert f"ALTER PUBLICATION {db.spec.publication_name} DROP TABLE public.orders" in message
    assert "ALTER TABLE public.orders REPLICA IDENTITY DEFAULT (its primary key" in message

    db.run("ALTER TABLE orders REPLICA IDENTITY DEFAULT")
    db.run("INSERT INTO orders VALUES ('ord_1', 'cus_000001', 'placed', 1.00)")
    assert ingest_cdc(warehouse, db.source()).changes == 1
    assert replay(bronze(warehouse, f"{db.name}_orders")) == source_rows(db, "orders", ["order_id"])


def test_a_full_identity_table_without_a_declared_key_is_keyed_by_the_whole_row(
    db: Db, warehouse: Warehouse
) -> None:
    db.run("CREATE TABLE notes (author text, body text); ALTER TABLE notes REPLICA IDENTITY FULL")
    db.run("INSERT INTO notes VALUES ('ann', 'hello'), ('bob', 'hi')")
    capture(db, CdcTable(name="notes"))
    first = ingest_cdc(warehouse, db.source())
    (warning,) = [w for w in first.warnings if "public.notes" in w]
    assert "keyed by the whole row" in warning and "key: [columns]" in warning

    db.run("UPDATE notes SET body = 'hello!' WHERE author = 'ann'")
    db.run("DELETE FROM notes WHERE author = 'bob'")
    ingest_cdc(warehouse, db.source())
    rows = bronze(warehouse, f"{db.name}_notes")
    assert [r["op"] for r in rows] == ["r", "r", "d", "c", "d"]
    assert json.loads(rows[2]["key"]) == {"author": "ann", "body": "hello"}
    assert replay(rows) == source_rows(db, "notes", ["author", "body"])
