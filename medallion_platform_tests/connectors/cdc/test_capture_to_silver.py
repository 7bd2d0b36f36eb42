"""The demo app database through CDC into silver, randomized: over ten thousand inserts,
updates and deletes in several rounds, one capture killed mid-batch (a real SIGKILL of a real
subprocess), a PostgreSQL restart in between. Afterwards every current-state table equals
its source table row for row, and ``customers_history`` holds exactly one row per version.

The packaged ``app_db`` source and contracts are used, renamed so that this test's slot and
bronze tables are its own. The seed is random; a failure prints it.
"""

from __future__ import annotations

import random
from pathlib import Path

from psycopg.conninfo import make_conninfo

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.connectors.cdc.postgres import PostgresChangeSource
from medallion_platform.contracts import Contract, apply_contract
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.devkit.demo import app_db
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.cdc_db import kill_capture
from medallion_platform_tests.conftest import fresh_database

NAME = "e2e_app"
COLUMNS = {
    "customers": ["customer_id", "email", "first_name", "last_name", "country", "segment",
                  "marketing_opt_in", "created_at", "updated_at"],
    "orders": ["order_id", "customer_id", "status", "currency", "order_total", "placed_at",
               "updated_at"],
    "order_items": ["order_id", "line_no", "sku", "quantity", "unit_price"],
}  # fmt: skip


def contracts(config: PlatformConfig) -> list[Contract]:
    """The packaged contracts, reading this test's bronze tables."""
    return [
        config.contract(name).model_copy(update={"source": f"{NAME}_{name}"}) for name in COLUMNS
    ]


def silver_equals_source(warehouse: Warehouse, postgres: PostgresServer, note: str) -> None:
    with postgres.connect(dbname=NAME) as pg:
        truth = app_db.snapshot(pg)
    with warehouse.connect() as conn:
        for table, columns in COLUMNS.items():
            live = "WHERE NOT _deleted" if table == "orders" else ""
            keys = ", ".join(app_db.KEYS[table])
            rows = conn.execute(
                f"SELECT {', '.join(columns)} FROM silver.{table} {live} ORDER BY {keys}"
            ).fetchall()
            expected = [tuple(r[c] for c in columns) for r in truth[table]]
            assert len(rows) == len(expected), f"{table}: row count ({note})"
            assert rows == expected, f"{table}: rows differ ({note})"


def capture_and_merge(warehouse: Warehouse, source: PostgresChangeSource, config) -> None:
    ingest_cdc(warehouse, source)
    with warehouse.transaction() as conn:
        for contract in contracts(config):
            stats = apply_contract(conn, contract)
            assert stats.quarantined == 0, stats.reasons


def test_ten_thousand_changes_a_kill_and_a_restart(
    postgres: PostgresServer, warehouse: Warehouse, config: PlatformConfig, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    note = f"seed {seed}"
    rng = random.Random(seed)
    fresh_database(postgres, NAME)
    conninfo = make_conninfo(postgres.dsn, dbname=NAME)
    spec = config.cdc_sources[0].model_copy(update={"name": NAME, "batch_size": 700})
    source = PostgresChangeSource(spec, conninfo, postgres.password)
    customers_versions = 0
    changes = 0
    try:
        with postgres.connect(dbname=NAME) as pg:
            seeded = app_db.seed(pg, customers=400, orders=1_200, seed=rng.randrange(1 << 30))
        customers_versions += seeded.customers  # one snapshot version each
        capture_and_merge(warehouse, source, config)
        silver_equals_source(warehouse, postgres, f"after the snapshot, {note}")

        for round_ in range(1, 4):
            with postgres.connect(dbname=NAME) as pg:
                work = app_db.apply_workload(pg, transactions=2_000, seed=rng.randrange(1 << 30))
            customers_versions += (
                work.customers.inserts + work.customers.updates + work.customers.deletes
            )
            changes += sum(
                t.inserts + t.updates + t.deletes
                for t in (work.customers, work.orders, work.order_items)
            )
            if round_ == 1:  # killed right after its second commit, before the slot moved
                out = kill_capture(warehouse, spec, conninfo, tmp_path, kill_at=2)
                assert out.splitlines() == ["batch 1", "batch 2"], note
            if round_ == 2:
                postgres.restart()
            capture_and_merge(warehouse, source, config)
            silver_equals_source(warehouse, postgres, f"round {round_}, {note}")
        assert changes >= 10_000, f"only {changes} changes ({note})"

        with warehouse.connect() as conn:
            history, current, keys = conn.execute(
                "SELECT count(*), count(*) FILTER (is_current), count(DISTINCT customer_id) "
                "FROM silver.customers_history"
            ).fetchone()
            duplicates = conn.execute(
                "SELECT count(*) FROM (SELECT _commit_lsn, _seq FROM silver.customers_history "
                "GROUP BY ALL HAVING count(*) > 1)"
            ).fetchone()[0]
            silver_customers = conn.execute("SELECT count(*) FROM silver.customers").fetchone()[0]
        assert history == customers_versions, note  # one row per version, tombstones included
        assert duplicates == 0 and current == silver_customers, note
        assert keys >= silver_customers, note
    finally:
        with postgres.connect() as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                [spec.slot_name],
            )
