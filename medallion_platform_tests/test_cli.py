"""The ``medallion`` command and Dagster's own CLI, as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from medallion_platform.settings import PlatformSettings

BIN = Path(sys.executable).parent


def _run(args: list[str], settings: PlatformSettings, timeout: float = 240):
    env = {**os.environ, "MEDALLION_HOME": str(settings.home)}
    env["DAGSTER_HOME"] = str(settings.dagster_home)
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, cwd=settings.home.parent
    )


def test_status_without_a_warehouse_says_what_to_do(settings) -> None:
    status = _run([str(BIN / "medallion"), "status"], settings)
    assert status.returncode == 1
    assert "medallion demo" in status.stderr and str(settings.warehouse_path) in status.stderr


def test_two_dagster_job_executes_at_once_both_succeed(
    settings, app_payments_api, clickstream, app_db
) -> None:
    """A sensor run and a hand-launched run at the same time: no run fails on DuckDB's lock."""
    seed = _run([str(BIN / "medallion"), "demo", "--no-run", "--scale", "0.05"], settings)
    assert seed.returncode == 0, seed.stderr
    env = {  # os.environ carries the payments API's URL and token, the broker's, the app DB's
        **os.environ,
        "MEDALLION_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
    }
    command = [str(BIN / "dagster"), "job", "execute", "-m", "medallion_platform", "-j"]
    # Every source at once, twice: files, the payments API, the broker and the app database
    # all write bronze, so the runs contend for the writer the whole time (the whole graph,
    # ML included, runs in CI's own `dagster job execute` and in test_journey.py).
    runs = [
        subprocess.Popen(
            [*command, "bronze_job"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=settings.home.parent,
        )
        for _ in range(2)
    ]
    outputs = []
    try:
        for proc in runs:
            out, _ = proc.communicate(timeout=300)
            outputs.append(out)
    finally:
        for proc in runs:
            proc.kill()
    for proc, out in zip(runs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]
        assert "RUN_SUCCESS" in out
    logs = "".join(outputs).lower()  # DuckDB's lock conflicts, or our wait giving up
    assert not any(m in logs for m in ("could not set lock", "conflicting lock", "warehousebusy"))
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (_source, _row_number)) FROM bronze.files_products"
        ).fetchone()
        (charges,) = conn.execute("SELECT count(*) FROM bronze.payments_charges").fetchone()
    assert rows > 0 and rows == distinct  # each file's rows once, whichever run took it
    assert charges > 0  # the API's run went through the same writer


SERVICE_VARIABLES = ("PAYMENTS_API_", "EVENTS_", "APP_DB_", "SALESFORCE_", "HUBSPOT_", "ZENDESK_")
REPO = Path(__file__).resolve().parents[1]


def test_a_run_without_its_variable_fails_with_one_line_naming_it(settings) -> None:
    """A fresh shell without the services' variables: `dg launch` and `dagster job execute`
    fail at the step that needs one, with one line naming the variables unset and the command
    that sets them. No config error printed per variable and no Python traceback: what else
    is printed is Dagster's own run log and its one-line summary. A variable that is set (a
    secret) is never shown."""
    from medallion_platform.instance import ensure_instance

    ensure_instance(settings)
    secret = "sk_live_not_for_any_log_8c1f"
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_VARIABLES)}
    env |= {
        "MEDALLION_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
        "PAYMENTS_API_TOKEN": secret,
    }
    command = 'run `eval "$(medallion services up)"` first, in the shell that launches the run'
    cases = {  # the README's command for one asset, CI's for a job
        (str(BIN / "dg"), "launch", "--assets", "bronze/events"): (
            "stream events: EVENTS_KAFKA_BOOTSTRAP is not set",
            "Error: Materialization failed.",
        ),
        (
            str(BIN / "dagster"),
            "job",
            "execute",
            "-m",
            "medallion_platform",
            "-j",
            "payments_job",
        ): (
            "payments API: PAYMENTS_API_BASE_URL is not set",
            "Error: Run ",
        ),
    }
    for args, (reason, summary) in cases.items():
        run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
        out = run.stdout + run.stderr
        assert run.returncode == 1, out[-3000:]
        reasons = {line for line in out.splitlines() if "not set" in line}
        (line,) = reasons  # the step's failure and the run's: the same one line
        assert reason in line and command in line, line
        assert "Traceback (most recent call last)" not in out, out[-3000:]
        assert "DagsterInvalidConfigError" not in out and "PostProcessingError" not in out
        assert out.strip().splitlines()[-1].startswith(summary), out[-500:]
        assert secret not in out


def test_dg_sees_the_code_location_from_the_project_config(settings) -> None:
    """`dg` (what the README runs: `dg launch`, `dg dev`) finds the code location through
    `[tool.dg]` in pyproject.toml, from the repository, with no `-m`: it lists exactly the
    definitions `build_definitions` makes."""
    from medallion_platform.definitions import build_definitions

    listed = subprocess.run(
        [str(BIN / "dg"), "list", "defs", "--json"],
        env={**os.environ, "MEDALLION_HOME": str(settings.home)},
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = json.loads(listed.stdout)
    defs = build_definitions(settings)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {a["asset_key"] for a in found["assets"]} == keys
    assert {j["name"] for j in found["jobs"]} == {j.name for j in defs.jobs or []}
    assert {s["name"] for s in found["sensors"]} == {s.name for s in defs.sensors or []}
    assert {r["name"] for r in found["resources"]} == set(defs.resources or {})


def test_dev_runs_the_dagster_of_this_environment_even_off_path() -> None:
    """`.venv/bin/medallion dev` must work without the venv on PATH (it once did not)."""
    from medallion_platform.cli import dev_command

    command = dev_command(3000)
    assert Path(command[0]).is_file() and os.access(command[0], os.X_OK)
    assert Path(command[0]).parent == BIN
    assert command[1:] == ["dev", "-m", "medallion_platform", "-p", "3000"]
