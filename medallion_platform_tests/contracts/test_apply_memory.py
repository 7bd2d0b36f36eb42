"""apply_contract under the warehouse's silver memory bound, on a real DuckDB file.

What DuckDB's limit is while silver's statements run is read by DuckDB itself: the contract's
rule compares ``current_setting('memory_limit')`` with the bound, so a row is quarantined by
any statement that checks rows under another limit (the streamed run's passes, the merge's
``_checked``); a rule that raises carries the limit in its message.
"""

from __future__ import annotations

import duckdb
import pytest

from medallion_platform.connectors.files import FileFeed, ingest_files
from medallion_platform.contracts import Column, Contract, Rule, apply_contract
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.warehouse import transaction
from medallion_platform_tests.conftest import write_csv

FEED = FileFeed(name="gear", description="x", folder="gear", contract="gear")


def _contract(rule_sql: str) -> Contract:
    return Contract(
        name="gear",
        description="gear prices",
        source="files_gear",
        business_key=["sku"],
        columns=[Column(name="sku"), Column(name="price", type="integer")],
        rules=[Rule(name="limit_in_force", sql=rule_sql)],
    )


def _drop(warehouse: Warehouse, settings: PlatformSettings, name: str, text: str) -> None:
    write_csv(settings.landing_dir, f"gear/{name}", "sku,price\n" + text)
    report = ingest_files(warehouse, FEED, settings.landing_dir, [f"gear/{name}"])
    assert [f.status for f in report.files] == ["loaded"]


def _limit(conn: duckdb.DuckDBPyConnection) -> str:
    return conn.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def _tables(conn: duckdb.DuckDBPyConnection) -> tuple[list[tuple], int]:
    silver = conn.execute("SELECT sku, price FROM silver.gear ORDER BY sku").fetchall()
    return silver, conn.execute("SELECT count(*) FROM quarantine.gear").fetchone()[0]


def test_every_run_holds_the_bound_and_gives_the_configured_limit_back(
    warehouse: Warehouse, settings: PlatformSettings
) -> None:
    contract = _contract("current_setting('memory_limit') = '16.0 MiB'")
    silver_run = Warehouse(
        settings.warehouse_path, memory_limit="1GiB", silver_memory_limit="16MiB"
    )
    _drop(warehouse, settings, "1.csv", "A,1\nB,2\nA,3\n")
    with silver_run.connect() as conn:
        with transaction(conn):  # a first run: streamed into the empty silver table
            first = apply_contract(conn, contract, memory=silver_run.silver_memory)
        assert _limit(conn) == "1.0 GiB"
        assert (first.inserted, first.superseded, first.quarantined) == (2, 1, 0)
    _drop(warehouse, settings, "2.csv", "B,5\nC,6\n")
    with silver_run.connect() as conn:
        with transaction(conn):  # merged with the stored versions through _checked
            second = apply_contract(conn, contract, memory=silver_run.silver_memory)
            assert _limit(conn) == "1.0 GiB"  # back before the caller's commit
        assert (second.inserted, second.updated, second.quarantined) == (1, 1, 0)
        assert _tables(conn) == ([("A", 3), ("B", 5), ("C", 6)], 0)


def test_a_run_without_a_bound_or_under_a_lower_limit_keeps_the_limit(
    warehouse: Warehouse, settings: PlatformSettings
) -> None:
    _drop(warehouse, settings, "1.csv", "A,1\n")
    low = Warehouse(settings.warehouse_path, memory_limit="8MiB", silver_memory_limit="16MiB")
    with low.connect() as conn, transaction(conn):
        apply_contract(
            conn,
            _contract("current_setting('memory_limit') = '8.0 MiB'"),
            memory=low.silver_memory,
        )
        assert _limit(conn) == "8.0 MiB"
        assert _tables(conn) == ([("A", 1)], 0)
    unbounded = Warehouse(settings.warehouse_path, memory_limit="1GiB")
    with unbounded.connect() as conn, transaction(conn):
        apply_contract(conn, _contract("current_setting('memory_limit') = '1.0 GiB'"))
        assert _tables(conn) == ([("A", 1)], 0)  # a new rule: rebuilt, and no row fails it


def test_a_run_that_raises_under_the_bound_gives_the_configured_limit_back(
    warehouse: Warehouse, settings: PlatformSettings
) -> None:
    """The error aborts the caller's transaction: its connection refuses every statement
    (``SET`` too) until ROLLBACK, and the caller's error must still be the run's own."""
    _drop(warehouse, settings, "1.csv", "A,1\n")
    contract = _contract("error('limit in force: ' || current_setting('memory_limit')) IS NULL")
    silver_run = Warehouse(
        settings.warehouse_path, memory_limit="1GiB", silver_memory_limit="16MiB"
    )
    with silver_run.connect() as conn:
        with (
            pytest.raises(duckdb.Error, match=r"limit in force: 16\.0 MiB"),
            transaction(conn),
        ):
            apply_contract(conn, contract, memory=silver_run.silver_memory)
        assert _limit(conn) == "1.0 GiB"
        assert conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'silver'"
        ).fetchone() == (0,)  # rolled back: the run left nothing
