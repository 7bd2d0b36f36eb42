"""Incremental SQL models on a real DuckDB file: files through the real loader into bronze,
contracts into silver, then ``build_model`` (what the gold assets and ``build_models`` run).

After every step the incremental table must equal a full rebuild of the same SQL; the steps
where incremental would be wrong (a deletion, a changed SQL) must fall back to full, and a
failure between the delete and the insert must leave the table as it was.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance

from medallion_platform.config import PlatformConfig
from medallion_platform.config_files import ConfigError
from medallion_platform.connectors.files import FileFeed, ingest_files
from medallion_platform.contracts import Column, Contract, apply_contract
from medallion_platform.gold.build import build_models
from medallion_platform.gold.incremental import (
    FULL_REFRESH_TAG,
    BuildResult,
    build_model,
    check_incremental,
)
from medallion_platform.gold.spec import SqlModel
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.identifiers import qualified
from medallion_platform.warehouse.warehouse import get_watermark, transaction
from medallion_platform_tests.conftest import copy_packaged_config, write_csv

PRODUCTS = "sku,name,category,brand,unit_price,currency,weight_kg,active,updated_at\n"
AD_SPEND = "date,channel,campaign,spend,impressions,clicks\n"


def product(n: int, price: str, at: str, name: str = "") -> str:
    return f"SKU-{n:06d},{name or f'Item {n}'},tents,Acme,{price},USD,1.5,true,{at}\n"


def drop(settings: PlatformSettings, feed: FileFeed, name: str, text: str) -> None:
    """A file into the landing zone, loaded into bronze by the real loader."""
    write_csv(settings.landing_dir, f"{feed.folder}/{name}", text)
    report = ingest_files(Warehouse(settings.warehouse_path), feed, settings.landing_dir)
    assert [f.status for f in report.files] == ["loaded"], report.files


def apply(warehouse: Warehouse, contract: Contract, *, rebuild: bool = False) -> None:
    with warehouse.transaction() as conn:
        apply_contract(conn, contract, rebuild=rebuild)


def build(warehouse: Warehouse, model: SqlModel, *, full_refresh: bool = False) -> BuildResult:
    with warehouse.transaction() as conn:
        return build_model(conn, model, full_refresh=full_refresh)


def table(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return sorted(conn.execute(sql).fetchall(), key=repr)


def assert_equals_full(warehouse: Warehouse, model: SqlModel) -> list[tuple]:
    """The table holds exactly what the model's SQL gives over silver now; returns it."""
    with warehouse.connect() as conn:
        built = table(conn, f"SELECT * FROM {qualified(model.layer, model.name)}")
        full = table(conn, model.sql)
    assert built == full
    return built


@pytest.fixture
def models(config: PlatformConfig) -> dict[str, SqlModel]:
    return {m.name: m for m in config.gold_models}


