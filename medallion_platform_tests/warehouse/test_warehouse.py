"""The Warehouse: layout, transactions, schema evolution, identifiers and the file lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medallion_platform.settings import MEMORY_FRACTION, machine_memory_bytes
from medallion_platform.warehouse import LAYER_SCHEMAS, Warehouse, WarehouseBusyError
from medallion_platform.warehouse.identifiers import (
    InvalidIdentifierError,
    normalize_column_name,
    qualified,
    quote,
    validate_identifier,
)
from medallion_platform.warehouse.warehouse import (
    add_missing_columns,
    get_watermark,
    next_batch_id,
    next_batch_ids,
    set_watermark,
    table_columns,
    table_exists,
)

META_TABLES = {"batches", "files", "record_fields", "positions", "watermarks", "silver_runs"}


def schemas(warehouse: Warehouse) -> set[str]:
    with warehouse.connect() as conn:
        rows = conn.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    return {r[0] for r in rows}


def meta_tables(warehouse: Warehouse) -> set[str]:
    with warehouse.connect() as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '_meta'"
        ).fetchall()
    return {r[0] for r in rows}


# --- layout and transactions ---------------------------------------------------------------


def test_ensure_layout_creates_the_layers_and_is_idempotent(warehouse: Warehouse) -> None:
    assert not warehouse.path.exists()
    warehouse.ensure_layout()
    assert warehouse.path.is_file()
    assert set(LAYER_SCHEMAS) == {"bronze", "silver", "gold", "quarantine", "_meta"}
    assert set(LAYER_SCHEMAS) <= schemas(warehouse)
    assert meta_tables(warehouse) == META_TABLES

    with warehouse.transaction() as conn:
        first = next_batch_id(conn, "files:products", "run-1")
        set_watermark(conn, "silver.products", first)

    warehouse.ensure_layout()  # again: nothing is reset
    warehouse.ensure_layout()

    assert meta_tables(warehouse) == META_TABLES
    with warehouse.transaction() as conn:
        assert get_watermark(conn, "silver.products") == first
        assert next_batch_id(conn, "files:products", "run-2") == first + 1
        assert conn.execute("SELECT count(*) FROM _meta.batches").fetchone()[0] == 2


def test_a_group_of_batch_ids_continues_the_sequence_and_records_each(
    warehouse: Warehouse,
) -> None:
    """``next_batch_ids`` (a group of small files, one id each) takes the next ids in order,
    each recorded in ``_meta.batches`` like ``next_batch_id``'s, and the one after follows."""
    warehouse.ensure_layout()
    with warehouse.transaction() as conn:
        first = next_batch_id(conn, "files:products", "run-1")
        group = next_batch_ids(conn, "files:ad_spend", "run-2", 5)
        after = next_batch_id(conn, "files:products", "run-2")
        recorded = conn.execute(
            "SELECT batch_id, source, run_id FROM _meta.batches ORDER BY batch_id"
        ).fetchall()
    assert group == list(range(first + 1, first + 6)) and after == first + 6
    assert recorded == [
        (first, "files:products", "run-1"),
        *[(b, "files:ad_spend", "run-2") for b in group],
        (after, "files:products", "run-2"),
    ]


def test_watermark_defaults_to_zero_and_is_replaced(warehouse: Warehouse) -> None:
    warehouse.ensure_layout()
    with warehouse.transaction() as conn:
        assert get_watermark(conn, "silver.x") == 0
        set_watermark(conn, "silver.x", 7)
        set_watermark(conn, "silver.x", 9)
        assert get_watermark(conn, "silver.x") == 9
        assert conn.execute("SELECT count(*) FROM _meta.watermarks").fetchone()[0] == 1


def test_transaction_commits_on_success(warehouse: Warehouse) -> None:
    with warehouse.transaction() as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
    with warehouse.connect() as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_transaction_rolls_back_on_exception(warehouse: Warehouse) -> None:
    warehouse.ensure_layout()
    with warehouse.transaction() as conn:
        conn.execute("CREATE TABLE gold.t AS SELECT 1 AS x")

    with pytest.raises(ZeroDivisionError), warehouse.transaction() as conn:
        conn.execute("INSERT INTO gold.t VALUES (2)")
        conn.execute("CREATE TABLE gold.u (y INTEGER)")
        set_watermark(conn, "silver.x", 5)
        _ = 1 / 0

    with warehouse.transaction() as conn:
        assert conn.execute("SELECT x FROM gold.t").fetchall() == [(1,)]
        assert not table_exists(conn, "gold", "u")
        assert get_watermark(conn, "silver.x") == 0


