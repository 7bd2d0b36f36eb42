"""A contract applied on Spark agrees with DuckDB's apply: typed rows, quarantine reasons and
raw text, and the winner per key, over the same bronze batches.

The bronze is hand-written products text (two batches, so the second run merges with stored
silver) with the cases strict parsing exists for: '19.999' is not a decimal(12,2), '2026-1-2'
is not a date, an offset is converted to UTC, 'yes' is a boolean and 'maybe' is not; and
versions of one SKU whose latest_by order differs from their arrival order.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from medallion_platform.config import platform_config
from medallion_platform.contracts.apply import apply_contract
from medallion_platform.contracts.spark import apply_contract_spark
from medallion_platform.engines.duckdb_lake import export_bronze, lake_relation
from medallion_platform.engines.lake import Lake
from medallion_platform_tests.engines.compare import differences, table_rows

CONTRACT = next(c for c in platform_config().contracts if c.name == "products")
COLUMNS = ["sku", "name", "category", "brand", "unit_price", "currency", "weight_kg", "active",
           "updated_at"]  # fmt: skip
BATCH_1 = [
    # A clean row; its later version arrives first in batch 2 but is older by updated_at.
    ("SKU-000001", "Tent", "tents", "Acme", "199.00", "USD", "2.50", "true", "2026-03-01 10:00"),
    # Offset converted to UTC (2026-03-01 04:30 UTC); 'yes' is true; '12.990' is 12.99.
    ("SKU-000002", "Bag", "backpacks", "Acme", "12.990", "EUR", "", "yes",
     "2026-03-01T10:00:00+05:30"),
    # Three reasons at once: a price with too many decimals, a bad category, a bad date.
    ("SKU-000003", "Stove", "stoves", "Acme", "19.999", "USD", "1", "maybe", "2026-3-1"),
    # Pattern broken and required name missing.
    ("sku-4", "", "tents", "Acme", "5", "USD", "1", "no", "2026-03-02"),
    # Below the minimum.
    ("SKU-000005", "Mat", "accessories", "Acme", "-1.50", "GBP", "0.4", "0", "2026-03-02"),
]  # fmt: skip
BATCH_2 = [
    # Arrives later but is older by updated_at: the stored version stays.
    ("SKU-000001", "Tent v0", "tents", "Acme", "150.00", "USD", "2.50", "true", "2026-02-01"),
    # Newer by updated_at: replaces the stored version.
    ("SKU-000002", "Bag v2", "backpacks", "Acme", "14.00", "EUR", "0.8", "off",
     "2026-03-05 00:00:00Z"),
    # Two versions of a new SKU in one batch, the second arrival older: the first wins.
    ("SKU-000006", "Lamp new", "accessories", "Acme", "30", "USD", "", "", "2026-03-09"),
    ("SKU-000006", "Lamp old", "accessories", "Acme", "25", "USD", "", "", "2026-03-08"),
    # No updated_at: the contract requires one, so this version is quarantined, not ranked.
    ("SKU-000006", "Lamp undated", "accessories", "Acme", "20", "USD", "", "", ""),
]  # fmt: skip


def _bronze(conn: duckdb.DuckDBPyConnection, batch_id: int, rows: list[tuple]) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS bronze")
    cols = ", ".join(f"{c} VARCHAR" for c in COLUMNS)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS bronze.{CONTRACT.source} (_batch_id BIGINT, "
        f"_source VARCHAR, _row_number BIGINT, _ingested_at TIMESTAMPTZ, {cols})"
    )
    for n, row in enumerate(rows, start=1):
        conn.execute(
            f"INSERT INTO bronze.{CONTRACT.source} VALUES (?, ?, ?, now(), {', '.join('?' * 9)})",
            [batch_id, f"products_{batch_id}.csv", n, *row],
        )


def _quarantine(conn: duckdb.DuckDBPyConnection, relation: str) -> list[tuple]:
    rows = conn.execute(
        f"SELECT _batch_id, _row_number, _reason, CAST(_raw AS VARCHAR) FROM {relation} "
        "ORDER BY _batch_id, _row_number"
    ).fetchall()
    return [(b, n, reason, json.loads(raw)) for b, n, reason, raw in rows]


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory: pytest.TempPathFactory):
    from medallion_platform.engines.spark import SparkEngine

    root = tmp_path_factory.mktemp("contract_on_spark")
    conn = duckdb.connect(str(root / "warehouse.duckdb"))
    lake = Lake(root / "lake")
    engine = SparkEngine(spark, lake)
    results = []
    for batch_id, rows in ((1, BATCH_1), (2, BATCH_2)):
        _bronze(conn, batch_id, rows)
        apply_contract(conn, CONTRACT)
        assert export_bronze(conn, lake, CONTRACT.source) == [batch_id]
        results.append(apply_contract_spark(engine, CONTRACT))
    yield conn, lake, engine, results
    conn.close()


def test_silver_on_spark_equals_duckdb(runs) -> None:
    conn, lake, _, results = runs
    key = CONTRACT.business_key
    names, duck = table_rows(conn, "silver.products", key)
    spark_names, spark_rows = table_rows(conn, lake_relation(lake, "silver", "products"), key)
    assert spark_names == names
    assert differences(duck, spark_rows, names) == []
    # The winners the docstring promises, not only agreement: SKU-1 stays v1, SKU-2 is v2,
    # SKU-6 is the newest by updated_at.
    by_sku = {r[0]: r[1] for r in duck}
    assert by_sku == {"SKU-000001": "Tent", "SKU-000002": "Bag v2", "SKU-000006": "Lamp new"}
    assert [(r.from_batch_id, r.to_batch_id) for r in results] == [(0, 1), (1, 2)]


def test_quarantine_on_spark_equals_duckdb(runs) -> None:
    conn, lake, _, results = runs
    duck = _quarantine(conn, "quarantine.products")
    spark = _quarantine(conn, lake_relation(lake, "quarantine", "products"))
    assert spark == duck
    reasons = {(b, n): reason for b, n, reason, _ in duck}
    assert "unit_price: cannot parse '19.999' as decimal(12,2)" in reasons[1, 3]
    assert "category: 'stoves' is not one of" in reasons[1, 3]
    assert "updated_at: cannot parse '2026-3-1' as timestamp" in reasons[1, 3]
    assert "active: cannot parse 'maybe' as boolean" in reasons[1, 3]
    assert "does not match the expected pattern" in reasons[1, 4]
    assert "name: required value is missing" in reasons[1, 4]
    assert reasons[1, 5] == "unit_price: -1.50 is below the minimum 0"
    assert reasons[2, 5] == "updated_at: required value is missing"
    # The raw text is kept as it arrived (the blank name as NULL, the offset untouched).
    raw = {(b, n): r for b, n, _, r in duck}
    assert raw[1, 4]["name"] is None and raw[1, 3]["updated_at"] == "2026-3-1"
    assert [r.quarantined for r in results] == [3, 1]


def test_rerun_without_new_batches_changes_nothing(runs) -> None:
    conn, lake, engine, _ = runs
    before = table_rows(conn, lake_relation(lake, "silver", "products"), ["sku"])
    quarantined = _quarantine(conn, lake_relation(lake, "quarantine", "products"))
    again = apply_contract_spark(engine, CONTRACT)
    assert (again.from_batch_id, again.to_batch_id, again.rows_in) == (2, 2, 0)
    assert table_rows(conn, lake_relation(lake, "silver", "products"), ["sku"]) == before
    assert _quarantine(conn, lake_relation(lake, "quarantine", "products")) == quarantined
