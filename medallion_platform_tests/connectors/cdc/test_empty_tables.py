"""A captured table with no rows is a fact about the source, not a broken silver table.

The ``row_count`` check (``min_rows``) applies once the source has delivered rows: here a
change log whose table is empty at the snapshot, later filled, emptied by deletes and by a
TRUNCATE, against a real PostgreSQL; silver emptied by hand while the source holds rows
still fails it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.contracts import CheckOutcome, Contract, apply_contract, run_contract_checks
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.cdc_db import Db, cdc_database, insert_customers, orders_contract


@pytest.fixture
def db(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Db]:
    with cdc_database(postgres, "empty_" + request.node.name[5:40].lower()) as database:
        yield database


def capture_and_check(warehouse: Warehouse, db: Db, contract: Contract) -> CheckOutcome:
    ingest_cdc(warehouse, db.source())
    with warehouse.transaction() as conn:
        assert apply_contract(conn, contract).quarantined == 0
        outcomes = {o.name: o for o in run_contract_checks(conn, contract)}
    assert all(o.passed for o in outcomes.values() if o.name != "row_count"), outcomes
    return outcomes["row_count"]


def test_row_count_applies_once_the_source_holds_rows(db: Db, warehouse: Warehouse) -> None:
    insert_customers(db, 1, 2)  # orders is empty at the snapshot
    contract = orders_contract(db)
    assert contract.min_rows == 1

    empty = capture_and_check(warehouse, db, contract)
    assert empty.passed, empty.description
    assert f"bronze.{db.name}_orders holds no rows yet" in empty.description
    assert "min_rows (1) applies once the source has delivered rows" in empty.description

    db.run("INSERT INTO orders VALUES ('ord_1', 'cus_000001', 'placed', 5.00)")
    filled = capture_and_check(warehouse, db, contract)
    assert filled.passed and filled.description == "at least 1 row(s); found 1"

    with warehouse.connect() as conn:  # a bug or a hand edit empties silver: caught
        conn.execute("BEGIN")
        conn.execute("DELETE FROM silver.orders")
        (tampered,) = [o for o in run_contract_checks(conn, contract) if o.name == "row_count"]
        conn.execute("ROLLBACK")
    assert not tampered.passed and tampered.failing_rows == 1
    assert "at least 1 row(s); found 0" in tampered.description
    assert "the source holds 1 row(s)" in tampered.description

    db.run("DELETE FROM orders")  # the source is empty again: so is silver, rightly
    deleted = capture_and_check(warehouse, db, contract)
    assert deleted.passed, deleted.description
    assert "the source table holds no rows as of its last captured change" in deleted.description

    db.run("INSERT INTO orders VALUES ('ord_2', 'cus_000001', 'placed', 1.00), "
           "('ord_3', 'cus_000002', 'paid', 2.00)")  # fmt: skip
    assert capture_and_check(warehouse, db, contract).description == "at least 1 row(s); found 2"
    db.run("TRUNCATE orders")
    truncated = capture_and_check(warehouse, db, contract)
    assert truncated.passed, truncated.description
    assert "holds no rows as of its last captured change" in truncated.description

    demanding = contract.model_copy(update={"min_rows": 3})  # a declared floor still holds
    db.run("INSERT INTO orders VALUES ('ord_4', 'cus_000001', 'placed', 1.00)")
    short = capture_and_check(warehouse, db, demanding)
    assert not short.passed and "at least 3 row(s); found 1" in short.description