# --- schema evolution ----------------------------------------------------------------------


def test_add_missing_columns_adds_and_never_drops(warehouse: Warehouse) -> None:
    with warehouse.transaction() as conn:
        conn.execute("CREATE TABLE t (a VARCHAR, b BIGINT)")
        conn.execute("INSERT INTO t VALUES ('x', 1)")
        added = add_missing_columns(
            conn, "main", "t", {"b": "BIGINT", "c": "DECIMAL(12,2)", "d": "VARCHAR[]"}
        )
        assert added == ["c", "d"]
        # Columns left out are kept, and columns already there are not added twice.
        assert add_missing_columns(conn, "main", "t", {"a": "VARCHAR"}) == []
        assert table_columns(conn, "main", "t") == {
            "a": "VARCHAR",
            "b": "BIGINT",
            "c": "DECIMAL(12,2)",
            "d": "VARCHAR[]",
        }
        assert conn.execute("SELECT * FROM t").fetchall() == [("x", 1, None, None)]


@pytest.mark.parametrize("dtype", ["BIGINT; DROP TABLE t", "INT) --", "VARCHAR DEFAULT 'x'"])
def test_add_missing_columns_rejects_what_is_not_a_type(warehouse: Warehouse, dtype: str) -> None:
    with warehouse.transaction() as conn:
        conn.execute("CREATE TABLE t (a VARCHAR)")
        with pytest.raises(ValueError, match="not a plain DuckDB column type"):
            add_missing_columns(conn, "main", "t", {"b": dtype})
        assert list(table_columns(conn, "main", "t")) == ["a"]


def test_add_missing_columns_rejects_unsafe_column_names(warehouse: Warehouse) -> None:
    with warehouse.transaction() as conn:
        conn.execute("CREATE TABLE t (a VARCHAR)")
        with pytest.raises(InvalidIdentifierError):
            add_missing_columns(conn, "main", "t", {'b" VARCHAR, "c': "VARCHAR"})


def test_add_missing_columns_accepts_types_as_duckdb_describes_them(warehouse: Warehouse) -> None:
    with warehouse.transaction() as conn:
        conn.execute("CREATE TABLE t (a VARCHAR)")
        described = conn.execute("DESCRIBE SELECT now() AS seen_at").fetchone()[1]
        assert described == "TIMESTAMP WITH TIME ZONE"
        assert add_missing_columns(conn, "main", "t", {"seen_at": described}) == ["seen_at"]


# --- identifiers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "_x", "orders_2024", "a" * 63, "_"])
def test_validate_identifier_accepts_plain_names(name: str) -> None:
    assert validate_identifier(name) == name
    assert quote(name) == f'"{name}"'


@pytest.mark.parametrize(
    "name",
    [
        "x; drop",
        "x;drop table y",
        "A",
        "Orders",
        "1a",
        '"x"',
        'x"y',
        "x'y",
        "x y",
        "x-y",
        "x.y",
        "",
        "a" * 64,
        "é",
    ],
)
def test_validate_identifier_rejects_anything_else(name: str) -> None:
    with pytest.raises(InvalidIdentifierError, match="not a valid identifier"):
        validate_identifier(name)
    with pytest.raises(InvalidIdentifierError):
        quote(name)


def test_validate_identifier_rejects_non_strings() -> None:
    with pytest.raises(InvalidIdentifierError):
        validate_identifier(None)  # type: ignore[arg-type]


def test_validate_identifier_rejects_a_trailing_newline() -> None:
    with pytest.raises(InvalidIdentifierError):
        validate_identifier("users\n")


def test_qualified_quotes_both_parts() -> None:
    assert qualified("silver", "products") == '"silver"."products"'
    with pytest.raises(InvalidIdentifierError):
        qualified("silver", "products; drop")


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Unit Price ($)", "unit_price"),
        ("Product Name", "product_name"),
        ("Weight (kg)", "weight_kg"),
        ("  SKU  ", "sku"),
        ("Updated At", "updated_at"),
        ("already_fine", "already_fine"),
        ("2024 Sales", "_2024_sales"),
        ("Größe", "gr_e"),
        ("$$$", "column"),
        ("", "column"),
        ("x" * 80, "x" * 63),
        ('a"; DROP TABLE t; --', "a_drop_table_t"),
    ],
)
def test_normalize_column_name(header: str, name: str) -> None:
    assert normalize_column_name(header) == name
    assert validate_identifier(normalize_column_name(header))


