"""``MEDALLION_CONFIG_DIR``: a team keeps its declarations and SQL in its own repository.

Adding a source there needs no edit inside the package and leaves the packaged graph (and its
reviewed snapshot) exactly as it was.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from medallion_platform.config import (
    CONFIG_DIR,
    CONFIG_DIR_ENV,
    ConfigError,
    config_dir,
    load_config,
    platform_config,
)
from medallion_platform.definitions import MAIN_JOB, build_definitions
from medallion_platform.settings import PlatformSettings
from medallion_platform_tests.conftest import copy_packaged_config, write_csv
from medallion_platform_tests.test_definitions import _graph

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

RETURNS_FEED = """\
feeds:
  - name: returns
    description: Store returns exported nightly by the warehouse system, one CSV per day.
    folder: returns
    glob: "*.csv"
    format: csv
    contract: returns
    required_columns: [return_id]
    null_values: ["", "NA"]
    owner: team:operations
"""

RETURNS_CONTRACT = """\
contracts:
  - name: returns
    description: Store returns, one row per return (the latest export wins).
    source: files_returns
    business_key: [return_id]
    owner: team:operations
    columns:
      - {name: return_id, type: varchar, pattern: "R-[0-9]+"}
      - {name: sku, type: varchar, required: true}
      - {name: refund, type: "decimal(12,2)", required: true, min: 0}
      - {name: reason, type: varchar}
      - {name: returned_on, type: date, required: true}
"""

RETURNS_DAILY_MODEL = """\
models:
  - name: returns_daily
    description: Refunded amount and returns per day, for the operations dashboard.
    grain: one row per day
    key: [returned_on]
    depends_on: [silver.returns]
    freshness_hours: 24
    owner: team:operations
"""

RETURNS_DAILY_SQL = """\
SELECT returned_on, count(*) AS returns, sum(refund) AS refunded
FROM silver.returns
GROUP BY returned_on
"""

RETURNS_CSV = """\
return_id,sku,refund,reason,returned_on
R-1,SKU-000001,19.90,NA,2026-11-30
R-2,SKU-000002,5.00,damaged,2026-11-30
R-3,SKU-000003,oops,damaged,2026-12-01
R-4,SKU-000004,12.10,late,2026-12-01
"""


def _team_repo(root: Path) -> Path:
    """A team's own declarations: one file feed, its contract and one gold model."""
    directory = root / "team_config"
    (directory / "models" / "gold").mkdir(parents=True)
    (directory / "file_feeds.yaml").write_text(RETURNS_FEED)
    (directory / "contracts.yaml").write_text(RETURNS_CONTRACT)
    (directory / "gold_models.yaml").write_text(RETURNS_DAILY_MODEL)
    (directory / "models" / "gold" / "returns_daily.sql").write_text(RETURNS_DAILY_SQL)
    return directory


def _copy_of_packaged(root: Path) -> Path:
    """The demo's declarations and SQL, copied out of the package the way a team starts."""
    return copy_packaged_config(root / "demo_config")


def test_unset_means_the_packaged_declarations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    assert config_dir() == CONFIG_DIR
    monkeypatch.setenv(CONFIG_DIR_ENV, "  ")
    assert config_dir() == CONFIG_DIR


def test_a_missing_directory_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"MEDALLION_CONFIG_DIR=.*nope: no such directory"):
        platform_config()


def test_sql_models_are_read_from_the_directory(tmp_path: Path) -> None:
    team = _team_repo(tmp_path)
    (model,) = load_config(team).gold_models
    assert model.sql_path == team / "models" / "gold" / "returns_daily.sql"
    (team / "models" / "gold" / "returns_daily.sql").unlink()
    with pytest.raises(ConfigError, match=r"returns_daily.*returns_daily\.sql does not exist"):
        load_config(team)


def test_a_team_source_runs_end_to_end_from_its_own_directory(
    settings: PlatformSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bronze, silver, quarantine and gold for a source the package has never heard of."""
    team = _team_repo(tmp_path)
    monkeypatch.setenv(CONFIG_DIR_ENV, str(team))
    assert platform_config().contract("returns").null_values == ["", "NA"]

    defs = build_definitions(settings)  # the configuration in force, as Dagster loads it
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "landing/returns",
        "bronze/files_returns",
        "silver/returns",
        "quarantine/returns",
        "gold/returns_daily",
    }  # no demo table, no KPI report or churn model that would read missing tables

    write_csv(settings.landing_dir, "returns/2026-12-01.csv", RETURNS_CSV)
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(MAIN_JOB).execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET
        )
    assert result.success

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bronze.files_returns").fetchone() == (4,)
        silver = conn.execute("SELECT return_id, reason FROM silver.returns ORDER BY 1").fetchall()
        assert silver == [("R-1", None), ("R-2", "damaged"), ("R-4", "late")]  # NA is NULL
        (reason,) = conn.execute("SELECT _reason FROM quarantine.returns").fetchone()
        assert "refund" in reason
        gold = conn.execute(
            "SELECT returned_on::VARCHAR, returns, refunded::VARCHAR FROM gold.returns_daily "
            "ORDER BY 1"
        ).fetchall()
    assert gold == [("2026-11-30", 2, "24.90"), ("2026-12-01", 1, "12.10")]


def test_adding_a_source_leaves_the_packaged_graph_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's declarations plus a new feed: the new assets and nothing else change, and
    the packaged graph (the reviewed snapshot) is untouched."""
    home = PlatformSettings(home=tmp_path / "home")
    packaged = _graph(build_definitions(home, load_config(CONFIG_DIR)))

    team = _copy_of_packaged(tmp_path)
    with (team / "file_feeds.yaml").open("a") as feeds:
        feeds.write("\n" + RETURNS_FEED.split("\n", 1)[1])  # the entry, under feeds:
    contracts = RETURNS_CONTRACT.split("\n", 1)[1]
    (team / "contracts.yaml").write_text((team / "contracts.yaml").read_text() + "\n" + contracts)
    monkeypatch.setenv(CONFIG_DIR_ENV, str(team))
    extended = _graph(build_definitions(home))

    added = set(extended["assets"]) - set(packaged["assets"])
    new = {"landing/returns", "bronze/files_returns", "silver/returns", "quarantine/returns"}
    assert added == new
    assert {k: extended["assets"][k] for k in packaged["assets"]} == packaged["assets"]

    monkeypatch.delenv(CONFIG_DIR_ENV)
    assert _graph(build_definitions(home)) == packaged
