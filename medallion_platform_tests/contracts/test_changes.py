"""Change-log contracts (SCD1 current state, SCD2 history) on a real PostgreSQL's changes.

The truth for current state is the source database after each round; for history, the
versions each key went through, which the test itself made. A rebuild from bronze and a
replay of the bronze batches in the wrong order must both give the same tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.contracts import Contract, apply_contract
from medallion_platform.contracts.checks import run_history_checks
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.cdc_db import Db, cdc_database, insert_customers


def contracts(source: str) -> tuple[Contract, Contract]:
    customers = Contract.model_validate(
        {
            "name": "customers",
            "description": "current customers",
            "source": f"{source}_customers",
            "business_key": ["customer_id"],
            "changes": {"deletes": "remove", "history": "customers_history"},
            "columns": [
                {"name": "customer_id", "source": "key", "json_path": "$.customer_id"},
                {
                    "name": "email",
                    "source": "after",
                    "json_path": "$.email",
                    "required": True,
                    "pattern": "[^@ ]+@[^@ ]+",
                },
                {"name": "segment", "source": "after", "json_path": "$.segment"},
                {
                    "name": "updated_at",
                    "source": "after",
                    "json_path": "$.updated_at",
                    "type": "timestamptz",
                    "required": True,
                },
            ],
        }
    )
    orders = Contract.model_validate(
        {
            "name": "orders",
            "description": "current orders",
            "source": f"{source}_orders",
            "business_key": ["order_id"],
            "changes": {"deletes": "flag"},
            "columns": [
                {"name": "order_id", "source": "key", "json_path": "$.order_id"},
                {"name": "customer_id", "source": "after", "json_path": "$.customer_id"},
                {"name": "status", "source": "after", "json_path": "$.status", "required": True},
                {
                    "name": "total",
                    "source": "after",
                    "json_path": "$.total",
                    "type": "decimal(12,2)",
                    "required": True,
                },
            ],
        }
    )
    return customers, orders


@pytest.fixture
def db(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Db]:
    with cdc_database(postgres, "scd_" + request.node.name[5:45].lower()) as database:
        yield database


def sync(warehouse: Warehouse, db: Db, *, rebuild: bool = False) -> dict[str, Any]:
    ingest_cdc(warehouse, db.source())
    customers, orders = contracts(db.name)
    with warehouse.transaction() as conn:
        return {
            "customers": apply_contract(conn, customers, rebuild=rebuild),
            "orders": apply_contract(conn, orders, rebuild=rebuild),
        }


def query(warehouse: Warehouse, sql: str) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(sql).fetchall()


def silver_customers(warehouse: Warehouse) -> set[tuple]:
    return set(
        query(
            warehouse,
            "SELECT customer_id, email, segment, epoch_us(updated_at) FROM silver.customers",
        )
    )


def source_customers(db: Db) -> set[tuple]:
    with db.connect() as conn:
        return set(
            conn.execute(
                "SELECT customer_id, email, segment, "
                "(extract(epoch FROM updated_at) * 1000000)::bigint FROM customers"
            ).fetchall()
        )


def live_orders(warehouse: Warehouse) -> set[tuple]:
    return set(
        query(
            warehouse,
            "SELECT order_id, customer_id, status, total FROM silver.orders WHERE NOT _deleted",
        )
    )


def source_orders(db: Db) -> set[tuple]:
    with db.connect() as conn:
        return set(conn.execute("SELECT order_id, customer_id, status, total FROM orders"))


def everything(warehouse: Warehouse) -> dict[str, list[tuple]]:
    return {
        table: query(
            warehouse, f"SELECT * EXCLUDE (_batch_id, _source) FROM silver.{table} ORDER BY ALL"
        )
        for table in ("customers", "customers_history", "orders")
    }


def workload(db: Db, round_: int) -> None:
    """Updates, deletes, a key moved, a key deleted and inserted again, a truncate."""
    if round_ == 1:
        db.run(
            "UPDATE customers SET segment = 'pro', updated_at = now() "
            "WHERE customer_id IN ('cus_000001', 'cus_000002')"
        )
        db.run(
            "UPDATE customers SET email = 'second@example.com', updated_at = now() "
            "WHERE customer_id = 'cus_000001'"
        )
        db.run("DELETE FROM customers WHERE customer_id = 'cus_000003'")
        db.run("UPDATE orders SET status = 'paid' WHERE order_id = 'ord_1'")
        db.run("DELETE FROM orders WHERE order_id = 'ord_2'")
    elif round_ == 2:
        db.run(
            "INSERT INTO customers (customer_id, email, segment) "
            "VALUES ('cus_000003', 'back@example.com', 'casual')"
        )  # deleted, then back
        db.run(
            "UPDATE customers SET customer_id = 'cus_000099' WHERE customer_id = 'cus_000004'"
        )  # a primary-key update
        db.run("INSERT INTO orders VALUES ('ord_3', 'cus_000001', 'placed', 30.00)")
        db.run("UPDATE orders SET status = 'shipped' WHERE order_id = 'ord_1'")
    else:
        db.run("TRUNCATE orders")
        db.run("INSERT INTO orders VALUES ('ord_4', 'cus_000002', 'placed', 40.00)")
        db.run(
            "UPDATE customers SET segment = 'vip', updated_at = now() "
            "WHERE customer_id = 'cus_000001'"
        )


def seed(db: Db) -> None:
    insert_customers(db, 1, 5)
    db.run(
        "INSERT INTO orders VALUES ('ord_1', 'cus_000001', 'placed', 10.00),"
        "('ord_2', 'cus_000002', 'placed', 20.50)"
    )


def test_current_state_follows_the_source_round_after_round(db: Db, warehouse: Warehouse) -> None:
    seed(db)
    stats = sync(warehouse, db)
    assert stats["customers"].inserted == 5 and stats["orders"].inserted == 2
    assert silver_customers(warehouse) == source_customers(db)
    for round_ in (1, 2, 3):
        workload(db, round_)
        stats = sync(warehouse, db)
        assert silver_customers(warehouse) == source_customers(db), f"round {round_}"
        assert live_orders(warehouse) == source_orders(db), f"round {round_}"
        if round_ == 1:
            assert stats["customers"].deleted == 1 and stats["customers"].updated == 2
            assert stats["orders"].deleted == 1
    # Flagged deletes keep the last known values; the truncate flagged the rows still live.
    flagged = query(
        warehouse,
        "SELECT order_id, status, total, _op FROM silver.orders WHERE _deleted ORDER BY 1",
    )
    assert flagged == [
        ("ord_1", "shipped", Decimal("10.00"), "t"),
        ("ord_2", "placed", Decimal("20.50"), "d"),  # deleted before the truncate
        ("ord_3", "placed", Decimal("30.00"), "t"),
    ]


def test_history_has_every_version_in_order(db: Db, warehouse: Warehouse) -> None:
    seed(db)
    sync(warehouse, db)
    for round_ in (1, 2, 3):
        workload(db, round_)
        sync(warehouse, db)
    history = query(
        warehouse,
        "SELECT customer_id, _op, email, segment, is_current, valid_to IS NULL "
        "FROM silver.customers_history ORDER BY customer_id, _commit_lsn, _seq",
    )
    by_key: dict[str, list[tuple]] = {}
    for row in history:
        by_key.setdefault(row[0], []).append(row[1:])
    assert by_key["cus_000001"] == [
        ("r", "c1@example.com", "casual", False, False),
        ("u", "c1@example.com", "pro", False, False),
        ("u", "second@example.com", "pro", False, False),
        ("u", "second@example.com", "vip", True, True),
    ]
    assert by_key["cus_000003"] == [
        ("r", "c3@example.com", "casual", False, False),
        ("d", None, None, False, False),  # the tombstone closes it until it comes back
        ("c", "back@example.com", "casual", True, True),
    ]
    assert by_key["cus_000004"] == [
        ("r", "c4@example.com", "casual", False, False),
        ("d", None, None, False, True),
    ]
    assert by_key["cus_000099"] == [("c", "c4@example.com", "casual", True, True)]
    # valid_to of each version is the next version's valid_from.
    gaps = query(
        warehouse,
        """SELECT count(*) FROM (
             SELECT valid_to, lead(valid_from) OVER (PARTITION BY customer_id
                 ORDER BY _commit_lsn, _seq) AS next_from
             FROM silver.customers_history) WHERE valid_to IS DISTINCT FROM next_from""",
    )
    assert gaps == [(0,)]
    current = query(
        warehouse, "SELECT customer_id FROM silver.customers_history WHERE is_current ORDER BY 1"
    )
    assert current == query(warehouse, "SELECT customer_id FROM silver.customers ORDER BY 1")


def test_rebuild_and_out_of_order_batches_give_the_same_tables(
    db: Db, warehouse: Warehouse, tmp_path: Any
) -> None:
    seed(db)
    sync(warehouse, db)
    for round_ in (1, 2, 3):
        workload(db, round_)
        sync(warehouse, db)
    incremental = everything(warehouse)
    with warehouse.transaction() as conn:
        customers, orders = contracts(db.name)
        apply_contract(conn, customers, rebuild=True)
        apply_contract(conn, orders, rebuild=True)
    assert everything(warehouse) == incremental

    # The same bronze batches delivered newest first, one run each: history is ordered by
    # the log, not by arrival. (Current state relies on arrival in log order, which the
    # single ingest guarantees: a removed key leaves no tombstone to outrank older rows.)
    other = Warehouse(tmp_path / "other.duckdb")
    batches = [
        b
        for (b,) in query(
            warehouse, f"SELECT DISTINCT _batch_id FROM bronze.{db.name}_customers ORDER BY 1 DESC"
        )
    ]
    with other.connect() as conn:
        conn.execute(f"ATTACH '{warehouse.path}' AS src (READ_ONLY)")
        conn.execute("CREATE SCHEMA IF NOT EXISTS bronze")
        for table in ("customers", "orders"):
            bronze = f"bronze.{db.name}_{table}"
            conn.execute(f"CREATE TABLE {bronze} AS SELECT * FROM src.{bronze} LIMIT 0")
        for i, batch in enumerate(batches, start=1):
            conn.execute("BEGIN TRANSACTION")
            for table in ("customers", "orders"):
                bronze = f"bronze.{db.name}_{table}"
                conn.execute(
                    f"INSERT INTO {bronze} SELECT * REPLACE ({i} AS _batch_id) "
                    f"FROM src.{bronze} WHERE _batch_id = {batch}"
                )
            for contract in contracts(db.name):
                apply_contract(conn, contract)
            conn.execute("COMMIT")
    assert everything(other)["customers_history"] == incremental["customers_history"]


def test_a_change_that_breaks_the_contract_is_quarantined_not_applied(
    db: Db, warehouse: Warehouse
) -> None:
    seed(db)
    sync(warehouse, db)
    db.run("UPDATE customers SET email = 'not an email' WHERE customer_id = 'cus_000005'")
    db.run("DELETE FROM customers WHERE customer_id = 'cus_000004'")  # a delete needs its key only
    stats = sync(warehouse, db)
    assert stats["customers"].quarantined == 1 and stats["customers"].deleted == 1
    reason, source = query(warehouse, "SELECT _reason, _source FROM quarantine.customers")[0]
    assert "email" in reason and "pattern" in reason
    assert source.startswith(f"{db.name}:public.customers@")
    kept = query(warehouse, "SELECT email FROM silver.customers WHERE customer_id = 'cus_000005'")
    assert kept == [("c5@example.com",)]  # the last valid version stays


def test_history_checks_pass_and_catch_a_broken_history(db: Db, warehouse: Warehouse) -> None:
    seed(db)
    sync(warehouse, db)
    workload(db, 1)
    sync(warehouse, db)
    customers, _ = contracts(db.name)
    with warehouse.transaction() as conn:
        assert all(o.passed for o in run_history_checks(conn, customers))
        conn.execute(  # a hand edit: every version of one key current, a deleted key revived
            "UPDATE silver.customers_history SET is_current = TRUE "
            "WHERE customer_id IN ('cus_000001', 'cus_000003')"
        )
        failed = {o.name for o in run_history_checks(conn, customers) if not o.passed}
    assert failed == {"one_current_version", "current_matches_silver"}


def test_a_dropped_required_column_quarantines_changes_naming_it(
    db: Db, warehouse: Warehouse
) -> None:
    seed(db)
    sync(warehouse, db)
    db.run("ALTER TABLE customers DROP COLUMN email")
    db.run("UPDATE customers SET segment = 'pro' WHERE customer_id = 'cus_000001'")
    stats = sync(warehouse, db)
    assert stats["customers"].quarantined == 1
    (reason,) = query(warehouse, "SELECT _reason FROM quarantine.customers")[0]
    assert reason.startswith("email:") and "required" in reason
