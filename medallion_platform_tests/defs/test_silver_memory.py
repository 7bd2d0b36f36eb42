"""The silver asset applies its contract under the warehouse's silver memory bound.

The bound comes from the platform's settings (``MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT``) or the
warehouse resource's ``silver_memory_limit``, and reaches ``apply_contract`` through the
engine. DuckDB reports the limit in force: the contract's rule compares it with the bound, so
a run under the warehouse's own limit quarantines every row.
"""

from __future__ import annotations

import pytest
from dagster import AssetKey, materialize

from medallion_platform.connectors.files import FileFeed, ingest_files
from medallion_platform.contracts import Column, Contract, Rule
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.defs.silver import build_silver_assets
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.conftest import write_csv

CONTRACT = Contract(
    name="gear",
    description="gear prices",
    source="files_gear",
    business_key=["sku"],
    columns=[Column(name="sku"), Column(name="price", type="integer")],
    rules=[Rule(name="bounded", sql="current_setting('memory_limit') = '16.0 MiB'")],
)


@pytest.mark.parametrize("set_by", ["environment", "resource"])
def test_the_silver_asset_runs_its_contract_under_the_bound(
    warehouse: Warehouse,
    settings: PlatformSettings,
    monkeypatch: pytest.MonkeyPatch,
    set_by: str,
) -> None:
    write_csv(settings.landing_dir, "gear/1.csv", "sku,price\nA,1\nB,2\n")
    feed = FileFeed(name="gear", description="x", folder="gear", contract="gear")
    assert [f.status for f in ingest_files(warehouse, feed, settings.landing_dir).files] == [
        "loaded"
    ]
    fields = {"path": str(settings.warehouse_path), "memory_limit": "1GiB"}
    if set_by == "environment":
        monkeypatch.setenv("MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT", "16MiB")
    else:
        fields["silver_memory_limit"] = "16MiB"
    result = materialize(
        [build_silver_assets(CONTRACT, AssetKey(["bronze", "files_gear"]))],
        resources={"warehouse": WarehouseResource(**fields)},
        raise_on_error=False,
    )
    assert result.success
    with warehouse.connect() as conn:
        assert conn.execute("SELECT count(*) FROM quarantine.gear").fetchone() == (0,)
        assert conn.execute("SELECT sku FROM silver.gear ORDER BY 1").fetchall() == [
            ("A",),
            ("B",),
        ]
