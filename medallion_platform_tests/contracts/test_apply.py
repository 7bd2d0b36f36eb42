"""apply_contract on a real DuckDB file, fed through the real file loader into bronze."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.bronze import append_batch, ensure_bronze_table
from medallion_platform.connectors.files import FileFeed
from medallion_platform.connectors.files.landing import list_landing_files
from medallion_platform.connectors.files.loader import ingest_files
from medallion_platform.connectors.rest.rows import bronze_rows
from medallion_platform.connectors.rest.sync import REST_LINEAGE
from medallion_platform.contracts import Column, Contract, Rule, SilverRunStats, apply_contract
from medallion_platform.devkit.demo.generator import generate_landing_files
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.warehouse import next_batch_id
from medallion_platform_tests.conftest import write_csv

PRODUCTS = "sku,name,category,brand,unit_price,currency,weight_kg,active,updated_at\n"
AD_SPEND = "date,channel,campaign,spend,impressions,clicks\n"
PRODUCTS_FINGERPRINT = "7d5dccafe5db1701"  # products' fingerprint before keep/partition existed
CATEGORIES = (
    "tents, sleeping_bags, backpacks, footwear, apparel, climbing, camp_kitchen, accessories"
)


def load(
    warehouse: Warehouse, settings: PlatformSettings, feed: FileFeed, name: str, text: str
) -> int:
    """Drop one file for ``feed`` and load it into bronze; return its batch id."""
    write_csv(settings.landing_dir, f"{feed.folder}/{name}", text)
    report = ingest_files(warehouse, feed, settings.landing_dir, [f"{feed.folder}/{name}"])
    (outcome,) = report.files
    assert outcome.status == "loaded", outcome
    assert outcome.batch_id is not None
    return outcome.batch_id


def apply(warehouse: Warehouse, contract: Contract, *, rebuild: bool = False) -> SilverRunStats:
    with warehouse.transaction() as conn:
        return apply_contract(conn, contract, rebuild=rebuild)


def fetch(warehouse: Warehouse, sql: str, params: list | None = None) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(sql, params or []).fetchall()


def scalar(warehouse: Warehouse, sql: str) -> object:
    return fetch(warehouse, sql)[0][0]


def quarantined(warehouse: Warehouse, table: str) -> dict[int, tuple]:
    """Row number → (reason, batch id, source, raw as dict)."""
    rows = fetch(
        warehouse,
        f"SELECT _row_number, _reason, _batch_id, _source, _raw FROM quarantine.{table}",
    )
    return {n: (reason, batch, source, json.loads(raw)) for n, reason, batch, source, raw in rows}


def snapshot_tables(warehouse: Warehouse, *tables: str) -> dict[str, list[tuple]]:
    return {t: sorted(fetch(warehouse, f"SELECT * FROM {t}"), key=repr) for t in tables}


# --- typing ------------------------------------------------------------------------------


def test_values_are_typed_and_blank_strings_become_null(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    ad_spend_feed: FileFeed,
    products_contract: Contract,
    ad_spend_contract: Contract,
) -> None:
    load(
        warehouse,
        settings,
        products_feed,
        "typed.csv",
        PRODUCTS
        + "SKU-000001,Dome Tent,tents,Northpeak,249.99,USD,2.35,true,2026-10-01T08:30:00\n"
        + "SKU-000002,Liner,sleeping_bags,,  19.5 ,EUR,,FALSE,2026-10-02 09:00:01\n"
        + "SKU-000003,Mug,camp_kitchen,   ,7,GBP,0.2,,2026-10-03T00:00:00\n",
    )
    load(
        warehouse,
        settings,
        ad_spend_feed,
        "google_ads_2026-10-01.csv",
        AD_SPEND
        + "2026-10-01,google_ads,fall_tents_01,123.45,9876543210,4321\n"
        + "2026-10-01,email,,0.00,0,0\n",
    )
    products = apply(warehouse, products_contract)
    assert (products.rows_in, products.valid, products.quarantined) == (3, 3, 0)

    rows = fetch(
        warehouse,
        "SELECT sku, brand, unit_price, weight_kg, active, updated_at FROM silver.products "
        "ORDER BY sku",
    )
    assert rows == [
        (
            "SKU-000001",
            "Northpeak",
            Decimal("249.99"),
            Decimal("2.35"),
            True,
            dt.datetime(2026, 10, 1, 8, 30),
        ),
        ("SKU-000002", None, Decimal("19.50"), None, False, dt.datetime(2026, 10, 2, 9, 0, 1)),
        ("SKU-000003", None, Decimal("7.00"), Decimal("0.20"), None, dt.datetime(2026, 10, 3)),
    ]
    types = dict(
        fetch(
            warehouse,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'silver' AND table_name = 'products'",
        )
    )
    assert types["unit_price"] == "DECIMAL(12,2)"
    assert types["weight_kg"] == "DECIMAL(10,2)"
    assert types["active"] == "BOOLEAN"
    assert types["updated_at"] == "TIMESTAMP"
    assert types["sku"] == "VARCHAR"

    ads = apply(warehouse, ad_spend_contract)
    # The email row has a blank campaign: part of the key, so it is required.
    assert (ads.rows_in, ads.valid, ads.quarantined) == (2, 1, 1)
    assert fetch(warehouse, "SELECT date, spend, impressions, clicks FROM silver.ad_spend") == [
        (dt.date(2026, 10, 1), Decimal("123.45"), 9876543210, 4321)
    ]
    types = dict(
        fetch(
            warehouse,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'silver' AND table_name = 'ad_spend'",
        )
    )
    assert types["date"] == "DATE"
    assert types["impressions"] == "BIGINT"
    assert types["spend"] == "DECIMAL(14,2)"
    assert quarantined(warehouse, "ad_spend")[2][0] == "campaign: required value is missing"


# --- quarantine ----------------------------------------------------------------------------


def test_each_failure_kind_is_quarantined_with_reason_lineage_and_raw_text(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    batch = load(
        warehouse,
        settings,
        products_feed,
        "delta.csv",
        PRODUCTS
        + "SKU-000001,Dome Tent,tents,Northpeak,249.99,USD,2.35,true,2026-10-01T08:00:00\n"
        + "SKU-000002,Liner,sleeping_bags,Ridgeway,N/A,USD,0.3,true,2026-10-01T08:00:00\n"
        + 'SKU-000003,Mug,camp_kitchen,Ridgeway,"12,99",USD,0.3,true,2026-10-01T08:00:00\n'
        + "SKU-000004,Mug,camp_kitchen,Ridgeway,12.99,USD,0.3,true,not-a-date\n"
        + "SKU-000005,Kayak,kayaks,Ridgeway,399.00,USD,20,true,2026-10-01T08:00:00\n"
        + "SKU-000006,Mug,camp_kitchen,Ridgeway,-5,USD,0.3,true,2026-10-01T08:00:00\n"
        + "SKU-000007,,camp_kitchen,Ridgeway,5.00,USD,0.3,true,2026-10-01T08:00:00\n"
        + "XYZ,Mug,camp_kitchen,Ridgeway,5.00,USD,0.3,true,2026-10-01T08:00:00\n"
        + "SKU-000009,Mug,camp_kitchen,Ridgeway,5.00,USD,0.3,true,2026-10-01T08:00:00,oops\n"
        + "SKU-000010,Mug,camp_kitchen,Ridgeway,5.00,USD,0.3,yes please,2026-10-01T08:00:00\n",
    )
    stats = apply(warehouse, products_contract)

    assert (stats.rows_in, stats.valid, stats.quarantined) == (10, 1, 9)
    assert [r[0] for r in fetch(warehouse, "SELECT sku FROM silver.products")] == ["SKU-000001"]
    found = quarantined(warehouse, "products")
    expected = {
        2: "unit_price: cannot parse 'N/A' as decimal(12,2)",
        3: "unit_price: cannot parse '12,99' as decimal(12,2)",
        4: "updated_at: cannot parse 'not-a-date' as timestamp",
        5: f"category: 'kayaks' is not one of {CATEGORIES}",
        6: "unit_price: -5.00 is below the minimum 0",
        7: "name: required value is missing",
        8: "sku: 'XYZ' does not match the expected pattern",
        9: "row 9: expected 9 fields, found 10",
        10: "active: cannot parse 'yes please' as boolean",
    }
    assert {n: reason for n, (reason, *_rest) in found.items()} == expected
    for n, (_reason, batch_id, source, _raw) in found.items():
        assert batch_id == batch
        assert source == f"{products_feed.folder}/delta.csv#row={n}"
    # _raw is the bronze text, before any typing.
    assert found[2][3]["unit_price"] == "N/A"
    assert found[3][3]["unit_price"] == "12,99"
    assert found[4][3]["updated_at"] == "not-a-date"
    assert found[6][3]["unit_price"] == "-5"
    assert found[7][3]["name"] is None
    assert found[8][3]["sku"] == "XYZ"
    assert found[9][3] == {
        "sku": "SKU-000009",
        "name": "Mug",
        "category": "camp_kitchen",
        "brand": "Ridgeway",
        "unit_price": "5.00",
        "currency": "USD",
        "weight_kg": "0.3",
        "active": "true",
        "updated_at": "2026-10-01T08:00:00",
    }
    assert stats.reasons == {
        "unit_price": 3,
        "updated_at": 1,
        "category": 1,
        "name": 1,
        "sku": 1,
        "expected 9 fields": 1,
        "active": 1,
    }


def test_ad_spend_failures_include_business_rule_and_bad_date(
    warehouse: Warehouse,
    settings: PlatformSettings,
    ad_spend_feed: FileFeed,
    ad_spend_contract: Contract,
) -> None:
    batch = load(
        warehouse,
        settings,
        ad_spend_feed,
        "meta_ads_2026-10-05.csv",
        AD_SPEND
        + "2026-10-05,meta_ads,fall_tents_01,10.00,1000,20\n"
        + "2026-10-05,meta_ads,fall_tents_02,10.00,100,101\n"
        + "2026-13-01,meta_ads,fall_tents_03,10.00,1000,20\n"
        + "2026-10-05,carrier_pigeon,fall_tents_04,10.00,1000,20\n"
        + "2026-10-05,meta_ads,fall_tents_05,10.00,n/a,20\n"
        + "2026-10-05,meta_ads,fall_tents_06,10.00,1000\n",
    )
    stats = apply(warehouse, ad_spend_contract)
    found = quarantined(warehouse, "ad_spend")
    assert {n: r[0] for n, r in found.items()} == {
        2: "rule clicks_within_impressions failed: clicks <= impressions",
        3: "date: cannot parse '2026-13-01' as date",
        4: "channel: 'carrier_pigeon' is not one of google_ads, meta_ads, tiktok_ads, email",
        5: "impressions: cannot parse 'n/a' as bigint",
        6: "row 6: expected 6 fields, found 5; clicks: required value is missing",
    }
    assert {r[1] for r in found.values()} == {batch}
    assert found[2][3] == {
        "date": "2026-10-05",
        "channel": "meta_ads",
        "campaign": "fall_tents_02",
        "spend": "10.00",
        "impressions": "100",
        "clicks": "101",
    }
    assert (stats.valid, stats.quarantined) == (1, 5)
    assert stats.reasons["rule clicks_within_impressions failed"] == 1


def test_all_reasons_of_one_row_are_listed_in_column_order(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    load(
        warehouse,
        settings,
        products_feed,
        "bad.csv",
        PRODUCTS + "SKU-1,,kayaks,Brand,-1,XXX,abc,maybe,not-a-date\n",
    )
    stats = apply(warehouse, products_contract)
    ((reason, *_),) = quarantined(warehouse, "products").values()
    assert reason.split("; ") == [
        "sku: 'SKU-1' does not match the expected pattern",
        "name: required value is missing",
        f"category: 'kayaks' is not one of {CATEGORIES}",
        "unit_price: -1.00 is below the minimum 0",
        "currency: 'XXX' is not one of USD, EUR, GBP",
        "weight_kg: cannot parse 'abc' as decimal(10,2)",
        "active: cannot parse 'maybe' as boolean",
        "updated_at: cannot parse 'not-a-date' as timestamp",
    ]
    assert stats.quarantined == 1
    assert sum(stats.reasons.values()) == 8


# --- de-duplication ------------------------------------------------------------------------


def test_latest_updated_at_wins_even_when_an_older_version_arrives_later(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    row = "SKU-000001,Tent,tents,Northpeak,{price},USD,2.00,true,{at}\n"
    first = load(
        warehouse,
        settings,
        products_feed,
        "a.csv",
        PRODUCTS + row.format(price="100.00", at="2026-10-05T00:00:00"),
    )
    apply(warehouse, products_contract)

    # A later file with an OLDER updated_at must not overwrite.
    load(
        warehouse,
        settings,
        products_feed,
        "b.csv",
        PRODUCTS + row.format(price="80.00", at="2026-10-01T00:00:00"),
    )
    stats = apply(warehouse, products_contract)
    assert fetch(warehouse, "SELECT unit_price, _batch_id FROM silver.products") == [
        (Decimal("100.00"), first)
    ]
    assert (stats.inserted, stats.updated, stats.superseded) == (0, 0, 1)

    # Two versions in one file, the newer first: the newer wins, not the last row.
    third = load(
        warehouse,
        settings,
        products_feed,
        "c.csv",
        PRODUCTS
        + row.format(price="120.00", at="2026-10-09T00:00:00")
        + row.format(price="110.00", at="2026-10-07T00:00:00"),
    )
    stats = apply(warehouse, products_contract)
    assert fetch(warehouse, "SELECT unit_price, _batch_id, _row_number FROM silver.products") == [
        (Decimal("120.00"), third, 1)
    ]
    assert (stats.inserted, stats.updated, stats.superseded) == (0, 1, 2)

    # One batch of a new key, a newer version of a stored one and an older one: counted per key.
    other = "SKU-000002,Tarp,tents,Northpeak,40.00,USD,1.00,true,2026-10-02T00:00:00\n"
    load(
        warehouse,
        settings,
        products_feed,
        "d.csv",
        PRODUCTS
        + row.format(price="130.00", at="2026-10-10T00:00:00")
        + other
        + row.format(price="90.00", at="2026-10-02T00:00:00"),
    )
    stats = apply(warehouse, products_contract)
    assert (stats.inserted, stats.updated, stats.superseded) == (1, 1, 2)
    assert fetch(warehouse, "SELECT sku, unit_price FROM silver.products ORDER BY sku") == [
        ("SKU-000001", Decimal("130.00")),
        ("SKU-000002", Decimal("40.00")),
    ]


def test_without_latest_by_the_later_arriving_batch_wins(
    warehouse: Warehouse,
    settings: PlatformSettings,
    ad_spend_feed: FileFeed,
    ad_spend_contract: Contract,
) -> None:
    assert ad_spend_contract.latest_by == []
    load(
        warehouse,
        settings,
        ad_spend_feed,
        "tiktok_ads_2026-10-06.csv",
        AD_SPEND
        + "2026-10-06,tiktok_ads,brand_01,100.00,10000,100\n"
        + "2026-10-06,tiktok_ads,brand_02,50.00,5000,50\n",
    )
    apply(warehouse, ad_spend_contract)
    corrected = load(
        warehouse,
        settings,
        ad_spend_feed,
        "tiktok_ads_2026-10-06_corrected.csv",
        AD_SPEND
        + "2026-10-06,tiktok_ads,brand_01,95.00,10000,100\n"
        + "2026-10-06,tiktok_ads,brand_01,90.00,10000,100\n",
    )
    stats = apply(warehouse, ad_spend_contract)
    assert fetch(
        warehouse, "SELECT campaign, spend, _batch_id, _row_number FROM silver.ad_spend ORDER BY 1"
    ) == [
        # Within one batch, the later row wins too.
        ("brand_01", Decimal("90.00"), corrected, 2),
        ("brand_02", Decimal("50.00"), corrected - 1, 2),
    ]
    assert (stats.inserted, stats.updated, stats.superseded) == (0, 1, 2)


def test_first_run_winner_is_the_latest_valid_version_by_latest_by_then_batch_then_row(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    """A first run streams (silver is empty): the winners are chosen by row identity among
    the valid rows only. A failing version, even the newest, never wins nor hides the valid
    ones; equal ``updated_at`` goes to the later batch, then the later row."""
    row = "{sku},Tent,tents,Northpeak,{price},USD,2.00,true,2026-10-{day}T00:00:00\n"
    first = load(
        warehouse,
        settings,
        products_feed,
        "v1.csv",
        PRODUCTS
        + row.format(sku="SKU-000001", price="10.00", day="05")
        + row.format(sku="SKU-000001", price="abc", day="09")  # newest, but fails
        + row.format(sku="SKU-000002", price="20.00", day="05")
        + row.format(sku="SKU-000002", price="21.00", day="05"),  # tie: the later row
    )
    second = load(
        warehouse,
        settings,
        products_feed,
        "v2.csv",
        PRODUCTS
        + row.format(sku="SKU-000001", price="11.00", day="05")  # tie: the later batch
        + row.format(sku="SKU-000002", price="22.00", day="04")  # later batch, but older
        + row.format(sku="SKU-000003", price="30.00", day="01"),
    )
    stats = apply(warehouse, products_contract)
    assert fetch(
        warehouse,
        "SELECT sku, unit_price, _batch_id, _row_number FROM silver.products ORDER BY sku",
    ) == [
        ("SKU-000001", Decimal("11.00"), second, 1),
        ("SKU-000002", Decimal("21.00"), first, 4),
        ("SKU-000003", Decimal("30.00"), second, 3),
    ]
    assert [(n, batch) for n, (_, batch, _, _) in quarantined(warehouse, "products").items()] == [
        (2, first)
    ]
    assert (stats.rows_in, stats.valid, stats.quarantined) == (7, 6, 1)
    assert (stats.inserted, stats.updated, stats.superseded) == (3, 0, 3)


CHARGES_CONTRACT = Contract(
    name="api_charges",
    description="Charges from a paged REST endpoint, the later version wins.",
    source="api_charges",
    business_key=["id"],
    columns=[
        Column(name="id", source="_raw", json_path="$.id"),
        Column(name="amount", source="_raw", json_path="$.amount", type="integer", required=True),
    ],
)


def test_a_rest_batch_of_several_pages_keeps_every_key_although_row_numbers_repeat(
    warehouse: Warehouse,
) -> None:
    """A REST batch commits several pages; batches written before the sync numbered its
    rows across the commit numbered each page from 1 (and stay in existing warehouses), so
    ``(_batch_id, _row_number)`` can name two rows: excluding the losing version ``a``
    (page 1, row 1) must not exclude ``c`` (page 2, row 1)."""
    pages = [
        [{"id": "a", "amount": 1}, {"id": "b", "amount": 2}],
        [{"id": "c", "amount": 3}, {"id": "a", "amount": 4}],
    ]
    with warehouse.transaction() as conn:
        ensure_bronze_table(conn, "api_charges", REST_LINEAGE)
        batch = next_batch_id(conn, "api_charges", None)
        for page, records in enumerate(pages, start=1):
            numbers = list(range(1, len(records) + 1))
            rows = bronze_rows(
                records,
                numbers=numbers,
                sources=[f"/v1/charges?page={page}#row={n}" for n in numbers],
                raws=[json.dumps(r) for r in records],
                required=["id"],
                wheres=[f"record {n}" for n in numbers],
            )
            append_batch(conn, "api_charges", rows, batch_id=batch, lineage=REST_LINEAGE)
    stats = apply(warehouse, CHARGES_CONTRACT)
    assert fetch(warehouse, "SELECT id, amount, _source FROM silver.api_charges ORDER BY id") == [
        ("a", 4, "/v1/charges?page=2#row=2"),
        ("b", 2, "/v1/charges?page=1#row=2"),
        ("c", 3, "/v1/charges?page=2#row=1"),
    ]
    assert (stats.valid, stats.inserted, stats.superseded) == (4, 3, 1)


# --- drift ----------------------------------------------------------------------------------


def test_drifted_headers_map_onto_contract_columns_through_aliases(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    ad_spend_feed: FileFeed,
    products_contract: Contract,
    ad_spend_contract: Contract,
) -> None:
    load(
        warehouse,
        settings,
        products_feed,
        "catalog_full.csv",
        PRODUCTS
        + "SKU-000001,Dome Tent,tents,Northpeak,249.99,USD,2.35,true,2026-10-01T08:00:00\n",
    )
    load(
        warehouse,
        settings,
        products_feed,
        "catalog_delta.csv",
        "SKU,Product Name,Category,Brand,Price,Currency,Weight (kg),Active,Updated At,Season\n"
        "SKU-000001,Dome Tent II,tents,Northpeak,199.99,USD,2.35,false,2026-10-09T08:00:00,winter\n"
        "SKU-000002,Quilt,sleeping_bags,Bergsjö,299.00,EUR,0.8,true,2026-10-09T08:00:00,winter\n",
    )
    load(
        warehouse,
        settings,
        ad_spend_feed,
        "meta_ads_2026-10-21.csv",
        "date,channel,campaign,cost,impressions,clicks,conversions\n"
        "2026-10-21,meta_ads,holiday_tents_01,42.10,5000,60,3\n",
    )
    bronze_products = set(
        r[0]
        for r in fetch(
            warehouse,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'bronze' AND table_name = 'files_products'",
        )
    )
    assert {"price", "product_name", "season", "weight_kg", "updated_at"} <= bronze_products

    stats = apply(warehouse, products_contract)
    assert stats.quarantined == 0
    assert fetch(
        warehouse, "SELECT sku, name, unit_price, brand, active FROM silver.products ORDER BY sku"
    ) == [
        ("SKU-000001", "Dome Tent II", Decimal("199.99"), "Northpeak", False),
        ("SKU-000002", "Quilt", Decimal("299.00"), "Bergsjö", True),
    ]
    silver_columns = [
        r[0]
        for r in fetch(
            warehouse,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'silver' AND table_name = 'products' ORDER BY ordinal_position",
        )
    ]
    assert silver_columns == [c.name for c in products_contract.columns] + [
        "_batch_id",
        "_source",
        "_row_number",
    ]

    ads = apply(warehouse, ad_spend_contract)
    assert ads.quarantined == 0
    assert fetch(warehouse, "SELECT campaign, spend, clicks FROM silver.ad_spend") == [
        ("holiday_tents_01", Decimal("42.10"), 60)
    ]
    assert "conversions" not in {
        r[0]
        for r in fetch(
            warehouse,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'silver' AND table_name = 'ad_spend'",
        )
    }


# --- bookkeeping ----------------------------------------------------------------------------


def _assert_reconciles(warehouse: Warehouse, contract: Contract) -> None:
    bronze = scalar(warehouse, f"SELECT count(*) FROM bronze.{contract.source}")
    silver = scalar(warehouse, f"SELECT count(*) FROM silver.{contract.name}")
    quarantine = scalar(warehouse, f"SELECT count(*) FROM quarantine.{contract.name}")
    superseded, rows_in = fetch(
        warehouse,
        "SELECT sum(superseded), sum(rows_in) FROM _meta.silver_runs WHERE table_name = ?",
        [contract.name],
    )[0]
    assert bronze == silver + quarantine + superseded
    assert rows_in == bronze


def test_counts_reconcile_after_several_batches(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    good = "SKU-{n:06d},Item {n},tents,Northpeak,{p}.00,USD,1.00,true,2026-10-{d:02d}T00:00:00\n"
    files = [
        PRODUCTS + "".join(good.format(n=n, p=10 + n, d=1) for n in range(1, 6)),
        PRODUCTS
        + "".join(good.format(n=n, p=20 + n, d=3) for n in range(3, 9))
        + "SKU-000009,Bad,tents,X,N/A,USD,1,true,2026-10-03T00:00:00\n",
        PRODUCTS
        + "".join(good.format(n=n, p=5, d=2) for n in range(1, 5))  # older versions
        + "SKU-000010,Short,tents\n",
        PRODUCTS + "".join(good.format(n=n, p=30, d=4) for n in (1, 1, 10, 11)),
    ]
    all_stats = []
    for i, text in enumerate(files):
        load(warehouse, settings, products_feed, f"f{i}.csv", text)
        stats = apply(warehouse, products_contract)
        all_stats.append(stats)
        assert stats.rows_in == stats.valid + stats.quarantined
        assert stats.valid == stats.inserted + stats.superseded
        assert stats.updated <= stats.superseded
        _assert_reconciles(warehouse, products_contract)

    assert [(s.rows_in, s.valid, s.quarantined) for s in all_stats] == [
        (5, 5, 0),
        (7, 6, 1),
        (5, 4, 1),
        (4, 4, 0),
    ]
    assert [(s.inserted, s.updated, s.superseded) for s in all_stats] == [
        (5, 0, 0),
        (3, 3, 3),
        (0, 2, 4),
        (2, 1, 2),
    ]
    assert scalar(warehouse, "SELECT count(*) FROM silver.products") == 10
    runs = fetch(
        warehouse,
        "SELECT rows_in, valid, quarantined, inserted, updated, superseded "
        "FROM _meta.silver_runs ORDER BY to_batch_id",
    )
    assert runs == [
        (s.rows_in, s.valid, s.quarantined, s.inserted, s.updated, s.superseded) for s in all_stats
    ]


def test_second_run_without_new_batches_changes_nothing(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    batch = load(
        warehouse,
        settings,
        products_feed,
        "a.csv",
        PRODUCTS
        + "SKU-000001,Tent,tents,Northpeak,1.00,USD,1.00,true,2026-10-01T00:00:00\n"
        + "SKU-000002,Tent,tents,Northpeak,N/A,USD,1.00,true,2026-10-01T00:00:00\n",
    )
    apply(warehouse, products_contract)
    before = snapshot_tables(warehouse, "silver.products", "quarantine.products")

    stats = apply(warehouse, products_contract)

    assert (stats.from_batch_id, stats.to_batch_id) == (batch, batch)
    assert (stats.rows_in, stats.valid, stats.quarantined, stats.inserted) == (0, 0, 0, 0)
    assert stats.rebuilt is False
    assert snapshot_tables(warehouse, "silver.products", "quarantine.products") == before


def test_run_processes_only_batches_after_the_watermark(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    ad_spend_feed: FileFeed,
    products_contract: Contract,
) -> None:
    row = "SKU-{n:06d},Tent,tents,Northpeak,1.00,USD,1.00,true,2026-10-01T00:00:00\n"
    first = load(warehouse, settings, products_feed, "a.csv", PRODUCTS + row.format(n=1))
    stats = apply(warehouse, products_contract)
    assert (stats.from_batch_id, stats.to_batch_id, stats.rows_in) == (0, first, 1)

    # Batch ids are shared by all feeds: an ad-spend batch in between leaves a gap.
    load(warehouse, settings, ad_spend_feed, "x.csv", AD_SPEND + "2026-10-01,email,c,1,1,1\n")
    load(warehouse, settings, products_feed, "b.csv", PRODUCTS + row.format(n=2))
    last = load(
        warehouse, settings, products_feed, "c.csv", PRODUCTS + row.format(n=3) + row.format(n=4)
    )

    stats = apply(warehouse, products_contract)

    assert (stats.from_batch_id, stats.to_batch_id) == (first, last)
    assert stats.rows_in == 3
    assert stats.inserted == 3
    assert fetch(
        warehouse,
        "SELECT last_batch_id FROM _meta.watermarks WHERE consumer = 'silver.products'",
    ) == [(last,)]
    assert scalar(warehouse, "SELECT count(*) FROM silver.products") == 4


# --- rebuild == incremental ----------------------------------------------------------------


def _assert_rebuild_equals_incremental(warehouse: Warehouse, contracts: list[Contract]) -> None:
    """Copy silver and quarantine, rebuild from bronze, and compare every column."""
    with warehouse.transaction() as conn:
        for c in contracts:
            conn.execute(f"CREATE TABLE main.inc_{c.name} AS SELECT * FROM silver.{c.name}")
            conn.execute(
                f"CREATE TABLE main.incq_{c.name} AS "
                f"SELECT * EXCLUDE (_quarantined_at) FROM quarantine.{c.name}"
            )
    for c in contracts:
        stats = apply(warehouse, c, rebuild=True)
        assert stats.rebuilt is True
        assert stats.from_batch_id == 0
        assert stats.rows_in == scalar(warehouse, f"SELECT count(*) FROM bronze.{c.source}")
    with warehouse.connect() as conn:
        for c in contracts:
            pairs = [
                (f"main.inc_{c.name}", f"silver.{c.name}"),
                (
                    f"main.incq_{c.name}",
                    f"(SELECT * EXCLUDE (_quarantined_at) FROM quarantine.{c.name})",
                ),
            ]
            for incremental, rebuilt in pairs:
                counts = conn.execute(
                    f"SELECT (SELECT count(*) FROM {incremental}), (SELECT count(*) FROM {rebuilt})"
                ).fetchone()
                assert counts[0] == counts[1], (c.name, incremental, counts)
                for a, b in ((incremental, rebuilt), (rebuilt, incremental)):
                    diff = conn.execute(
                        f"SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}"
                    ).fetchall()
                    assert diff == [], (c.name, a, b, diff)


def test_rebuild_gives_the_same_tables_as_incremental_runs(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    ad_spend_feed: FileFeed,
    products_contract: Contract,
    ad_spend_contract: Contract,
) -> None:
    product_files = [
        PRODUCTS
        + "SKU-000001,Tent,tents,Northpeak,100.00,USD,2.00,true,2026-10-05T00:00:00\n"
        + "SKU-000002,Bag,sleeping_bags,Ridgeway,80.00,USD,1.00,true,2026-10-01T00:00:00\n"
        + "SKU-000003,Mug,camp_kitchen,,N/A,USD,0.3,true,2026-10-01T00:00:00\n",
        PRODUCTS
        + "SKU-000001,Tent,tents,Northpeak,90.00,USD,2.00,true,2026-10-02T00:00:00\n"  # older
        + "SKU-000002,Bag,sleeping_bags,Ridgeway,85.00,USD,1.00,true,2026-10-06T00:00:00\n"
        + "SKU-000002,Bag,sleeping_bags,Ridgeway,84.00,USD,1.00,true,2026-10-06T00:00:00\n",
        "SKU,Product Name,Category,Brand,Price,Currency,Weight (kg),Active,Updated At,Season\n"
        "SKU-000003,Mug,camp_kitchen,,9.99,USD,0.3,true,2026-10-07T00:00:00,summer\n"
        "SKU-000004,Pole,accessories,,59.00,USD,0.5,false,2026-10-07T00:00:00,winter\n"
        "SKU-000005,Boot,kayaks,,59.00,USD,0.5,false,2026-10-07T00:00:00,winter\n",
        PRODUCTS
        + "SKU-000002,Bag,sleeping_bags,Ridgeway,83.00,USD,1.00,true,2026-10-06T00:00:00\n"  # tie
        + "SKU-000004,Pole,accessories,,61.00,USD,0.5,true,2026-10-08T00:00:00\n"
        + "SKU-000006,Short\n",
        PRODUCTS
        + "SKU-000001,Tent,tents,Northpeak,95.00,USD,2.00,true,2026-10-05T00:00:00\n"  # tie
        + "SKU-000007,Cup,camp_kitchen,,4.00,USD,0.1,,2026-10-01T00:00:00\n",
    ]
    ad_files = [
        AD_SPEND + "2026-10-01,email,a,1.00,100,1\n2026-10-01,email,b,2.00,100,1\n",
        AD_SPEND + "2026-10-01,email,a,1.50,100,1\n2026-10-01,email,c,2.00,1,2\n",
        "date,channel,campaign,cost,impressions,clicks,conversions\n"
        "2026-10-01,email,b,2.50,100,1,0\n2026-10-02,email,a,3.00,100,1,0\n",
        AD_SPEND + "2026-10-01,email,a,1.75,100,1\n2026-10-01,email,a,1.80,100,1\n",
        AD_SPEND + "2026-10-02,email,a,-3.00,100,1\n2026-10-03,email,a,3.00,100,1\n",
    ]
    for i, (product_text, ad_text) in enumerate(zip(product_files, ad_files, strict=True)):
        load(warehouse, settings, products_feed, f"p{i}.csv", product_text)
        load(warehouse, settings, ad_spend_feed, f"a{i}.csv", ad_text)
        apply(warehouse, products_contract)
        apply(warehouse, ad_spend_contract)

    assert fetch(
        warehouse, "SELECT sku, unit_price, _row_number FROM silver.products ORDER BY sku"
    ) == [
        ("SKU-000001", Decimal("95.00"), 1),  # tie on updated_at: the later batch wins
        ("SKU-000002", Decimal("83.00"), 1),
        ("SKU-000003", Decimal("9.99"), 1),
        ("SKU-000004", Decimal("61.00"), 2),
        ("SKU-000007", Decimal("4.00"), 2),
    ]
    _assert_rebuild_equals_incremental(warehouse, [products_contract, ad_spend_contract])


def test_rebuild_equals_incremental_on_the_demo_landing_zone(
    warehouse: Warehouse,
    settings: PlatformSettings,
    config: PlatformConfig,
    products_contract: Contract,
    ad_spend_contract: Contract,
) -> None:
    generate_landing_files(settings.landing_dir, scale=0.05)
    pending = {
        feed.name: [f.relpath for f in list_landing_files(settings.landing_dir, feed)]
        for feed in config.feeds
    }
    assert len(pending["products"]) == 8 and len(pending["ad_spend"]) > 100
    rounds = 4
    for r in range(rounds):
        for feed in config.feeds:
            files = pending[feed.name]
            chunk = files[r * len(files) // rounds : (r + 1) * len(files) // rounds]
            ingest_files(warehouse, feed, settings.landing_dir, chunk)
            apply(warehouse, config.contract(feed.contract))

    for contract in (products_contract, ad_spend_contract):
        _assert_reconciles(warehouse, contract)
    assert scalar(warehouse, "SELECT count(*) FROM silver.products") == 102
    assert scalar(warehouse, "SELECT count(*) FROM quarantine.products") == 8
    assert scalar(warehouse, "SELECT count(*) FROM quarantine.ad_spend") == 7
    _assert_rebuild_equals_incremental(warehouse, [products_contract, ad_spend_contract])


# --- contract changes, errors, crashes ------------------------------------------------------


def test_changing_the_contract_columns_rebuilds_silver(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    load(
        warehouse,
        settings,
        products_feed,
        "a.csv",
        PRODUCTS + "SKU-000001,Tent,tents,Northpeak,100.00,USD,2.00,true,2026-10-05T00:00:00\n",
    )
    load(
        warehouse,
        settings,
        products_feed,
        "b.csv",
        "SKU,Product Name,Category,Brand,Price,Currency,Weight (kg),Active,Updated At,Season\n"
        "SKU-000002,Quilt,sleeping_bags,,299.00,EUR,0.8,true,2026-10-09T08:00:00,winter\n",
    )
    assert apply(warehouse, products_contract).rebuilt is False
    assert apply(warehouse, products_contract).rebuilt is False  # same contract: no rebuild

    with_season = Contract.model_validate(
        {
            **products_contract.model_dump(),
            "columns": [
                *products_contract.model_dump()["columns"],
                {"name": "season", "type": "varchar"},
            ],
        }
    )
    stats = apply(warehouse, with_season)

    assert stats.rebuilt is True
    assert (stats.from_batch_id, stats.rows_in, stats.inserted) == (0, 2, 2)
    assert fetch(warehouse, "SELECT sku, season FROM silver.products ORDER BY sku") == [
        ("SKU-000001", None),
        ("SKU-000002", "winter"),
    ]
    assert apply(warehouse, with_season).rebuilt is False

    # A changed type is a changed schema too.
    heavier = Contract.model_validate(
        {
            **products_contract.model_dump(),
            "columns": [
                {**c, "type": "double"} if c["name"] == "weight_kg" else c
                for c in products_contract.model_dump()["columns"]
            ],
        }
    )
    stats = apply(warehouse, heavier)
    assert stats.rebuilt is True
    assert fetch(warehouse, "SELECT weight_kg FROM silver.products ORDER BY sku") == [
        (2.0,),
        (0.8,),
    ]


def test_timestamptz_column_does_not_force_a_rebuild_on_every_run(
    warehouse: Warehouse, settings: PlatformSettings, products_feed: FileFeed
) -> None:
    contract = Contract(
        name="product_times",
        description="sku and a tz-aware timestamp",
        source=products_feed.bronze_table,
        business_key=["sku"],
        columns=[
            Column(name="sku", type="varchar"),
            Column(name="updated_at", type="timestamptz"),
        ],
    )
    row = "SKU-00000{n},Tent,tents,N,1.00,USD,1.00,true,2026-10-01T08:00:00+02:00\n"
    load(warehouse, settings, products_feed, "a.csv", PRODUCTS + row.format(n=1))
    assert apply(warehouse, contract).rebuilt is False
    load(warehouse, settings, products_feed, "b.csv", PRODUCTS + row.format(n=2))
    stats = apply(warehouse, contract)
    assert stats.rebuilt is False
    assert stats.rows_in == 1


def test_missing_bronze_table_raises_lookup_error(
    warehouse: Warehouse, products_contract: Contract
) -> None:
    with pytest.raises(LookupError, match=r"bronze\.files_products does not exist") as info:
        apply(warehouse, products_contract)
    assert "products" in str(info.value) and "load its source first" in str(info.value)


def test_a_crash_after_apply_rolls_back_silver_quarantine_and_watermark(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    first = load(
        warehouse,
        settings,
        products_feed,
        "a.csv",
        PRODUCTS + "SKU-000001,Tent,tents,Northpeak,100.00,USD,2.00,true,2026-10-05T00:00:00\n",
    )
    apply(warehouse, products_contract)
    load(
        warehouse,
        settings,
        products_feed,
        "b.csv",
        PRODUCTS
        + "SKU-000001,Tent,tents,Northpeak,90.00,USD,2.00,true,2026-10-06T00:00:00\n"
        + "SKU-000002,Bag,kayaks,Northpeak,90.00,USD,2.00,true,2026-10-06T00:00:00\n",
    )
    tables = ("silver.products", "quarantine.products", "_meta.watermarks", "_meta.silver_runs")
    before = snapshot_tables(warehouse, *tables)

    with pytest.raises(RuntimeError, match="crash"), warehouse.transaction() as conn:
        stats = apply_contract(conn, products_contract)
        assert (stats.updated, stats.quarantined) == (1, 1)
        assert conn.execute("SELECT count(*) FROM quarantine.products").fetchone()[0] == 1
        raise RuntimeError("crash before commit")

    assert snapshot_tables(warehouse, *tables) == before
    stats = apply(warehouse, products_contract)
    assert stats.from_batch_id == first
    assert (stats.updated, stats.quarantined) == (1, 1)
    assert fetch(warehouse, "SELECT unit_price FROM silver.products") == [(Decimal("90.00"),)]


def test_a_crash_in_the_first_apply_leaves_no_silver_table(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    load(
        warehouse,
        settings,
        products_feed,
        "a.csv",
        PRODUCTS + "SKU-000001,Tent,tents,Northpeak,100.00,USD,2.00,true,2026-10-05T00:00:00\n",
    )
    with pytest.raises(RuntimeError), warehouse.transaction() as conn:
        apply_contract(conn, products_contract)
        raise RuntimeError("crash")
    assert (
        scalar(
            warehouse,
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema IN ('silver', 'quarantine')",
        )
        == 0
    )
    assert fetch(warehouse, "SELECT * FROM _meta.watermarks") == []


def test_numbers_are_never_rounded_into_validity(
    warehouse: Warehouse,
    settings: PlatformSettings,
    ad_spend_feed: FileFeed,
    ad_spend_contract: Contract,
) -> None:
    """'1.5' impressions or a spend of '12.999' are quarantined, not rounded to 2 / 13.00."""
    load(
        warehouse,
        settings,
        ad_spend_feed,
        "email_2026-10-05.csv",
        AD_SPEND
        + "2026-10-05,email,ok,12.5,1000,+20\n"
        + "2026-10-05,email,fractional,10.00,1.5,1\n"
        + "2026-10-05,email,three_places,12.999,1000,1\n"
        + "2026-10-05,email,exponent,10.00,1e3,1\n",
    )
    stats = apply(warehouse, ad_spend_contract)
    assert {n: r[0] for n, r in quarantined(warehouse, "ad_spend").items()} == {
        2: "impressions: cannot parse '1.5' as bigint",
        3: "spend: cannot parse '12.999' as decimal(14,2)",
        4: "impressions: cannot parse '1e3' as bigint",
    }
    assert stats.valid == 1
    assert fetch(warehouse, "SELECT spend, clicks FROM silver.ad_spend") == [(Decimal("12.50"), 20)]


def test_changing_a_rule_rebuilds_so_old_rows_meet_the_new_rule(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    """Incremental must still equal a rebuild after a rule, constraint or alias changes."""
    load(
        warehouse,
        settings,
        products_feed,
        "free.csv",
        PRODUCTS + "SKU-000001,Free Sticker,accessories,Acme,0.00,USD,0.01,true,2026-10-01\n",
    )
    assert apply(warehouse, products_contract).valid == 1
    stricter = products_contract.model_copy(
        update={"rules": [Rule(name="priced", sql="unit_price > 0")]}
    )
    assert stricter.fingerprint() != products_contract.fingerprint()
    stats = apply(warehouse, stricter)
    assert stats.rebuilt
    assert scalar(warehouse, "SELECT count(*) FROM silver.products") == 0
    assert quarantined(warehouse, "products")[1][0] == "rule priced failed: unit_price > 0"
    # A description is not a data decision: it changes nothing and rebuilds nothing.
    described = stricter.model_copy(update={"description": "Now with a rule."})
    assert described.fingerprint() == stricter.fingerprint()
    assert not apply(warehouse, described).rebuilt


def test_timestamps_with_offsets_are_compared_in_utc(
    warehouse: Warehouse,
    settings: PlatformSettings,
    products_feed: FileFeed,
    products_contract: Contract,
) -> None:
    """12:00+02:00 is 10:00 UTC, earlier than 11:00Z: the 11:00Z version must win."""
    row = "SKU-000001,{name},tents,Acme,10.00,USD,1.00,true,{ts}\n"
    load(
        warehouse,
        settings,
        products_feed,
        "versions.csv",
        PRODUCTS
        + row.format(name="Later", ts="2026-10-01T11:00:00Z")
        + row.format(name="Earlier", ts="2026-10-01T12:00:00+02:00"),
    )
    apply(warehouse, products_contract)
    assert fetch(warehouse, "SELECT name, updated_at FROM silver.products") == [
        ("Later", dt.datetime(2026, 10, 1, 11, 0))
    ]


EVENTS_FEED = FileFeed(
    name="clicks", description="Click events.", folder="clicks", contract="clicks"
)
EVENTS_CONTRACT = Contract(
    name="clicks",
    description="Click events, first arrival wins, stored by day.",
    source="files_clicks",
    business_key=["event_id"],
    keep="first",
    partition={"by": "occurred_at", "name": "event_date"},
    columns=[
        Column(name="event_id"),
        Column(name="occurred_at", type="timestamp", required=True),
        Column(name="page"),
    ],
)


def test_keep_first_appends_only_new_events_and_reports_the_days_it_wrote(
    warehouse, settings
) -> None:
    header = "event_id,occurred_at,page\n"
    load(
        warehouse,
        settings,
        EVENTS_FEED,
        "b1.csv",
        header + "e1,2026-11-03T10:00:00Z,/a\ne2,2026-11-03T23:59:59+00:00,/b\n"
        "e2,2026-11-03T23:59:59Z,/b-again\n",
    )
    first = apply(warehouse, EVENTS_CONTRACT)
    assert (first.inserted, first.superseded, first.updated) == (2, 1, 0)
    assert first.rows_by_day == {"2026-11-03": 2}
    # Batch 2: a redelivery of e1 with other content (the first arrival still wins), a new
    # event, and one that happened two days earlier (late) but at 01:30+02:00 = 23:30 UTC.
    load(
        warehouse,
        settings,
        EVENTS_FEED,
        "b2.csv",
        header + "e1,2026-11-03T10:00:00Z,/changed\ne3,2026-11-05T08:00:00Z,/c\n"
        "e4,2026-11-02T01:30:00+02:00,/late\n",
    )
    second = apply(warehouse, EVENTS_CONTRACT)
    assert (second.inserted, second.superseded, second.updated) == (2, 1, 0)
    assert second.rows_by_day == {"2026-11-01": 1, "2026-11-05": 1}  # only the days written
    rows = fetch(
        warehouse,
        "SELECT event_id, page, CAST(event_date AS VARCHAR), _batch_id FROM silver.clicks "
        "ORDER BY event_id",
    )
    assert [r[:3] for r in rows] == [
        ("e1", "/a", "2026-11-03"),
        ("e2", "/b", "2026-11-03"),
        ("e3", "/c", "2026-11-05"),
        ("e4", "/late", "2026-11-01"),
    ]
    assert rows[0][3] == rows[1][3] != rows[2][3]  # e1 kept from its first batch
    before = fetch(warehouse, "SELECT * FROM silver.clicks ORDER BY event_id")
    assert apply(warehouse, EVENTS_CONTRACT, rebuild=True).rows_by_day == {
        "2026-11-01": 1,
        "2026-11-03": 2,
        "2026-11-05": 1,
    }
    assert fetch(warehouse, "SELECT * FROM silver.clicks ORDER BY event_id") == before


def test_keep_first_keeps_the_first_valid_arrival_when_an_earlier_copy_fails(
    warehouse, settings
) -> None:
    """Streamed (keep: first): a copy that fails the contract is quarantined and is not the
    first arrival; the first valid copy wins, in its batch and row, over later ones."""
    header = "event_id,occurred_at,page\n"
    first = load(
        warehouse,
        settings,
        EVENTS_FEED,
        "b1.csv",
        header + "e1,not a time,/broken\ne1,2026-11-03T10:00:00Z,/a\n"
        "e2,2026-11-03T11:00:00Z,/b\ne2,2026-11-03T11:00:00Z,/b-again\n",
    )
    load(warehouse, settings, EVENTS_FEED, "b2.csv", header + "e1,2026-11-03T10:00:00Z,/c\n")
    stats = apply(warehouse, EVENTS_CONTRACT)
    assert fetch(
        warehouse, "SELECT event_id, page, _batch_id, _row_number FROM silver.clicks ORDER BY 1"
    ) == [("e1", "/a", first, 2), ("e2", "/b", first, 3)]
    assert list(quarantined(warehouse, "clicks")) == [1]
    assert (stats.rows_in, stats.valid, stats.quarantined) == (5, 4, 1)
    assert (stats.inserted, stats.superseded) == (2, 2)


def test_keep_first_and_partition_are_validated() -> None:
    base = EVENTS_CONTRACT.model_dump()
    with pytest.raises(ValueError, match="keep: first orders by arrival"):
        Contract(**{**base, "latest_by": ["occurred_at"]})
    with pytest.raises(ValueError, match="must be a declared timestamp or date column"):
        Contract(**{**base, "partition": {"by": "page", "name": "d"}})
    with pytest.raises(ValueError, match="clashes with a declared column"):
        Contract(**{**base, "partition": {"by": "occurred_at", "name": "page"}})


def test_new_options_at_their_defaults_keep_existing_fingerprints(config) -> None:
    """Upgrading must not rebuild every silver table: the products contract's fingerprint is
    the one it had before keep/partition existed."""
    assert config.contract("products").fingerprint() == PRODUCTS_FINGERPRINT