def test_new_rows_and_replaced_versions_build_only_their_keys(
    warehouse, settings, config, products_feed, ad_spend_feed, models
) -> None:
    products, ad_spend = config.contract("products"), config.contract("ad_spend")
    dim, spend = models["dim_product"], models["marketing_spend_daily"]
    first = "".join(product(n, "20.00", "2026-10-01T00:00:00") for n in range(1, 6))
    drop(settings, products_feed, "catalog_1.csv", PRODUCTS + first)
    drop(
        settings,
        ad_spend_feed,
        "spend_1.csv",
        AD_SPEND + "2026-10-01,google_ads,brand,10.00,100,5\n"
        "2026-10-01,meta_ads,retarget,4.00,80,2\n"
        "2026-10-02,google_ads,brand,11.00,110,6\n",
    )
    apply(warehouse, products)
    apply(warehouse, ad_spend)
    assert [build(warehouse, m).build for m in (dim, spend)] == ["full", "full"]
    assert build(warehouse, dim).reason != "first build (no table)"  # a record was kept

    # (a) new rows: two new SKUs; a new day, and a new campaign on a day already built.
    drop(
        settings,
        products_feed,
        "catalog_2.csv",
        PRODUCTS + product(6, "30.00", "2026-10-02T00:00:00") + product(7, "300.00", "2026-10-02"),
    )
    drop(
        settings,
        ad_spend_feed,
        "spend_2.csv",
        AD_SPEND + "2026-10-01,google_ads,prospecting,5.00,50,1\n"
        "2026-10-03,email,newsletter,1.00,1000,40\n",
    )
    apply(warehouse, products)
    apply(warehouse, ad_spend)
    got = build(warehouse, dim)
    assert (got.build, got.changed_keys, got.rows_deleted, got.rows_inserted) == (
        "incremental",
        2,
        0,
        2,
    )
    assert len(assert_equals_full(warehouse, dim)) == 7
    got = build(warehouse, spend)
    # 2026-10-01/google_ads is recomputed whole (two campaigns now), not appended to.
    assert (got.build, got.changed_keys, got.rows_deleted, got.rows_inserted) == (
        "incremental",
        2,
        1,
        2,
    )
    rows = assert_equals_full(warehouse, spend)
    assert [r[:4] for r in rows if str(r[0]) == "2026-10-01" and r[1] == "google_ads"] == [
        (rows[0][0], "google_ads", 2, rows[0][3])
    ]

    # (b) replaced versions: SKU 1 repriced into another band, SKU 2 sent again older (loses).
    drop(
        settings,
        products_feed,
        "catalog_3.csv",
        PRODUCTS
        + product(1, "120.00", "2026-10-05T00:00:00")
        + product(2, "999.00", "2026-09-01T00:00:00"),
    )
    apply(warehouse, products)
    got = build(warehouse, dim)
    assert (got.build, got.changed_keys, got.rows_deleted, got.rows_inserted) == (
        "incremental",
        1,
        1,
        1,
    )
    rows = assert_equals_full(warehouse, dim)
    assert [(r[0], r[4], r[8]) for r in rows[:2]] == [
        ("SKU-000001", rows[0][4], "100_to_250"),
        ("SKU-000002", rows[1][4], "under_25"),
    ]
    with warehouse.connect() as conn:
        assert get_watermark(conn, "gold.dim_product") == get_watermark(conn, "silver.products")

    # Nothing new: incremental with no key to rebuild; a run that asks rebuilds whole.
    assert build(warehouse, dim).changed_keys == 0
    got = build(warehouse, dim, full_refresh=True)
    assert got.build == "full" and FULL_REFRESH_TAG in got.reason
    assert_equals_full(warehouse, dim)
    # A rebuilt silver (same rows, but no watermark can tell): full.
    apply(warehouse, products, rebuild=True)
    got = build(warehouse, dim)
    assert got.build == "full" and "rebuilt or lost rows" in got.reason
    assert_equals_full(warehouse, dim)


# --- a deletion: keys gone from a snapshot feed -----------------------------------------

CATALOG_FEED = FileFeed(name="catalog", description="x", folder="catalog", contract="catalog")
CATALOG = Contract(
    name="catalog",
    description="nightly full catalog export",
    source="files_catalog",
    business_key=["id"],
    mode="snapshot",
    snapshot_deletes="remove",
    columns=[
        Column(name="id"),
        Column(name="name", required=True),
        Column(name="price", type="decimal(8,2)", required=True),
    ],
)


def sql_model(root: Path, name: str, sql: str, key: list[str], source: str) -> SqlModel:
    """A gold model whose SQL is ``<root>/gold/<name>.sql``, declared incremental."""
    (root / "gold").mkdir(parents=True, exist_ok=True)
    (root / "gold" / f"{name}.sql").write_text(sql)
    return SqlModel.model_validate(
        {
            "name": name,
            "description": "x",
            "grain": "one row per key",
            "key": key,
            "incremental": {"from": source},
        },
        context={"models_root": root},
    )


CATALOG_SQL = "SELECT id, upper(name) AS name, price, price >= {cut} AS premium FROM silver.catalog"


