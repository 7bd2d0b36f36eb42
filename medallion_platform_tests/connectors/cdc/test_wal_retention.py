"""The slot must not be able to fill the source's disk unnoticed (a full disk stops the
application's writes). Creating it on a server that does not cap the WAL a slot keeps is
reported, with the setting; on a server that caps it, a slot invalidated past the cap stops
the capture (and the sensor) with the way to a fresh snapshot, which then works.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, build_sensor_context

from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.defs.cdc import build_cdc_sensor
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.cdc_db import Db, cdc_database, insert_customers


@pytest.fixture
def db(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Db]:
    with cdc_database(postgres, "wal_" + request.node.name[5:40].lower()) as database:
        yield database


def test_an_uncapped_slot_is_reported_when_it_is_created(
    db: Db, warehouse: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    insert_customers(db, 1, 2)
    report = ingest_cdc(warehouse, db.source())  # the session's server keeps the default, -1
    (warning,) = report.warnings
    assert "max_slot_wal_keep_size = -1" in warning and "full disk" in warning
    assert f"slot {db.spec.slot_name}" in warning
    assert "ALTER SYSTEM SET max_slot_wal_keep_size" in warning
    assert warning in caplog.text
    assert ingest_cdc(warehouse, db.source()).warnings == []  # said once, when created


def test_a_slot_invalidated_past_the_cap_stops_the_capture_with_the_way_out(
    tmp_path: Path, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"max_slot_wal_keep_size": "1MB"}
    with PostgresServer(tmp_path / "pg", settings=settings) as server:
        db = Db(server, "capped")
        insert_customers(db, 1, 3)
        assert ingest_cdc(warehouse, db.source()).warnings == []  # capped: nothing to say
        for _ in range(3):  # the platform stops capturing while WAL goes by
            insert_customers(db, 100 + _ * 1000, 500)
            db.run("SELECT pg_switch_wal()")
        db.run("CHECKPOINT")
        state = db.source().slot_state()
        assert state is not None and state.wal_status == "lost"

        with pytest.raises(RuntimeError) as stopped:
            ingest_cdc(warehouse, db.source())
        message = str(stopped.value)
        assert f"slot {db.spec.slot_name} was invalidated by the server" in message
        assert "max_slot_wal_keep_size" in message
        forget = "DELETE FROM _meta.positions WHERE source = 'cdc:capped'"
        assert forget in message

        monkeypatch.setenv("UNUSED_DSN", db.conninfo)
        monkeypatch.setenv("CAPPED_PASSWORD", server.password)
        spec = db.spec.model_copy(
            update={"dsn_env": "UNUSED_DSN", "password_env": "CAPPED_PASSWORD"}
        )
        sensor = build_cdc_sensor([spec], "medallion_job", {spec.name: [AssetKey(["bronze", "x"])]})
        tick = sensor(build_sensor_context())
        assert tick.run_requests == []  # a run could only fail
        assert forget in tick.skip_reason.skip_message

        with warehouse.transaction() as conn:
            conn.execute(forget)
        again = ingest_cdc(warehouse, db.source())
        assert again.snapshot_rows == 3 + 3 * 500
        assert db.source().slot_state().wal_status != "lost"
