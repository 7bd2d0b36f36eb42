"""A small source database for CDC tests: two tables, one under REPLICA IDENTITY FULL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from medallion_platform.connectors.cdc.postgres import PostgresChangeSource
from medallion_platform.connectors.cdc.spec import CdcSource, CdcTable
from medallion_platform.contracts import Contract
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.conftest import PG_TEST_PASSWORD, fresh_database

SCHEMA = """
CREATE TABLE customers (customer_id text PRIMARY KEY, email text NOT NULL, segment text,
                        updated_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE customers REPLICA IDENTITY FULL;
CREATE TABLE orders (order_id text PRIMARY KEY, customer_id text NOT NULL, status text NOT NULL,
                     total numeric(12,2) NOT NULL);
"""


def make_spec(name: str) -> CdcSource:
    return CdcSource(
        name=name,
        description="test source",
        dsn_env="UNUSED_DSN",
        tables=[CdcTable(name="customers"), CdcTable(name="orders")],
        batch_size=1_000,
    )


class Db:
    """A fresh database with the test schema, its CDC source, and a way to query it."""

    def __init__(self, postgres: PostgresServer, name: str) -> None:
        fresh_database(postgres, name)
        self.postgres = postgres
        self.name = name
        self.conninfo = make_conninfo(postgres.dsn, dbname=name)
        self.spec = make_spec(name)
        self.run(SCHEMA)

    def source(self) -> PostgresChangeSource:
        return PostgresChangeSource(self.spec, self.conninfo, self.postgres.password)

    def connect(self) -> psycopg.Connection[Any]:
        return self.postgres.connect(dbname=self.name)

    def run(self, statements: str, params: list[Any] | None = None) -> None:
        with self.connect() as conn, conn.transaction():
            conn.execute(statements, params)

    def state(self, table: str) -> dict[str, dict[str, str | None]]:
        """The table as PostgreSQL's text output, keyed by the first column."""
        with self.connect() as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    [table],
                ).fetchall()
            ]
            rows = conn.execute(
                f"SELECT {', '.join(f'{n}::text' for n in names)} FROM {table}"
            ).fetchall()
        return {row[0]: dict(zip(names, row, strict=True)) for row in rows}


@contextmanager
def cdc_database(postgres: PostgresServer, name: str) -> Iterator[Db]:
    """A fresh database for one test; its replication slots are dropped afterwards (slots
    belong to the cluster and hold WAL back)."""
    database = Db(postgres, name)
    try:
        yield database
    finally:
        with postgres.connect() as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE database = %s",
                [name],
            )


def insert_customers(db: Db, start: int, n: int) -> None:
    db.run(
        "INSERT INTO customers (customer_id, email, segment) "
        "SELECT 'cus_' || lpad(g::text, 6, '0'), 'c' || g || '@example.com', 'casual' "
        "FROM generate_series(%s::int, %s::int) g",
        [start, start + n - 1],
    )


def orders_contract(db: Db) -> Contract:
    """The test schema's orders (deletes: remove, so silver empties when the source does)."""
    return Contract.model_validate(
        {
            "name": "orders",
            "description": "Orders.",
            "source": f"{db.name}_orders",
            "business_key": ["order_id"],
            "changes": {"deletes": "remove"},
            "columns": [
                {"name": "order_id", "source": "key", "json_path": "$.order_id"},
                {"name": "status", "source": "after", "json_path": "$.status", "required": True},
                {
                    "name": "total",
                    "type": "decimal(12,2)",
                    "source": "after",
                    "json_path": "$.total",
                },
            ],
        }
    )


CAPTURE_SCRIPT = """
import os, signal, sys
from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.connectors.cdc.postgres import PostgresChangeSource
from medallion_platform.connectors.cdc.spec import CdcSource
from medallion_platform.warehouse import Warehouse

path, spec_json, conninfo, kill_at = sys.argv[1:5]
password = os.environ["CDC_TEST_PASSWORD"]
spec = CdcSource.model_validate_json(spec_json)
batches = 0
def on_batch(batch_id):
    global batches
    batches += 1
    print(f"batch {batches}", flush=True)
    if batches == int(kill_at):  # committed in the warehouse, slot not yet advanced
        os.kill(os.getpid(), signal.SIGKILL)
ingest_cdc(Warehouse(path), PostgresChangeSource(spec, conninfo, password), on_batch=on_batch)
print("done", flush=True)
"""


def kill_capture(
    warehouse: Warehouse, spec: CdcSource, conninfo: str, work: Path, kill_at: int
) -> str:
    """A capture in a child process that SIGKILLs itself right after its ``kill_at``-th
    warehouse commit (rows committed, slot not yet advanced); returns what it printed."""
    script = work / "cdc_child.py"
    script.write_text(CAPTURE_SCRIPT)
    child = subprocess.run(
        [
            sys.executable,
            str(script),
            str(warehouse.path),
            spec.model_dump_json(by_alias=True),
            conninfo,
            str(kill_at),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CDC_TEST_PASSWORD": PG_TEST_PASSWORD},
    )
    assert child.returncode == -9, child.stdout[-2000:] + child.stderr[-2000:]
    return child.stdout
