"""CDC into bronze against a real PostgreSQL: snapshot, changes, crashes, large transactions.

The truth is the source database itself: replaying the bronze change log in Python, in
position order, must give exactly the rows PostgreSQL holds, after any sequence of runs,
crashes (a real SIGKILL of a real subprocess) and reruns.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from medallion_platform.connectors.cdc.ingest import Position, ingest_cdc
from medallion_platform.connectors.cdc.postgres import CdcConfigError, PostgresChangeSource
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.cdc_db import (
    CAPTURE_SCRIPT,
    SCHEMA,
    Db,
    cdc_database,
    insert_customers,
    kill_capture,
    make_spec,
)
from medallion_platform_tests.conftest import PG_TEST_PASSWORD


@pytest.fixture
def db(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Db]:
    with cdc_database(postgres, "cdc_" + request.node.name[5:45].lower()) as database:
        yield database


def bronze(warehouse: Warehouse, table: str) -> list[dict[str, Any]]:
    with warehouse.connect() as conn:
        cursor = conn.execute(f"SELECT * FROM bronze.{table} ORDER BY commit_lsn, seq")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def replay(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Apply a change log in position order, as a consumer would: the current state."""
    state: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["op"] == "t":
            state.clear()
        elif row["op"] == "d":
            key = next(iter(json.loads(row["key"]).values()))
            del state[key]
        else:
            after = json.loads(row["after"])
            state[next(iter(json.loads(row["key"]).values()))] = after
    return state


def assert_exactly_once(warehouse: Warehouse, db: Db) -> None:
    for table in ("customers", "orders"):
        rows = bronze(warehouse, f"{db.name}_{table}")
        positions = [(r["commit_lsn"], r["seq"]) for r in rows]
        assert len(positions) == len(set(positions)), f"{table}: a change landed twice"
        source = db.state(table)
        replayed = replay(rows)  # rows keep columns dropped later: compare today's columns
        projected = {k: {c: row.get(c) for c in source.get(k, row)} for k, row in replayed.items()}
        assert projected == source, f"{table}: bronze replay differs from source"


def slot_lag(db: Db) -> int:
    state = db.source().slot_state()
    assert state is not None
    return state.lag_bytes


def test_snapshot_then_changes_exactly_as_the_source(db: Db, warehouse: Warehouse) -> None:
    insert_customers(db, 1, 50)
    db.run("INSERT INTO orders VALUES ('ord_1', 'cus_000001', 'placed', 12.50)")

    first = ingest_cdc(warehouse, db.source())
    assert first.snapshot_rows == 51 and first.changes == 0
    snapshot = bronze(warehouse, f"{db.name}_customers")
    assert {r["op"] for r in snapshot} == {"r"} and len(snapshot) == 50
    assert all(r["xid"] is None and r["before"] is None for r in snapshot)
    assert_exactly_once(warehouse, db)

    db.run(
        "UPDATE customers SET email = 'new@example.com', updated_at = now() "
        "WHERE customer_id = 'cus_000002'"
    )
    db.run("DELETE FROM customers WHERE customer_id = 'cus_000003'")
    db.run("UPDATE orders SET status = 'paid' WHERE order_id = 'ord_1'")
    db.run("INSERT INTO orders VALUES ('ord_2', 'cus_000004', 'placed', 99.00)")
    second = ingest_cdc(warehouse, db.source())
    assert second.snapshot_rows == 0
    assert second.changes == 4 and second.transactions == 4
    assert second.rows_by_table == {f"{db.name}_customers": 2, f"{db.name}_orders": 2}
    assert_exactly_once(warehouse, db)

    changes = [r for r in bronze(warehouse, f"{db.name}_customers") if r["op"] != "r"]
    update, delete = changes
    assert update["op"] == "u" and json.loads(update["before"])["email"] == "c2@example.com"
    assert json.loads(update["after"])["email"] == "new@example.com"
    assert delete["op"] == "d" and delete["after"] is None
    assert json.loads(delete["key"]) == {"customer_id": "cus_000003"}
    assert json.loads(delete["before"])["email"] == "c3@example.com"  # REPLICA IDENTITY FULL
    assert update["xid"] and update["commit_ts"] and update["lsn"]
    assert update["_source"].startswith(f"{db.name}:public.customers@")
    order_update = bronze(warehouse, f"{db.name}_orders")[1]
    assert order_update["op"] == "u" and order_update["before"] is None  # default identity

    assert slot_lag(db) == 0 or ingest_cdc(warehouse, db.source()).changes == 0
    third = ingest_cdc(warehouse, db.source())
    assert third.changes == 0 and third.batch_ids == []


