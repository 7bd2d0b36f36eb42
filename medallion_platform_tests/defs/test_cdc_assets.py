"""CDC through Dagster against a real PostgreSQL.

``cdc_sensor`` reads only the slot's lag and asks for one run per new WAL position; it never
reads a change and never opens the warehouse, and while its connection variables are unset it
skips, naming them. The capture and silver assets run a table that is empty at the snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    build_sensor_context,
    materialize,
)

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.definitions import build_definitions
from medallion_platform.defs.cdc import (
    CdcDatabaseResource,
    build_cdc_bronze_assets,
    build_cdc_resource,
    build_cdc_sensor,
    cdc_resource_key,
)
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.defs.silver import build_silver_assets
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.cdc_db import Db, cdc_database, insert_customers, orders_contract
from medallion_platform_tests.conftest import PG_TEST_PASSWORD

SELECTION = [AssetKey(["bronze", "x"])]
QUIET_WAL = 64 * 1024
"""WAL the server may write on its own (autovacuum, checkpoints) between two checks."""


@pytest.fixture
def db(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Db]:
    with cdc_database(postgres, "sensor_" + request.node.name[5:40].lower()) as database:
        database.spec = database.spec.model_copy(
            update={"dsn_env": "SENSOR_TEST_DSN", "password_env": "SENSOR_TEST_PASSWORD"}
        )
        yield database


def daemon_context(
    sensor: SensorDefinition, resources: Mapping[str, Any], cursor: str | None
) -> SensorEvaluationContext:
    """The context the daemon evaluates a sensor in: the resources it requires, built from the
    code location's own (``EnvVar`` fields, read at the tick)."""
    return build_sensor_context(
        cursor=cursor,
        instance=DagsterInstance.ephemeral(),
        resources={k: v for k, v in resources.items() if k in sensor.required_resource_keys},
    )


def tick(
    db: Db, cursor: str | None, monkeypatch: pytest.MonkeyPatch, password: str = PG_TEST_PASSWORD
) -> SensorResult:
    """One tick with the source's variables set, as the daemon runs it."""
    monkeypatch.setenv("SENSOR_TEST_DSN", db.conninfo)
    monkeypatch.setenv("SENSOR_TEST_PASSWORD", password)
    sensor = build_cdc_sensor([db.spec], "medallion_job", {db.spec.name: SELECTION})
    resources = {cdc_resource_key(db.spec): build_cdc_resource(db.spec)}
    return sensor(daemon_context(sensor, resources, cursor))


def test_one_run_per_wal_position_while_changes_wait(
    db: Db, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_customers(db, 1, 10)
    first = tick(
        db, None, monkeypatch
    )  # no slot yet: the first run creates it and takes the snapshot
    (request,) = first.run_requests
    assert request.run_key == f"cdc:{db.name}:no-slot" and request.asset_selection == SELECTION
    assert tick(db, first.cursor, monkeypatch).run_requests == []  # same position: not asked twice

    ingest_cdc(warehouse, db.source())
    assert db.source().slot_state().lag_bytes < QUIET_WAL  # moved up to the WAL's end

    db.run("UPDATE customers SET segment = 'pro' WHERE customer_id = 'cus_000001'")
    second = tick(db, first.cursor, monkeypatch)
    (request,) = second.run_requests
    assert request.tags["medallion/trigger"] == "cdc"
    assert int(request.tags["medallion/lag_bytes"]) > 0
    repeat = tick(db, second.cursor, monkeypatch)
    if repeat.run_requests:  # only if the server wrote WAL of its own in between
        assert all(r.run_key != request.run_key for r in repeat.run_requests)
    else:
        assert "already requested" in repeat.skip_reason.skip_message

    ingest_cdc(warehouse, db.source())
    assert db.source().slot_state().lag_bytes < QUIET_WAL
    caught_up = tick(db, second.cursor, monkeypatch)
    if caught_up.run_requests:
        # The lag is WAL bytes, not our changes: the server may have written WAL of its own
        # (autovacuum, a checkpoint) since. Such a run is harmless: it finds nothing to do.
        assert ingest_cdc(warehouse, db.source()).changes == 0
    else:
        assert "nothing pending" in caught_up.skip_reason.skip_message


def test_an_unreachable_database_is_a_skip_that_names_it_without_the_password(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = tick(db, None, monkeypatch, password="wrong-" + PG_TEST_PASSWORD)
    assert result.run_requests == []
    message = result.skip_reason.skip_message
    assert db.name in message and "password authentication failed" in message
    assert PG_TEST_PASSWORD not in message


def test_unset_connection_variables_are_one_clear_skip_not_an_error(
    settings: PlatformSettings,
    config: PlatformConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``dagster dev`` started before ``medallion services up``: the packaged code location,
    APP_DB_DSN and APP_DB_PASSWORD unset. Each tick is a skip that says what to set and how,
    not an error with a traceback."""
    monkeypatch.delenv("APP_DB_DSN", raising=False)
    monkeypatch.delenv("APP_DB_PASSWORD", raising=False)
    caplog.set_level(logging.WARNING)
    defs = build_definitions(settings, config)
    sensor = defs.resolve_sensor_def("cdc_sensor")
    resources = defs.get_repository_def().get_top_level_resources()

    result = sensor(daemon_context(sensor, resources, None))
    assert result.run_requests == []
    message = result.skip_reason.skip_message
    assert message.startswith("app_db: APP_DB_DSN and APP_DB_PASSWORD are not set."), message
    assert 'eval "$(medallion services up)"' in message
    assert "Traceback" not in message and not [r for r in caplog.records if r.exc_info]

    monkeypatch.setenv("APP_DB_DSN", "host=127.0.0.1 port=1 dbname=app user=medallion")
    only_password = sensor(daemon_context(sensor, resources, result.cursor))
    assert only_password.skip_reason.skip_message.startswith("app_db: APP_DB_PASSWORD is not set")
    assert only_password.cursor == result.cursor  # nothing was requested or remembered


def test_a_table_empty_at_the_snapshot_does_not_fail_the_run(
    db: Db, settings: PlatformSettings
) -> None:
    """The capture and the silver contract of a table without rows yet: the blocking
    ``row_count`` check passes (min_rows applies once the source has delivered rows)."""
    insert_customers(db, 1, 2)  # orders is empty
    contract = orders_contract(db)
    assets = [
        build_cdc_bronze_assets(db.spec),
        build_silver_assets(contract, AssetKey(["bronze", f"{db.name}_orders"])),
    ]
    resources = {
        "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
        cdc_resource_key(db.spec): CdcDatabaseResource(dsn=db.conninfo, password=PG_TEST_PASSWORD),
    }

    def run() -> str:
        with DagsterInstance.ephemeral() as instance:
            result = materialize(assets, resources=resources, instance=instance)
        assert result.success
        (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "row_count"]
        assert check.passed, check.description
        return check.description or ""

    assert f"bronze.{db.name}_orders holds no rows yet" in run()
    db.run("INSERT INTO orders VALUES ('ord_1', 'cus_000001', 'placed', 5.00)")
    assert run() == "at least 1 row(s); found 1"