def test_a_deletion_and_a_changed_sql_fall_back_to_a_full_build(
    warehouse, settings, tmp_path
) -> None:
    model = sql_model(tmp_path, "catalog_dim", CATALOG_SQL.format(cut=10), ["id"], "silver.catalog")
    check_incremental(model, [CATALOG])

    def night(n: int, body: str) -> BuildResult:
        write_csv(settings.landing_dir, f"catalog/catalog_{n}.csv", "id,name,price\n" + body)
        ingest_files(warehouse, CATALOG_FEED, settings.landing_dir)
        apply(warehouse, CATALOG)
        return build(warehouse, model)

    assert night(1, "a,Tent,10.00\nb,Stove,20.00\nc,Lamp,5.00\n").build == "full"
    # b repriced, c gone, d new: c's deletion is invisible to the watermark.
    got = night(2, "a,Tent,10.00\nb,Stove,25.00\nd,Mug,3.00\n")
    assert got.build == "full" and "lost rows" in got.reason, got
    assert [r[0] for r in assert_equals_full(warehouse, model)] == ["a", "b", "d"]
    # No deletion: incremental again.
    got = night(3, "a,Tent,10.00\nb,Stove,26.00\nd,Mug,3.00\ne,Cup,2.00\n")
    assert (got.build, got.changed_keys) == ("incremental", 2)
    assert_equals_full(warehouse, model)

    # (d) the model's SQL changes (a new premium cut): every row may change, so full.
    changed = sql_model(
        tmp_path, "catalog_dim", CATALOG_SQL.format(cut=3), ["id"], "silver.catalog"
    )
    got = build(warehouse, changed)
    assert got.build == "full" and "SQL" in got.reason, got
    assert [r[3] for r in assert_equals_full(warehouse, changed)] == [True, True, True, False]


def test_a_failure_between_delete_and_insert_leaves_the_table_as_it_was(
    warehouse, settings, products_feed, config, tmp_path
) -> None:
    """(e) The insert fails after the delete ran (the SQL raises on a row): the transaction
    rolls both back with the watermark, and the next build catches up."""
    model = sql_model(
        tmp_path,
        "product_names",
        "SELECT sku, CASE WHEN name = 'boom' THEN error('boom: ' || sku) ELSE name END AS name, "
        "unit_price FROM silver.products",
        ["sku"],
        "silver.products",
    )
    products = config.contract("products")
    rows = "".join(product(n, "20.00", "2026-10-01T00:00:00") for n in range(1, 4))
    drop(settings, products_feed, "catalog_1.csv", PRODUCTS + rows)
    apply(warehouse, products)
    build(warehouse, model)
    before = assert_equals_full(warehouse, model)
    with warehouse.connect() as conn:
        watermark = get_watermark(conn, "gold.product_names")

    bad = product(1, "21.00", "2026-10-02T00:00:00", name="boom") + product(9, "5.00", "2026-10-02")
    drop(settings, products_feed, "catalog_2.csv", PRODUCTS + bad)
    apply(warehouse, products)
    with pytest.raises(duckdb.Error, match="boom: SKU-000001"):
        build(warehouse, model)
    with warehouse.connect() as conn:
        assert table(conn, "SELECT * FROM gold.product_names") == before  # SKU 1 not lost
        assert get_watermark(conn, "gold.product_names") == watermark

    fix = product(1, "22.00", "2026-10-03T00:00:00", name="Fixed")
    drop(settings, products_feed, "catalog_3.csv", PRODUCTS + fix)
    apply(warehouse, products)
    got = build(warehouse, model)
    assert (got.build, got.changed_keys) == ("incremental", 2)  # SKU 1 and SKU 9
    assert [r[:2] for r in assert_equals_full(warehouse, model)] == [
        ("SKU-000001", "Fixed"),
        ("SKU-000002", "Item 2"),
        ("SKU-000003", "Item 3"),
        ("SKU-000009", "Item 9"),
    ]


def test_build_models_uses_the_same_code(warehouse, settings, config, products_feed, models):
    drop(settings, products_feed, "c1.csv", PRODUCTS + product(1, "20.00", "2026-10-01"))
    apply(warehouse, config.contract("products"))
    results: dict[str, BuildResult] = {}
    for expected in ("full", "incremental"):
        with warehouse.connect() as conn:
            build_models(conn, [models["dim_product"]], results=results)
        assert results["gold.dim_product"].build == expected
    # A hand-built silver (no contract, no watermark) is always built whole.
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA silver")
    conn.execute(
        "CREATE TABLE silver.products AS SELECT 'SKU-000001' AS sku, 'Tent' AS name, "
        "'tents' AS category, 'Acme' AS brand, 20.0 AS unit_price, 'USD' AS currency, "
        "1.5 AS weight_kg, TRUE AS active, now() AS updated_at, 1 AS _batch_id"
    )
    with transaction(conn):
        got = build_model(conn, models["dim_product"])
    assert got.build == "full" and "no watermark" in got.reason