def test_a_transaction_keeps_its_order_and_pk_updates_move_the_row(
    db: Db, warehouse: Warehouse
) -> None:
    insert_customers(db, 1, 3)
    ingest_cdc(warehouse, db.source())
    db.run(
        "UPDATE customers SET segment = 'pro' WHERE customer_id = 'cus_000001';"
        "UPDATE customers SET segment = 'vip' WHERE customer_id = 'cus_000001';"
        "UPDATE customers SET customer_id = 'cus_999999' WHERE customer_id = 'cus_000002';"
        "INSERT INTO orders VALUES ('ord_9', 'cus_999999', 'placed', 1.00);"
    )
    report = ingest_cdc(warehouse, db.source())
    assert report.transactions == 1
    changes = [r for r in bronze(warehouse, f"{db.name}_customers") if r["op"] != "r"]
    assert [r["op"] for r in changes] == ["u", "u", "d", "c"]
    assert len({r["commit_lsn"] for r in changes}) == 1 and [r["seq"] for r in changes] == [
        1,
        2,
        3,
        4,
    ]
    assert json.loads(changes[2]["key"]) == {"customer_id": "cus_000002"}
    assert json.loads(changes[3]["key"]) == {"customer_id": "cus_999999"}
    assert bronze(warehouse, f"{db.name}_orders")[0]["seq"] == 5  # one order across tables
    assert_exactly_once(warehouse, db)


def test_truncate_is_captured_and_clears_the_state(db: Db, warehouse: Warehouse) -> None:
    insert_customers(db, 1, 5)
    db.run("INSERT INTO orders VALUES ('ord_1', 'cus_000001', 'placed', 5.00)")
    ingest_cdc(warehouse, db.source())
    db.run("TRUNCATE orders")
    db.run("INSERT INTO orders VALUES ('ord_2', 'cus_000002', 'placed', 6.00)")
    ingest_cdc(warehouse, db.source())
    ops = [r["op"] for r in bronze(warehouse, f"{db.name}_orders")]
    assert ops == ["r", "t", "c"]
    assert_exactly_once(warehouse, db)


def run_and_kill(warehouse: Warehouse, db: Db, work: Path, kill_at: int, batch_size: int) -> str:
    spec = db.spec.model_copy(update={"batch_size": batch_size})
    return kill_capture(warehouse, spec, db.conninfo, work, kill_at)


def test_killed_between_commit_and_slot_advance_rereads_without_duplicates(
    db: Db, warehouse: Warehouse, tmp_path: Path
) -> None:
    insert_customers(db, 1, 20)
    ingest_cdc(warehouse, db.source())
    for i in range(30):  # 30 transactions: inserts, updates, deletes
        with db.connect() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO orders VALUES (%s, 'cus_000001', 'placed', %s)", [f"ord_{i}", i]
            )
            conn.execute(
                "UPDATE customers SET segment = %s, updated_at = now() WHERE customer_id = %s",
                [f"s{i}", f"cus_{1 + i % 20:06d}"],
            )
        if i % 7 == 0:
            db.run("DELETE FROM orders WHERE order_id = %s", [f"ord_{i}"])
    before = db.source().slot_state()
    assert before is not None
    out = run_and_kill(warehouse, db, tmp_path, kill_at=2, batch_size=10)
    assert out.splitlines() == ["batch 1", "batch 2"]
    after = db.source().slot_state()
    assert after is not None
    # Positions, not lag: other databases of the shared cluster write WAL too. The slot never
    # goes back, and stops short of the workload's end: batch 2 committed, the slot did not
    # move over it, so what batch 2 (and the batches after it) read is still on the server.
    assert before.confirmed_lsn <= after.confirmed_lsn < before.current_lsn

    report = ingest_cdc(warehouse, db.source())  # re-reads what batch 2 already committed
    assert report.changes > 0
    assert_exactly_once(warehouse, db)
    total = sum(len(bronze(warehouse, f"{db.name}_{t}")) for t in ("customers", "orders"))
    assert total == 20 + 30 * 2 + 5  # snapshot + insert and update per txn + 5 deletes
    assert ingest_cdc(warehouse, db.source()).changes == 0


