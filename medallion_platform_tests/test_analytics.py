"""The notebook/BI helper: read-only connections, validated names, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from medallion_platform import analytics
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import WarehouseBusyError
from medallion_platform.warehouse.identifiers import InvalidIdentifierError
from medallion_platform_tests.reports import make_warehouse


@pytest.fixture
def gold(settings: PlatformSettings) -> Path:
    """The tiny gold dataset in the warehouse of the test's home (MEDALLION_HOME)."""
    return make_warehouse(settings.warehouse_path, "tiny")


def test_connect_is_read_only(gold: Path) -> None:
    with analytics.connect() as conn:  # MEDALLION_HOME, set by the settings fixture
        assert conn.execute("SELECT count(*) FROM gold.daily_revenue").fetchone() == (3,)
        for statement in (
            "DELETE FROM gold.daily_revenue",
            "CREATE TABLE gold.scratch (a INTEGER)",
            "DROP TABLE ml.churn_scores",
        ):
            with pytest.raises(duckdb.Error, match="read-only"):
                conn.execute(statement)
    with duckdb.connect(str(gold), read_only=True) as check:
        assert check.execute("SELECT count(*) FROM gold.daily_revenue").fetchone() == (3,)


def test_connect_takes_a_home(gold: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDALLION_HOME", str(tmp_path / "elsewhere"))
    with analytics.connect(gold.parent) as conn:
        assert conn.execute("SELECT count(*) FROM ml.churn_scores").fetchone() == (4,)
    assert analytics.warehouse_path(str(gold.parent)) == gold


def test_missing_warehouse_says_how_to_build_one(settings: PlatformSettings) -> None:
    with pytest.raises(FileNotFoundError, match=r"No warehouse at .*warehouse\.duckdb.*make demo"):
        analytics.connect()
    assert not settings.warehouse_path.exists()  # read-only never creates the file


def test_table_reads_validated_names(gold: Path) -> None:
    with analytics.connect() as conn:
        revenue = analytics.table("gold.daily_revenue", conn)
        assert list(revenue.columns)[:3] == ["date", "currency", "orders"]
        assert len(revenue) == 3 and revenue["net"].sum() == pytest.approx(1464.5)
        assert len(analytics.table("daily_revenue", conn, limit=2)) == 2  # gold by default
        for bad in ("gold.daily_revenue; DROP TABLE x", 'gold."x"', "Gold.daily_revenue"):
            with pytest.raises(InvalidIdentifierError):
                analytics.table(bad, conn)
        with pytest.raises(ValueError, match=r"schema\.table"):
            analytics.table("a.b.c", conn)
        with pytest.raises(LookupError, match=r"No table gold\.nope .*gold\.daily_revenue"):
            analytics.table("gold.nope", conn)
    # Without a connection, one is opened and closed around the read.
    assert len(analytics.table("ml.churn_scores")) == 4


def test_tables_lists_gold_and_ml_with_row_counts(gold: Path) -> None:
    with duckdb.connect(str(gold)) as conn:  # a layer table that is not for analysts
        conn.execute("CREATE SCHEMA silver; CREATE TABLE silver.orders (a INTEGER)")
    listing = analytics.tables()
    assert list(listing.columns) == ["name", "schema", "table", "rows"]
    assert dict(zip(listing["name"], listing["rows"], strict=True)) == {
        "gold.customer_360": 4,
        "gold.daily_revenue": 3,
        "gold.funnel_daily": 2,
        "gold.marketing_roas_daily": 4,
        "ml.churn_scores": 4,
    }


def test_a_writer_in_another_process_makes_connect_fail_clearly(gold: Path) -> None:
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', "
            "flush=True); sys.stdin.read()",
            str(gold),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        with pytest.raises(WarehouseBusyError, match="retry when the run has finished"):
            analytics.connect(lock_timeout_s=0.3)
    finally:
        writer.stdin.close()  # the writer exits at end of input, releasing the lock
        writer.wait(timeout=30)
    with analytics.connect() as conn:
        assert conn.execute("SELECT count(*) FROM gold.funnel_daily").fetchone() == (2,)
