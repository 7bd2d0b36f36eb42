"""Contract checks pass on a silver table built by apply_contract and fail when it is tampered."""

from __future__ import annotations

import pytest

from medallion_platform.connectors.files import FileFeed
from medallion_platform.connectors.files.loader import ingest_files
from medallion_platform.contracts import CheckOutcome, Contract, apply_contract, run_contract_checks
from medallion_platform.contracts.checks import check_names
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.conftest import write_csv

PRODUCTS = (
    "sku,name,category,brand,unit_price,currency,weight_kg,active,updated_at\n"
    "SKU-000001,Dome Tent,tents,Northpeak,249.99,USD,2.35,true,2026-10-01T08:00:00\n"
    "SKU-000002,Quilt,sleeping_bags,Bergsjö,299.00,EUR,0.80,true,2026-10-01T08:00:00\n"
    "SKU-000003,Mug,camp_kitchen,,9.99,USD,0.20,,2026-10-01T08:00:00\n"
)
AD_SPEND = (
    "date,channel,campaign,spend,impressions,clicks\n"
    "2026-10-01,email,fall_01,1.00,100,1\n"
    "2026-10-01,email,fall_02,2.00,200,2\n"
)


@pytest.fixture
def silver(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    ad_spend_feed: FileFeed,
    products_contract: Contract,
    ad_spend_contract: Contract,
) -> Warehouse:
    """A warehouse with clean silver.products (3 rows) and silver.ad_spend (2 rows)."""
    for feed, text in ((products_feed, PRODUCTS), (ad_spend_feed, AD_SPEND)):
        write_csv(settings.landing_dir, f"{feed.folder}/clean.csv", text)
        report = ingest_files(warehouse, feed, settings.landing_dir)
        assert report.count("loaded") == 1
    with warehouse.transaction() as conn:
        assert apply_contract(conn, products_contract).quarantined == 0
        assert apply_contract(conn, ad_spend_contract).quarantined == 0
    return warehouse


def checks(warehouse: Warehouse, contract: Contract, tamper: str | None = None) -> dict:
    with warehouse.transaction() as conn:
        if tamper:
            conn.execute(tamper)
        outcomes = run_contract_checks(conn, contract)
    assert all(isinstance(o, CheckOutcome) for o in outcomes)
    return {o.name: o for o in outcomes}


def test_all_checks_pass_on_clean_silver(
    silver: Warehouse, products_contract: Contract, ad_spend_contract: Contract
) -> None:
    for contract in (products_contract, ad_spend_contract):
        outcomes = checks(silver, contract)
        assert list(outcomes) == check_names(contract)
        for outcome in outcomes.values():
            assert outcome.passed, outcome
            assert outcome.failing_rows == 0
            assert outcome.sample == []
    assert "found 3" in checks(silver, products_contract)["row_count"].description


def test_duplicate_business_key_fails_unique_key(
    silver: Warehouse, products_contract: Contract
) -> None:
    outcomes = checks(
        silver,
        products_contract,
        "INSERT INTO silver.products SELECT * FROM silver.products WHERE sku = 'SKU-000002'",
    )
    unique = outcomes["unique_key"]
    assert not unique.passed
    assert unique.failing_rows == 1
    assert unique.sample == ["('SKU-000002', 2)"]
    assert all(o.passed for name, o in outcomes.items() if name != "unique_key")


def test_duplicate_composite_key_fails_unique_key(
    silver: Warehouse, ad_spend_contract: Contract
) -> None:
    outcomes = checks(
        silver,
        ad_spend_contract,
        "INSERT INTO silver.ad_spend SELECT * REPLACE (spend * 2 AS spend) FROM silver.ad_spend",
    )
    unique = outcomes["unique_key"]
    assert not unique.passed
    assert unique.failing_rows == 2
    assert len(unique.sample) == 2
    assert any("fall_01" in s for s in unique.sample)
    assert "date, channel, campaign" in unique.description


def test_null_in_required_column_fails_not_null(
    silver: Warehouse, products_contract: Contract
) -> None:
    outcomes = checks(
        silver, products_contract, "UPDATE silver.products SET name = NULL WHERE sku = 'SKU-000003'"
    )
    not_null = outcomes["not_null"]
    assert not not_null.passed
    assert not_null.failing_rows == 1
    assert not_null.sample == ["('SKU-000003',)"]
    # brand is optional: NULLs there are fine, and the description names the required columns.
    assert "brand" not in not_null.description and "name" in not_null.description
    assert outcomes["unique_key"].passed and outcomes["accepted_values"].passed


def test_value_outside_the_enum_fails_accepted_values(
    silver: Warehouse, products_contract: Contract
) -> None:
    outcomes = checks(
        silver,
        products_contract,
        "UPDATE silver.products SET category = 'kayaks' WHERE sku IN ('SKU-000001', 'SKU-000003')",
    )
    accepted = outcomes["accepted_values"]
    assert not accepted.passed
    assert accepted.failing_rows == 2
    assert sorted(accepted.sample) == ["('SKU-000001',)", "('SKU-000003',)"]
    assert outcomes["not_null"].passed


def test_too_few_rows_fails_row_count(silver: Warehouse, products_contract: Contract) -> None:
    demanding = products_contract.model_copy(update={"min_rows": 4})
    outcomes = checks(silver, demanding)
    row_count = outcomes["row_count"]
    assert not row_count.passed
    assert row_count.failing_rows == 1
    assert "at least 4" in row_count.description and "found 3" in row_count.description
    assert checks(silver, products_contract.model_copy(update={"min_rows": 3}))["row_count"].passed


def test_emptied_table_fails_row_count(silver: Warehouse, ad_spend_contract: Contract) -> None:
    outcomes = checks(silver, ad_spend_contract, "DELETE FROM silver.ad_spend")
    assert not outcomes["row_count"].passed
    assert outcomes["unique_key"].passed and outcomes["not_null"].passed


def test_check_names_match_the_checks_that_run(
    silver: Warehouse, products_contract: Contract, ad_spend_contract: Contract
) -> None:
    assert check_names(products_contract) == [
        "unique_key",
        "not_null",
        "accepted_values",
        "row_count",
    ]
    without_enums = Contract.model_validate(
        {
            **ad_spend_contract.model_dump(),
            "columns": [
                {**c, "accepted_values": None} for c in ad_spend_contract.model_dump()["columns"]
            ],
        }
    )
    assert check_names(without_enums) == ["unique_key", "not_null", "row_count"]
    assert list(checks(silver, without_enums)) == check_names(without_enums)