def test_killed_during_the_snapshot_takes_it_again(
    db: Db, warehouse: Warehouse, tmp_path: Path
) -> None:
    insert_customers(db, 1, 150_000)
    script = tmp_path / "cdc_child.py"
    script.write_text(CAPTURE_SCRIPT)
    spec = db.spec.model_copy(update={"batch_size": 5_000})
    child = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(warehouse.path),
            spec.model_dump_json(by_alias=True),
            db.conninfo,
            "99",
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "CDC_TEST_PASSWORD": PG_TEST_PASSWORD},
    )
    try:  # the slot appears when the snapshot starts; kill the child while it copies
        deadline = time.monotonic() + 60
        while db.source().slot_state() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert child.poll() is None, "the snapshot finished before the kill"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert db.source().slot_state() is not None  # the half-used slot is still there
    with warehouse.connect() as conn:
        assert conn.execute(f"SELECT count(*) FROM bronze.{db.name}_customers").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM _meta.positions").fetchone() == (0,)

    db.run("UPDATE customers SET segment = 'pro' WHERE customer_id = 'cus_000007'")
    report = ingest_cdc(warehouse, db.source())
    assert report.snapshot_rows == 150_000 and report.changes == 0  # the update is in it
    with warehouse.connect() as conn:
        segment = conn.execute(
            f"SELECT after->>'segment' FROM bronze.{db.name}_customers "
            "WHERE key->>'customer_id' = 'cus_000007'"
        ).fetchall()
    assert segment == [("pro",)]
    with warehouse.connect() as conn:  # lineage: each row has its own number in its batch
        unique = conn.execute(
            f"SELECT count(*) = count(DISTINCT (_batch_id, _row_number)) "
            f"FROM bronze.{db.name}_customers"
        ).fetchone()
    assert unique == (True,)


RSS_SCRIPT = """
import os, resource, sys
from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.connectors.cdc.postgres import PostgresChangeSource
from medallion_platform.connectors.cdc.spec import CdcSource
from medallion_platform.warehouse import Warehouse

path, spec_json, conninfo = sys.argv[1:4]
spec = CdcSource.model_validate_json(spec_json)
source = PostgresChangeSource(spec, conninfo, os.environ["CDC_TEST_PASSWORD"])
warehouse = Warehouse(path)
with warehouse.connect():
    pass  # the libraries and the warehouse are loaded before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = ingest_cdc(warehouse, source)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(report.changes, report.transactions, (peak - base) // 1024)
"""