# --- declaration errors ------------------------------------------------------------------


def _config_with(tmp_path: Path, edit) -> None:
    from medallion_platform.config import load_config

    directory = copy_packaged_config(tmp_path / "config")
    path = directory / "gold_models.yaml"
    path.write_text(edit(path.read_text()))
    load_config(directory)


def test_declarations_that_cannot_be_incremental_are_refused(tmp_path) -> None:
    spend = "    incremental: {from: silver.ad_spend}"

    def declare(value: str):
        return lambda text: text.replace(spend, f"    incremental: {value}")

    with pytest.raises(ConfigError, match=r"marketing_spend_daily: incremental\.from is silver\.x"):
        _config_with(tmp_path / "1", declare("{from: silver.x}"))
    with pytest.raises(ConfigError, match=r"incremental\.from: .*'ad_spend' is not schema\.table"):
        _config_with(tmp_path / "2", declare("{from: ad_spend}"))
    with pytest.raises(ConfigError, match=r"incremental\.by: Extra inputs are not permitted"):
        _config_with(tmp_path / "3", declare("{from: silver.ad_spend, by: date}"))
    # A key outside the input's business key: a replaced silver row could move its gold row.
    with pytest.raises(ConfigError, match=r"key columns \['spend'\] are not in contract ad_spend"):
        _config_with(
            tmp_path / "4",
            lambda t: t.replace("    key: [date, channel]\n    depends_on: [silver.ad_spend]",
                                "    key: [date, spend]\n    depends_on: [silver.ad_spend]"),
        )  # fmt: skip


def test_a_key_that_is_not_the_input_column_passed_through_is_refused(tmp_path) -> None:
    model = sql_model(
        tmp_path,
        "renamed",
        "SELECT name AS id, price FROM silver.catalog",
        ["id"],
        "silver.catalog",
    )
    with pytest.raises(ValueError, match="key column id must be the input's id passed through"):
        check_incremental(model, [CATALOG])
    flagged = CATALOG.model_copy(update={"snapshot_deletes": "flag"})
    model = sql_model(
        tmp_path, "ok", "SELECT id, price FROM silver.catalog", ["id"], "silver.catalog"
    )
    with pytest.raises(ValueError, match="snapshot_deletes: flag"):
        check_incremental(model, [flagged])


# --- the Dagster asset -------------------------------------------------------------------


def test_the_gold_asset_builds_incrementally_and_equals_a_full_rebuild(
    warehouse, settings, config, products_feed, models
) -> None:
    from medallion_platform.definitions import build_definitions

    products = config.contract("products")
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    key = AssetKey(["gold", "dim_product"])

    def materialize(tags: dict[str, str] | None = None) -> dict:
        result = job.execute_in_process(instance=instance, asset_selection=[key], tags=tags)
        assert result.success
        (event,) = result.get_asset_materialization_events()
        return {k: v.value for k, v in event.materialization.metadata.items()}

    rows = "".join(product(n, "20.00", "2026-10-01") for n in range(1, 5))
    drop(settings, products_feed, "c1.csv", PRODUCTS + rows)
    apply(warehouse, products)
    with DagsterInstance.ephemeral() as instance:
        first = materialize()
        new = product(2, "260.00", "2026-10-02") + product(8, "1.00", "2026-10-02")
        drop(settings, products_feed, "c2.csv", PRODUCTS + new)
        apply(warehouse, products)
        second = materialize()
        third = materialize({FULL_REFRESH_TAG: "true"})
    assert first["build"] == "full" and first["build_reason"] == "first build (no table)"
    assert (second["build"], second["build_changed_keys"], second["dagster/row_count"]) == (
        "incremental",
        2,
        5,
    )
    assert third["build"] == "full" and FULL_REFRESH_TAG in third["build_reason"]
    assert_equals_full(warehouse, models["dim_product"])