# --- the file lock, with a real second process ---------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    import duckdb

    conn = duckdb.connect(sys.argv[1])
    conn.execute("CREATE TABLE IF NOT EXISTS held AS SELECT 1 AS x")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.close()
    """
)


def test_a_second_writer_waits_for_the_lock_or_gives_up_clearly(tmp_path: Path) -> None:
    path = tmp_path / "wh" / "warehouse.duckdb"
    Warehouse(path).ensure_layout()
    hold_s = 2.5
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(hold_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        locked_at = time.monotonic()
        assert line == "locked", child.stderr.read() if child.stderr else line

        with (
            pytest.raises(WarehouseBusyError) as busy,
            Warehouse(path, lock_timeout_s=0.5).connect(),
        ):
            pytest.fail("connected while another process holds the write lock")
        message = str(busy.value)
        assert str(path) in message
        assert "one writer at a time" in message
        assert f"held by process {child.pid}" in message
        assert time.monotonic() - locked_at >= 0.5
        assert child.poll() is None, "the holder should still be running"

        with Warehouse(path, lock_timeout_s=20).connect() as conn:
            waited = time.monotonic() - locked_at
            assert conn.execute("SELECT x FROM held").fetchall() == [(1,)]
        assert waited >= hold_s * 0.75, f"connected after {waited:.2f}s: it did not wait"
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def test_open_errors_other_than_the_lock_are_not_retried(tmp_path: Path) -> None:
    not_a_db = tmp_path / "warehouse.duckdb"
    not_a_db.write_bytes(b"this is not a duckdb file" * 200)
    started = time.monotonic()
    with pytest.raises(Exception) as info, Warehouse(not_a_db, lock_timeout_s=30).connect():
        pass
    assert not isinstance(info.value, WarehouseBusyError)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("name", ["bronze.duckdb", "silver.duckdb", "gold.duckdb"])
def test_a_warehouse_file_named_after_a_layer_is_refused(tmp_path, name) -> None:
    """DuckDB names the catalog after the file: bronze.duckdb makes bronze.x ambiguous."""
    with pytest.raises(ValueError, match="cannot be named after a layer"):
        Warehouse(tmp_path / name)


def test_duckdb_memory_defaults_to_a_quarter_of_the_machine_and_spills_beside_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDALLION_DUCKDB_MEMORY_LIMIT", raising=False)
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    with warehouse.connect() as conn:
        limit, temp = conn.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
    assert temp == str(tmp_path / "warehouse.duckdb.tmp")
    quarter = machine_memory_bytes() * MEMORY_FRACTION
    assert abs(_bytes(limit) - quarter) < 0.05 * quarter, limit  # DuckDB shows 1 decimal


def _bytes(size: str) -> float:
    number, unit = size.split()
    return float(number) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[unit]


SPILL = """
import resource, sys
from medallion_platform.warehouse import Warehouse
with Warehouse(sys.argv[1]).connect() as conn:
    conn.execute(
        "CREATE TABLE t AS SELECT i, repeat(md5(i::VARCHAR), 4) AS s FROM range(1500000) r(i)"
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.execute("CREATE TABLE u AS SELECT * FROM t ORDER BY s")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(conn.execute("SELECT count(*) FROM u").fetchone()[0], grown // 1024)
"""


def test_the_memory_limit_from_the_environment_makes_a_big_sort_spill_instead_of_grow(
    tmp_path: Path,
) -> None:
    """A sort of ~200 MB under MEDALLION_DUCKDB_MEMORY_LIMIT=128MB: every row arrives and the
    process grows by far less than the data (DuckDB wrote the rest to its temp directory)."""
    env = {**os.environ, "MEDALLION_DUCKDB_MEMORY_LIMIT": "128MB"}
    done = subprocess.run(
        [sys.executable, "-c", SPILL, str(tmp_path / "w.duckdb")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows, grown_mib = map(int, done.stdout.split()[-2:])  # after any progress bar
    assert rows == 1_500_000
    assert grown_mib < 150, f"the sort grew the process by {grown_mib} MiB"
