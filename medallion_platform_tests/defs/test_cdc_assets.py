"""``cdc_sensor`` against a real PostgreSQL: it reads only the slot's lag and asks for one
run per new WAL position; it never reads a change and never opens the warehouse."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dagster import AssetKey, DagsterInstance, SensorResult, build_sensor_context

from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.databases.postgres import PostgresServer
from medallion_platform.defs.cdc import CdcDatabaseResource, build_cdc_sensor
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.cdc_db import Db, cdc_database, insert_customers
from medallion_platform_tests.conftest import PG_TEST_PASSWORD

SELECTION = [AssetKey(["bronze", "x"])]
QUIET_WAL = 64 * 1024
"""WAL the server may write on its own (autovacuum, checkpoints) between two checks."""


@pytest.fixture
def db(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Db]:
    with cdc_database(postgres, "sensor_" + request.node.name[5:40].lower()) as database:
        yield database


def tick(db: Db, cursor: str | None, password: str = PG_TEST_PASSWORD) -> SensorResult:
    sensor = build_cdc_sensor([db.spec], "medallion_job", {db.spec.name: SELECTION})
    context = build_sensor_context(
        cursor=cursor,
        instance=DagsterInstance.ephemeral(),
        resources={f"cdc_{db.spec.name}": CdcDatabaseResource(dsn=db.conninfo, password=password)},
    )
    return sensor(context)


def test_one_run_per_wal_position_while_changes_wait(db: Db, warehouse: Warehouse) -> None:
    insert_customers(db, 1, 10)
    first = tick(db, None)  # no slot yet: the first run creates it and takes the snapshot
    (request,) = first.run_requests
    assert request.run_key == f"cdc:{db.name}:no-slot" and request.asset_selection == SELECTION
    assert tick(db, first.cursor).run_requests == []  # same position: not asked twice

    ingest_cdc(warehouse, db.source())
    assert db.source().slot_state().lag_bytes < QUIET_WAL  # moved up to the WAL's end

    db.run("UPDATE customers SET segment = 'pro' WHERE customer_id = 'cus_000001'")
    second = tick(db, first.cursor)
    (request,) = second.run_requests
    assert request.tags["medallion/trigger"] == "cdc"
    assert int(request.tags["medallion/lag_bytes"]) > 0
    repeat = tick(db, second.cursor)
    if repeat.run_requests:  # only if the server wrote WAL of its own in between
        assert all(r.run_key != request.run_key for r in repeat.run_requests)
    else:
        assert "already requested" in repeat.skip_reason.skip_message

    ingest_cdc(warehouse, db.source())
    assert db.source().slot_state().lag_bytes < QUIET_WAL
    caught_up = tick(db, second.cursor)
    if caught_up.run_requests:
        # The lag is WAL bytes, not our changes: the server may have written WAL of its own
        # (autovacuum, a checkpoint) since. Such a run is harmless: it finds nothing to do.
        assert ingest_cdc(warehouse, db.source()).changes == 0
    else:
        assert "nothing pending" in caught_up.skip_reason.skip_message


def test_an_unreachable_database_is_a_skip_that_names_it_without_the_password(
    db: Db,
) -> None:
    result = tick(db, None, password="wrong-" + PG_TEST_PASSWORD)
    assert result.run_requests == []
    message = result.skip_reason.skip_message
    assert db.name in message and "password authentication failed" in message
    assert PG_TEST_PASSWORD not in message