def test_a_large_transaction_streams_in_bounded_batches_and_survives_a_kill(
    db: Db, warehouse: Warehouse, tmp_path: Path
) -> None:
    ingest_cdc(warehouse, db.source())
    rows = 200_000
    db.run(
        "INSERT INTO orders SELECT 'ord_' || g, 'cus_000001', 'placed', g %% 1000 "
        "FROM generate_series(1, %s) g",
        [rows],
    )
    out = run_and_kill(warehouse, db, tmp_path, kill_at=3, batch_size=20_000)
    assert out.splitlines()[-1] == "batch 3"
    with warehouse.connect() as conn:
        # Each commit holds at most batch_size changes: memory never holds the transaction.
        sizes = conn.execute(
            f"SELECT _batch_id, count(*) FROM bronze.{db.name}_orders GROUP BY 1"
        ).fetchall()
    assert len(sizes) == 3 and all(n == 20_000 for _, n in sizes)
    assert slot_lag(db) > 0  # the transaction is not complete in bronze: slot not advanced

    # The rest in a fresh process that reports its memory: holding the 140,000 remaining
    # changes at once costs ~300 MiB more than the interpreter with its libraries; batches of
    # 5,000 keep the growth far below that.
    spec = db.spec.model_copy(update={"batch_size": 5_000})
    probe = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(warehouse.path), spec.model_dump_json(by_alias=True),
         db.conninfo],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CDC_TEST_PASSWORD": PG_TEST_PASSWORD},
    )  # fmt: skip
    changes, transactions, growth_mib = (int(x) for x in probe.stdout.split())
    assert changes == rows - 60_000 and transactions == 1, probe.stderr
    assert growth_mib < 150, f"the capture grew by {growth_mib} MiB"
    with warehouse.connect() as conn:
        n, distinct, top, commit_lsn = conn.execute(
            f"SELECT count(*), count(DISTINCT seq), max(seq), max(commit_lsn) "
            f"FROM bronze.{db.name}_orders"
        ).fetchone()
    assert n == distinct == top == rows
    # Caught up: the slot is confirmed past the big transaction's commit. (Not "lag 0": after
    # 200k rows the server writes WAL of its own, autovacuum and checkpoints, at any time.)
    state = db.source().slot_state()
    assert state is not None and state.confirmed_lsn >= commit_lsn


def test_schema_changes_are_reported_and_new_columns_flow(db: Db, warehouse: Warehouse) -> None:
    insert_customers(db, 1, 2)
    ingest_cdc(warehouse, db.source())
    db.run("ALTER TABLE customers ADD COLUMN loyalty_tier text")
    db.run("UPDATE customers SET loyalty_tier = 'gold' WHERE customer_id = 'cus_000001'")
    db.run("ALTER TABLE customers DROP COLUMN segment")
    db.run("UPDATE customers SET email = 'x@example.com' WHERE customer_id = 'cus_000002'")
    db.run("ALTER TABLE orders ALTER COLUMN total TYPE numeric(14,4)")
    db.run("INSERT INTO orders VALUES ('ord_1', 'cus_000001', 'placed', 1.5)")
    report = ingest_cdc(warehouse, db.source())
    found = {(c.table, c.column, c.change) for c in report.schema_changes}
    assert found == {
        ("public.customers", "loyalty_tier", "added"),
        ("public.customers", "segment", "dropped"),
        ("public.orders", "total", "type_changed"),
    }
    rows = bronze(warehouse, f"{db.name}_customers")
    assert json.loads(rows[-2]["after"])["loyalty_tier"] == "gold"
    assert "segment" not in json.loads(rows[-1]["after"])
    assert json.loads(bronze(warehouse, f"{db.name}_orders")[-1]["after"])["total"] == "1.5000"
    assert_exactly_once(warehouse, db)
    again = ingest_cdc(warehouse, db.source())  # the new shapes are remembered
    assert again.schema_changes == []


