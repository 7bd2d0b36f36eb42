"""``MEDALLION_ENGINE=spark dagster job execute -m medallion_platform -j medallion_job`` on the
demo builds the same silver and gold as the DuckDB engine (money exact), through the same
assets, checks and job; and a run killed while Spark writes a silver snapshot leaves nothing
half-done: the rerun gives the same tables.

One platform home, real services (payments API, Kafka broker, PostgreSQL with CDC), the demo's
files. Run 1 is killed (SIGKILL to its process group, the JVM included) the moment Spark
starts writing ``silver.events``' snapshot, before the contract's commit. Run 2 completes.
Then the warehouse is copied and the DuckDB engine builds silver and gold in the copy from
the same bronze, as the DuckDB assets do (``DuckDBEngine``: ``apply_contract``, then every SQL
model); every table, quarantine and history included, is compared cell by cell.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from medallion_platform.config import platform_config
from medallion_platform.devkit.demo.run import seed
from medallion_platform.engines.engine import DuckDBEngine, contract_tables
from medallion_platform.engines.lake import Lake
from medallion_platform.gold.build import in_dependency_order
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse.warehouse import transaction
from medallion_platform_tests.engines.compare import differences, quarantine_rows, table_rows
from medallion_platform_tests.engines.conftest import TEST_SPARK_CONF

BIN = Path(sys.executable).parent
# Minutes (a JVM per Dagster step): `make spark` runs it, and CI after `make test`.
pytestmark = pytest.mark.spark_job

KILLED = "events"  # the first silver step: silver (stored by day) and quarantine, one commit


def _keys() -> dict[str, list[str]]:
    """Every table silver and gold build, with a key that orders its rows."""
    config = platform_config()
    keys: dict[str, list[str]] = {}
    for contract in config.contracts:
        for name in contract_tables(contract):
            keys[name] = [*contract.business_key, "_batch_id", "_source"]
            if name.endswith("_history"):
                keys[name] = [*contract.business_key, "_commit_lsn", "_seq"]
    for model in config.sql_models:
        keys[f"{model.layer}.{model.name}"] = list(model.key)
    return keys


def _kill_when_writing(job: list[str], env: dict, cwd: Path, lake: Lake, log: Path) -> Path:
    """Start the run; SIGKILL its process group as soon as a snapshot folder of
    ``silver.<KILLED>`` appears (Spark has begun writing it). Returns that folder."""
    folder = lake.table_dir("silver", KILLED)
    with log.open("w") as out:
        run = subprocess.Popen(
            job, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 400
            while run.poll() is None and time.monotonic() < deadline:
                started = list(folder.glob("s*")) if folder.is_dir() else []
                if started:
                    os.killpg(run.pid, signal.SIGKILL)
                    run.wait(30)
                    return started[0]
                time.sleep(0.005)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait(30)
    raise AssertionError(f"run 1 ended before writing silver.{KILLED}: {log.read_text()[-3000:]}")


def _duckdb_engine_build(path: Path) -> None:
    """What the DuckDB assets build from this bronze: every contract, then every SQL model."""
    config, engine = platform_config(), DuckDBEngine()
    with duckdb.connect(str(path)) as conn, transaction(conn):
        for contract in config.contracts:
            engine.apply_contract(conn, contract)
        for model in in_dependency_order(config.sql_models):
            engine.build_table(conn, model.layer, model.name, model.sql)


def test_medallion_job_on_spark_killed_and_rerun_builds_what_duckdb_builds(
    settings: PlatformSettings, app_payments_api, clickstream, app_db
) -> None:
    env = {
        **os.environ,  # the payments API, the broker and the app database of the fixtures
        "MEDALLION_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
        "MEDALLION_ENGINE": "spark",
        "MEDALLION_SPARK_MASTER": "local[2]",
        "MEDALLION_SPARK_CONF": json.dumps(TEST_SPARK_CONF),
    }
    cwd = settings.home.parent
    seed(settings, scale=0.05, seed=42)  # the demo's files, as `medallion demo --no-run` drops
    job = [
        str(BIN / "dagster"),
        "job",
        "execute",
        "-m",
        "medallion_platform",
        "-j",
        "medallion_job",
    ]
    lake = Lake(settings.home / "lake")

    half = _kill_when_writing(job, env, cwd, lake, settings.home / "run1.log")
    # Killed mid-write: the contract's unit was never committed, so nothing reads the half.
    assert lake.read_commit(f"silver.{KILLED}") is None
    assert lake.table_path("silver", KILLED) is None

    rerun = subprocess.run(job, env=env, capture_output=True, text=True, timeout=400, cwd=cwd)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0 and "RUN_SUCCESS" in out, out[-5000:]
    assert lake.table_path("silver", KILLED) not in (None, half)  # a new, complete snapshot
    assert (lake.table_path("silver", KILLED) / "_SUCCESS").is_file()

    duck = settings.home / "duckdb_engine.duckdb"
    shutil.copy(settings.warehouse_path, duck)
    _duckdb_engine_build(duck)

    keys = _keys()
    found: dict[str, list[str]] = {}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        conn.execute(f"ATTACH '{duck}' AS duck (READ_ONLY)")
        kinds = dict(
            conn.execute(
                "SELECT table_catalog || ':' || table_schema || '.' || table_name, table_type "
                "FROM information_schema.tables"
            ).fetchall()
        )
        for name, key in keys.items():
            # The Spark run's warehouse shows views of the lake's committed snapshots; the
            # copy, DuckDB's own tables.
            assert kinds.get(f"warehouse:{name}") == "VIEW", name
            assert kinds.get(f"duck:{name}") == "BASE TABLE", name
            if name.startswith("quarantine."):
                same = quarantine_rows(conn, f"duck.{name}") == quarantine_rows(conn, name)
                found[name] = [] if same else ["quarantine rows differ"]
                continue
            names, duck_rows = table_rows(conn, f"duck.{name}", key)
            spark_names, spark_rows = table_rows(conn, name, key)
            assert duck_rows, f"{name}: the demo gives it rows, so the comparison means something"
            found[name] = (
                [f"columns {names} != {spark_names}"]
                if names != spark_names
                else differences(duck_rows, spark_rows, names)
            )
        # Money exact: the same DECIMAL types on both sides, compared as Decimals above.
        money = [
            conn.execute(
                f"SELECT any_value(typeof(net)), sum(net) FROM {c}gold.daily_revenue"
            ).fetchone()
            for c in ("duck.", "")
        ]
    assert found == {name: [] for name in keys}
    assert money[0] == money[1] and money[0][0].startswith("DECIMAL") and money[0][1] > 0

    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        runs = instance.get_run_records()
        # Run 1's process died; run 2 found it so and marked it failed.
        assert sorted(r.dagster_run.status.value for r in runs) == sorted(
            [DagsterRunStatus.FAILURE.value, DagsterRunStatus.SUCCESS.value]
        )
        for key in (["silver", KILLED], ["gold", "customer_360"]):
            event = instance.get_latest_materialization_event(AssetKey(key))
            assert event is not None
            assert event.asset_materialization.metadata["engine"].value == "spark", key
