"""``medallion lineage`` as a user runs it (a real subprocess on a temporary platform home)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from medallion_platform.cli import main
from medallion_platform.config import platform_config
from medallion_platform.settings import PlatformSettings
from medallion_platform_tests.lineage import create_model_tables

MEDALLION = str(Path(sys.executable).parent / "medallion")


def _lineage(settings: PlatformSettings, *args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it: a real process (it builds the whole graph: ~4 s)."""
    env = {**os.environ, "MEDALLION_HOME": str(settings.home)}
    return subprocess.run(
        [MEDALLION, "lineage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.home.parent,
    )


@pytest.fixture
def lineage(settings: PlatformSettings, capsys: pytest.CaptureFixture[str]):
    """The same command through ``cli.main`` in this process (``settings`` sets
    MEDALLION_HOME), for the many calls a test makes."""

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(["lineage", *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["medallion", "lineage", *args], code, out, err)

    return run


def test_tree_back_to_the_source_systems_and_downstream(settings, lineage) -> None:
    shown = _lineage(settings, "gold/sessions")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "└── silver/events" in out
    assert "bronze/events  [kafka: topic clickstream]" in out
    assert "gold/funnel_daily" in out.split("Downstream", 1)[1]  # a consumer of sessions
    assert "gold/sessions:grain_key_unique" in out and "medallion_job" in out

    up = lineage("gold/dim_product", "--upstream-only", "--json")
    assert up.returncode == 0, up.stderr
    document = json.loads(up.stdout)
    assert document["sources"] == [
        {"asset": "landing/products", "system": "files: landing zone products/*.csv"}
    ]
    assert "downstream" not in document

    unknown = lineage("gold/nope")
    assert unknown.returncode == 2 and "no asset gold/nope" in unknown.stderr


def test_columns_need_a_materialized_warehouse(settings, lineage) -> None:
    missing = lineage("gold/funnel_daily", "--columns")
    assert missing.returncode == 1
    assert "materialize gold/funnel_daily" in missing.stderr
    assert str(settings.warehouse_path) in missing.stderr

    with duckdb.connect(str(settings.warehouse_path)) as conn:
        create_model_tables(conn, platform_config())
        conn.execute("DROP TABLE gold.funnel_daily")  # the asset itself need not exist
    shown = lineage("gold/funnel_daily", "--columns", "--json", "--upstream-only")
    assert shown.returncode == 0, shown.stderr
    columns = {c["column"]: c for c in json.loads(shown.stdout)["columns"]}
    assert columns["revenue"]["origins"] == ["silver/events.event_type", "silver/events.revenue"]
    assert columns["purchases"]["lineage"]["sources"][0]["name"] == "gold/sessions.purchases"

    text = lineage("gold/funnel_daily", "--columns", "--upstream-only")
    assert "    └── <- silver/events.revenue" in text.stdout

    with duckdb.connect(str(settings.warehouse_path)) as conn:
        conn.execute("DROP TABLE gold.sessions")
    gone = lineage("gold/funnel_daily", "--columns")
    assert gone.returncode == 1
    assert "materialize gold/sessions first" in gone.stderr
