"""The engine is chosen by the environment, validated at load, and never run half-way."""

from __future__ import annotations

import pytest
from dagster import build_init_resource_context
from pydantic import ValidationError

from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.engines.settings import EngineSettings


def test_default_is_duckdb_with_the_lake_under_home(monkeypatch, tmp_path) -> None:
    for var in ("MEDALLION_ENGINE", "MEDALLION_SPARK_MASTER", "MEDALLION_SPARK_REMOTE",
                "SPARK_REMOTE", "MEDALLION_LAKE"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    settings = EngineSettings.from_env(tmp_path)
    assert (settings.engine, settings.spark_master, settings.spark_remote) == (
        "duckdb",
        "local[*]",
        None,
    )
    assert settings.lake == str(tmp_path / "lake")


def test_spark_connect_url_wins_and_its_token_is_not_shown(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MEDALLION_ENGINE", "Spark")
    monkeypatch.setenv("MEDALLION_SPARK_MASTER", "spark://10.0.0.5:7077")
    monkeypatch.setenv("MEDALLION_SPARK_REMOTE", "sc://dbc.example:443/;token=dapiSECRET")
    settings = EngineSettings.from_env(tmp_path)
    assert settings.engine == "spark"
    assert settings.where == "sc://dbc.example:443/"
    assert "SECRET" not in settings.where


def test_unknown_engine_fails_at_load(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MEDALLION_ENGINE", "sparky")
    with pytest.raises(ValidationError, match="'sparky' is not an engine; use duckdb, spark"):
        EngineSettings.from_env(tmp_path)


def test_a_misconfigured_engine_fails_before_the_first_step(tmp_path) -> None:
    resource = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"), engine="sparky")
    with (
        pytest.raises(ValidationError, match="'sparky' is not an engine"),
        resource.yield_for_execution(build_init_resource_context()),
    ):
        pass
    duckdb = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"))
    assert duckdb.engine_settings().engine == "duckdb"
    assert duckdb.engine_settings().lake == str(tmp_path / "lake")
    assert duckdb.sql_engine().name == "duckdb"


def test_spark_properties_come_from_the_environment_as_json(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MEDALLION_SPARK_CONF", '{"spark.executor.memory": "8g", "x.n": 2}')
    conf = EngineSettings.from_env(tmp_path).spark_conf
    assert conf == {"spark.executor.memory": "8g", "x.n": "2"}
    monkeypatch.setenv("MEDALLION_SPARK_CONF", "spark.executor.memory=8g")
    with pytest.raises(ValueError, match="MEDALLION_SPARK_CONF is not JSON"):
        EngineSettings.from_env(tmp_path)