def test_the_password_never_shows(
    db: Db, warehouse: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    insert_customers(db, 1, 3)
    report = ingest_cdc(warehouse, db.source())
    assert PG_TEST_PASSWORD not in report.model_dump_json()
    wrong = PostgresChangeSource(db.spec, db.conninfo, "not-" + PG_TEST_PASSWORD)
    with pytest.raises(psycopg.OperationalError) as failure:
        ingest_cdc(warehouse, wrong)
    assert "password authentication failed" in str(failure.value)
    assert PG_TEST_PASSWORD not in str(failure.value) and "not-" not in str(failure.value)
    assert PG_TEST_PASSWORD not in caplog.text
    with warehouse.connect() as conn:
        meta = conn.execute("SELECT * FROM _meta.positions").fetchall()
    assert PG_TEST_PASSWORD not in repr(meta)


def test_unset_connection_env_var_is_a_clear_error() -> None:
    spec = make_spec("nowhere")
    with pytest.raises(CdcConfigError, match="set UNUSED_DSN"):
        PostgresChangeSource.from_env(spec, {})


def test_position_orders_by_commit_then_sequence() -> None:
    assert Position.parse("0/10#2") > Position.parse("0/A#99")
    assert str(Position.parse("16/B374D848#7")) == "16/B374D848#7"


def test_a_dropped_slot_stops_the_capture_with_the_way_out(db: Db, warehouse: Warehouse) -> None:
    insert_customers(db, 1, 4)
    ingest_cdc(warehouse, db.source())
    with db.connect() as conn:
        db.source().drop_slot(conn)
    db.run("UPDATE customers SET segment = 'pro' WHERE customer_id = 'cus_000001'")
    with pytest.raises(RuntimeError, match=r"slot medallion_cdc_a_dropped.* is gone") as failure:
        ingest_cdc(warehouse, db.source())
    assert f"DELETE FROM _meta.positions WHERE source = 'cdc:{db.name}'" in str(failure.value)
    with warehouse.transaction() as conn:
        conn.execute("DELETE FROM _meta.positions WHERE source = ?", [f"cdc:{db.name}"])
    again = ingest_cdc(warehouse, db.source())
    assert again.snapshot_rows == 4  # a fresh snapshot, with the update in it


def test_a_server_without_logical_decoding_is_a_clear_error(
    tmp_path: Path, warehouse: Warehouse
) -> None:
    with PostgresServer(tmp_path / "pg", settings={"wal_level": "replica"}) as server:
        with server.connect() as conn:
            conn.execute(SCHEMA)
        spec = make_spec("replica_only")
        source = PostgresChangeSource(spec, server.dsn, server.password)
        with pytest.raises(CdcConfigError, match="wal_level is replica, logical decoding needs"):
            ingest_cdc(warehouse, source)


def test_changes_committed_during_the_snapshot_come_once_as_changes(
    db: Db, warehouse: Warehouse, tmp_path: Path
) -> None:
    """The snapshot reads the state as of the slot's start; what commits while it copies is
    not in it and arrives as changes, each exactly once."""
    insert_customers(db, 1, 150_000)
    script = tmp_path / "cdc_child.py"
    script.write_text(CAPTURE_SCRIPT)
    child = subprocess.Popen(
        [sys.executable, str(script), str(warehouse.path),
         db.spec.model_copy(update={"batch_size": 5_000}).model_dump_json(by_alias=True),
         db.conninfo, "0"],
        stdout=subprocess.PIPE,
        env={**os.environ, "CDC_TEST_PASSWORD": PG_TEST_PASSWORD},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while db.source().slot_state() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(1, 41):  # 40 small transactions while the snapshot is being copied
            db.run(
                "UPDATE customers SET segment = 'during' WHERE customer_id = %s",
                [f"cus_{i * 1000:06d}"],
            )
        db.run("DELETE FROM customers WHERE customer_id = 'cus_000007'")
        insert_customers(db, 150_001, 9)
        assert child.poll() is None, "the snapshot finished before the changes were made"
        assert child.wait(timeout=120) == 0
    finally:
        child.kill()
    # The child's run went on from the snapshot to the changes: nothing is left, and nothing
    # is in bronze twice.
    assert ingest_cdc(warehouse, db.source()).changes == 0
    rows = bronze(warehouse, f"{db.name}_customers")
    assert sum(r["op"] == "r" for r in rows) == 150_000
    assert [r["op"] for r in rows if r["op"] != "r"] == ["u"] * 40 + ["d"] + ["c"] * 9
    assert_exactly_once(warehouse, db)
