"""DuckDB's memory_limit lowered for a block and restored (``memory_bound``), on a real file.

The limit is restored from the configured value, not read back (DuckDB reads it rounded),
and through a cursor of its own: a statement that fails inside a transaction aborts it, and
the transaction's own connection then refuses even ``SET`` until the caller rolls back.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from medallion_platform.settings import SILVER_MEMORY_LIMIT, PlatformSettings
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.memory import memory_bound, size_bytes
from medallion_platform.warehouse.warehouse import transaction

MIB = 2**20


def _limit(conn: duckdb.DuckDBPyConnection) -> str:
    """DuckDB's memory_limit as it shows it (``1.0 GiB``)."""
    return conn.execute("SELECT current_setting('memory_limit')").fetchone()[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4GB", 4 * 10**9), ("6026MiB", 6026 * MIB), ("1.5 GiB", int(1.5 * 2**30)), ("x", None)],
)
def test_sizes_read_as_duckdb_spells_them(text: str, expected: int | None) -> None:
    assert size_bytes(text) == expected


def test_the_configured_limit_comes_back_exactly_not_as_duckdb_rounds_it(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb", memory_limit="6026MiB")
    with warehouse.connect() as conn:
        configured = _limit(conn)
        with memory_bound(conn, warehouse.memory_limit, "16MiB", what="test"):
            assert _limit(conn) == "16.0 MiB"
        # what a restore from the shown value would give: one step lower each time
        assert configured == "5.8 GiB"
        assert _limit(conn) == configured
        conn.execute(f"SET memory_limit = '{configured}'")
        assert _limit(conn) != configured


def test_a_statement_that_fails_in_a_transaction_still_gets_the_limit_back(
    tmp_path: Path,
) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb", memory_limit="1GiB")
    with warehouse.connect() as conn:
        with (
            pytest.raises(duckdb.ConversionException, match="'x'"),  # the block's own error
            transaction(conn),
            memory_bound(conn, warehouse.memory_limit, 16 * MIB, what="test"),
        ):
            conn.execute("CREATE TABLE t AS SELECT 1 AS a")
            conn.execute("SELECT CAST('x' AS INTEGER)")
        assert _limit(conn) == "1.0 GiB"
        assert conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 't'"
        ).fetchone() == (0,)


def test_a_configured_limit_below_the_bound_is_kept(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb", memory_limit="8MiB")
    with warehouse.connect() as conn:
        with memory_bound(conn, warehouse.memory_limit, "16MiB", what="test"):
            assert _limit(conn) == "8.0 MiB"
        assert _limit(conn) == "8.0 MiB"


def test_silver_memory_limit_defaults_and_is_overridden_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT", raising=False)
    assert Warehouse(tmp_path / "a.duckdb").silver_memory_limit == SILVER_MEMORY_LIMIT == "1GiB"
    monkeypatch.setenv("MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT", "512MiB")
    assert PlatformSettings.from_env().duckdb_silver_memory_limit == "512MiB"
    warehouse = Warehouse(tmp_path / "a.duckdb", memory_limit="4GB")
    assert warehouse.silver_memory == ("4GB", "512MiB")
    explicit = Warehouse(tmp_path / "a.duckdb", silver_memory_limit="2GiB")
    assert explicit.silver_memory_limit == "2GiB"  # the resource's field wins over the env
    monkeypatch.setenv("MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT", "a lot")
    with pytest.raises(ValueError, match=r"'a lot'.*MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT"):
        Warehouse(tmp_path / "a.duckdb")
