"""A run killed while it writes the warehouse never blocks the next one.

Each test uses Dagster's own CLI (and, once, its daemon) on a real instance on disk. The run
to kill waits on a slow page of the payments API emulator while it holds the warehouse writer,
so the kill always lands mid-run; then the next run — launched by hand or by a sensor — must
finish within a bound, and the killed run must end up FAILURE instead of STARTED forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from medallion_platform.instance import ensure_instance
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse.writer_lock import Holder, lock_path, read_holder, writer_lock
from medallion_platform_tests.conftest import PAYMENTS_CHARGES, write_csv

BIN = Path(sys.executable).parent
BOUND_S = 120.0
MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "medallion_platform"]


def _materialize(selection: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [*MATERIALIZE, "--select", selection],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def _wait_for_holder(settings: PlatformSettings, child: subprocess.Popen) -> Holder:
    """The lock file names a run of ``child`` holding the writer (resources started)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        holder = read_holder(lock_path(settings.warehouse_path))
        if holder and holder.pid == child.pid and holder.run_id and not holder.released:
            return holder
        assert child.poll() is None, child.stdout.read() if child.stdout else ""
        time.sleep(0.1)
    raise AssertionError("the run never took the warehouse writer")


@pytest.fixture
def instance_env(settings: PlatformSettings, payments_api) -> Iterator[dict[str, str]]:
    ensure_instance(settings)
    env = {
        **os.environ,
        "MEDALLION_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
    }
    yield env


def _kill_a_run_mid_write(settings, payments_api, env) -> str:
    """Start a payments load, SIGKILL it while it holds the writer; the dead run's id."""
    payments_api.faults.add("slow", path="/v1/charges", delay=600)
    child = _materialize("bronze/payments_charges", env)
    try:
        holder = _wait_for_holder(settings, child)
        time.sleep(0.5)  # inside the slow request now
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    payments_api.faults.clear()
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert instance.get_run_by_id(holder.run_id).status == DagsterRunStatus.STARTED
    return str(holder.run_id)


def _charges_in_bronze(settings: PlatformSettings) -> tuple[int, int]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT _raw->>'id') FROM bronze.payments_charges"
        ).fetchone()


def test_a_killed_run_frees_the_writer_for_the_next_cli_run(
    settings, payments_api, instance_env
) -> None:
    dead = _kill_a_run_mid_write(settings, payments_api, instance_env)

    started = time.monotonic()
    rerun = _materialize("bronze/payments_charges", instance_env)
    out, _ = rerun.communicate(timeout=BOUND_S)
    assert rerun.returncode == 0, out[-3000:]
    assert time.monotonic() - started < BOUND_S
    assert f"Marked run {dead} failed: its process is gone" in out
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        run = instance.get_run_by_id(dead)
        assert run.status == DagsterRunStatus.FAILURE
        failure = instance.all_logs(dead)[-1]
        assert "is gone" in failure.message and str(os.getpid()) not in failure.message
    # Nothing the killed run read was committed; the rerun loaded every charge once.
    assert _charges_in_bronze(settings) == (PAYMENTS_CHARGES, PAYMENTS_CHARGES)


def test_a_waiting_run_says_what_it_waits_for_and_stops_on_ctrl_c(settings, instance_env) -> None:
    write_csv(settings.landing_dir, "products/p.csv", "sku,name\nA-1,Tent\n")
    with writer_lock(settings.warehouse_path, Holder.this_process("a long backfill")):
        child = _materialize("bronze/files_products", instance_env)
        try:
            waiting = ""
            deadline = time.monotonic() + 60
            while "Waiting for the warehouse writer" not in waiting:
                assert time.monotonic() < deadline and child.poll() is None, waiting
                waiting = child.stdout.readline()
            assert "a long backfill" in waiting and f"pid {os.getpid()}" in waiting
            os.killpg(child.pid, signal.SIGINT)
            child.communicate(timeout=15)  # stops within the bound, not when the lock frees
            assert child.returncode != 0
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def test_a_sensor_launched_run_completes_after_a_killed_run(
    settings, payments_api, instance_env, tmp_path
) -> None:
    """The daemon's landing-zone sensor launches a run after a killed one; it finishes, and
    the daemon's run monitoring (or the new run) marks the killed run failed."""
    dead = _kill_a_run_mid_write(settings, payments_api, instance_env)
    path = write_csv(settings.landing_dir, "ad_spend/2026-11-01.csv", AD_SPEND)
    old = time.time() - 3600  # dropped an hour ago: settled
    os.utime(path, (old, old))
    daemon = subprocess.Popen(
        [
            str(BIN / "dagster-daemon"),
            "run",
            "-w",
            str(Path(__file__).parents[2] / "workspace.yaml"),
        ],
        env=instance_env,
        stdout=(tmp_path / "daemon.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + BOUND_S
        with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            while True:
                runs = instance.get_runs()
                sensor_runs = [r for r in runs if r.tags.get("medallion/trigger") == "landing_zone"]
                if sensor_runs and sensor_runs[0].is_finished:
                    break
                assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(1)
            failures = [
                str(e.dagster_event.event_specific_data)[:2000]
                for e in instance.all_logs(sensor_runs[0].run_id)
                if e.is_dagster_event and e.dagster_event.is_step_failure
            ]
            assert sensor_runs[0].status == DagsterRunStatus.SUCCESS, failures
            assert instance.get_run_by_id(dead).status == DagsterRunStatus.FAILURE
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bronze.files_ad_spend").fetchone() == (2,)


AD_SPEND = (
    "date,channel,campaign,spend,impressions,clicks\n"
    "2026-11-01,google_ads,brand,12.50,1000,40\n"
    "2026-11-01,meta_ads,retarget,8.00,900,12\n"
)
