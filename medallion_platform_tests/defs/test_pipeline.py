"""The whole graph through Dagster on real files and a real DuckDB file."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context
from psycopg.conninfo import make_conninfo

from medallion_platform.definitions import MAIN_JOB, build_definitions
from medallion_platform.defs.resources import LandingZoneResource
from medallion_platform.devkit.brokers.tansu import TansuBroker
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.devkit.demo.app_db import apply_workload, orders_to_charge
from medallion_platform.devkit.demo.app_db import snapshot as app_db_snapshot
from medallion_platform.devkit.demo.clickstream import ClickstreamManifest, generate_clickstream
from medallion_platform.devkit.demo.generator import generate_landing_files
from medallion_platform.devkit.demo.payments_api import PaymentsApi, payments_for_orders
from medallion_platform.settings import PlatformSettings
from medallion_platform_tests.clickstream_truth import sessionize, truth
from medallion_platform_tests.conftest import CLICKSTREAM_EVENTS, PAYMENTS_TOKEN, write_csv

FUNNEL_STAGES = ("product_view", "add_to_cart", "checkout_started", "purchase")
# The app database sells SKU-000001..500: the catalog has them all from scale 0.25 on, as
# the test that expects every gold check to pass needs; the others run smaller.
FULL_CATALOG = 0.25
SCALE = 0.05
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _run(settings: PlatformSettings, *, ml: bool = False, **kwargs):
    """medallion_job in this process; without ``ml``, minus the churn model and the report
    (seconds per run that only the tests about them need)."""
    job = build_definitions(settings).resolve_job_def(MAIN_JOB)
    if not ml and "asset_selection" not in kwargs:
        kwargs["asset_selection"] = [
            key
            for key in job.asset_layer.selected_asset_keys
            if key.path[0] not in ("ml", "reports")
        ]
    run_config = {**QUIET, **kwargs.pop("run_config", {})}
    with DagsterInstance.ephemeral() as instance:
        return job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config, **kwargs
        )


def _materializations(result) -> dict[str, dict]:
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return out


def _count(settings: PlatformSettings, sql: str):
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute(sql).fetchone()[0]


CDC_KEYS = {
    "bronze/app_db_customers",
    "bronze/app_db_orders",
    "bronze/app_db_order_items",
    "silver/customers",
    "silver/customers_history",
    "silver/orders",
    "silver/order_items",
    "quarantine/customers",
    "quarantine/orders",
    "quarantine/order_items",
}


GOLD_STAR_KEYS = {
    "gold/dim_customer",
    "gold/dim_date",
    "gold/fct_orders",
    "gold/fct_refunds",
    "gold/fct_order_items",
    "gold/customer_360",
    "gold/daily_revenue",
    "gold/marketing_roas_daily",
}


@pytest.fixture(autouse=True)
def _sources_up(app_payments_api, clickstream, app_db):
    """medallion_job reads the payments API, the clickstream and the app database too: every
    test here has a real API server, a real broker and a real PostgreSQL on loopback."""
    return app_payments_api, clickstream, app_db


@pytest.fixture
def demo_run(settings: PlatformSettings):
    manifest = generate_landing_files(settings.landing_dir, scale=SCALE)
    result = _run(settings)
    assert result.success
    return manifest, result


@pytest.fixture(scope="module")
def demo_run_with_ml(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    demo_app_db: str,
    kafka_broker: TansuBroker,
    demo_clickstream: ClickstreamManifest,
):
    """The whole medallion_job once for the tests that only read what it built (sources to
    gold, the churn model and the KPI report): its own home, payments API and variables."""
    settings = PlatformSettings(home=tmp_path_factory.mktemp("demo_with_ml") / "home")
    settings.ensure_dirs()
    with postgres.connect(dbname=demo_app_db) as conn:
        orders = orders_to_charge(conn)
    with (
        pytest.MonkeyPatch.context() as env,
        PaymentsApi(payments_for_orders(orders), token=PAYMENTS_TOKEN) as api,
    ):
        env.setenv("MEDALLION_HOME", str(settings.home))
        env.setenv("DAGSTER_HOME", str(settings.dagster_home))
        env.setenv("PAYMENTS_API_BASE_URL", api.base_url)
        env.setenv("PAYMENTS_API_TOKEN", PAYMENTS_TOKEN)
        env.setenv("EVENTS_KAFKA_BOOTSTRAP", kafka_broker.bootstrap_servers)
        env.setenv("APP_DB_DSN", make_conninfo(postgres.dsn, dbname=demo_app_db))
        env.setenv("APP_DB_PASSWORD", postgres.password)
        manifest = generate_landing_files(settings.landing_dir, scale=FULL_CATALOG)
        result = _run(settings, ml=True)
    assert result.success
    return settings, manifest, result


def test_demo_flows_from_files_to_gold_and_counts_reconcile(demo_run_with_ml) -> None:
    settings, manifest, result = demo_run_with_ml
    mats = _materializations(result)
    assert {k for k in mats if "payments" not in k} == {
        "bronze/files_products",
        "bronze/files_ad_spend",
        "silver/products",
        "silver/ad_spend",
        "quarantine/products",
        "quarantine/ad_spend",
        "gold/dim_product",
        "gold/marketing_spend_daily",
        "bronze/events",
        "silver/events",
        "quarantine/events",
        "gold/sessions",
        "gold/funnel_daily",
        *GOLD_STAR_KEYS,
        *CDC_KEYS,
        "ml/churn_features",
        "ml/churn_model",
        "ml/churn_scores",
        "reports/kpi_report",
    }
    assert {k for k in mats if "payments" in k} >= {
        "bronze/payments_charges",
        "silver/payments_charges",
        "silver/payments",
    }
    for key, meta in mats.items():
        if key in ("ml/churn_model", "reports/kpi_report"):  # a model file and a page
            continue
        clean_source = key.startswith("quarantine/") and key in CDC_KEYS  # nothing breaks them
        assert (
            meta["dagster/row_count"] > 0 or key.startswith("quarantine/payments") or (clean_source)
        ), key
        assert "preview" in meta and "dagster/column_schema" in meta, key

    unreadable = sum(1 for f in manifest.files if f.kind == "unreadable")
    bronze_meta = [mats["bronze/files_products"], mats["bronze/files_ad_spend"]]
    assert sum(m["files_rejected"] for m in bronze_meta) == unreadable
    assert sum(m["files_duplicate"] for m in bronze_meta) == 2

    for contract in ("products", "ad_spend"):
        bronze = _count(settings, f"SELECT count(*) FROM bronze.files_{contract}")
        silver = _count(settings, f"SELECT count(*) FROM silver.{contract}")
        quarantined = _count(settings, f"SELECT count(*) FROM quarantine.{contract}")
        superseded = _count(
            settings,
            f"SELECT sum(superseded) FROM _meta.silver_runs WHERE table_name = '{contract}'",
        )
        assert bronze == silver + quarantined + superseded, contract
        assert mats[f"silver/{contract}"]["quarantined_rows"] == quarantined
    assert (
        _count(settings, "SELECT count(*) FROM quarantine.products")
        + _count(settings, "SELECT count(*) FROM quarantine.ad_spend")
        == manifest.malformed_rows
    )
    assert _count(settings, "SELECT count(*) FROM gold.dim_product") == manifest.products

    # Every gold check ran and passed on real sources (keys, foreign keys, rules, counts).
    checks = result.get_asset_check_evaluations()
    gold_checks = [c for c in checks if c.asset_key.path[0] == "gold"]
    assert len(gold_checks) >= 11 * 2
    failed = {(c.asset_key.to_user_string(), c.check_name): c for c in checks if not c.passed}
    # The demo's drifted exports add columns (Season, conversions): warned, not failed.
    assert set(failed) == {("silver/products", "schema_drift"), ("silver/ad_spend", "schema_drift")}
    assert all(c.severity.value == "WARN" for c in failed.values())
    assert "season" in failed[("silver/products", "schema_drift")].description
    assert "conversions" in failed[("silver/ad_spend", "schema_drift")].description
    # Every gold table is published as Parquet, equal to the table, with its path in metadata.
    for key, meta in mats.items():
        if key.startswith("gold/"):
            path = settings.exports_dir / "gold" / f"{key.split('/')[1]}.parquet"
            assert meta["parquet_path"] == str(path), key
            rows = _count(settings, f"SELECT count(*) FROM read_parquet('{path}')")
            assert rows == meta["dagster/row_count"], key
    assert not list(settings.exports_dir.rglob("*.tmp"))
    # Column lineage, derived from each model's SQL, on every gold materialization.
    for key, meta in mats.items():
        if key.startswith("gold/"):
            lineage = meta["dagster/column_lineage"].deps_by_column
            columns = [c.name for c in meta["dagster/column_schema"].columns]
            assert list(lineage) == columns, key
    # The churn model trained on a year of the app database's orders, beat its floor, and
    # scored every current customer; the KPI report was written where its metadata says.
    model = mats["ml/churn_model"]
    assert model["auc"] > 0.65 and model["n_test"] > 0, model["auc"]
    current = _count(settings, "SELECT count(*) FROM gold.dim_customer WHERE NOT is_deleted")
    assert mats["ml/churn_scores"]["dagster/row_count"] == current > 0
    assert _count(settings, "SELECT count(DISTINCT customer_id) FROM ml.churn_scores") == current
    report = mats["reports/kpi_report"]["path"]
    assert report == str(settings.reports_dir / "kpi_report.html")
    assert "<figure data-chart=" in (settings.reports_dir / "kpi_report.html").read_text()
    ltv = mats["gold/customer_360"]["dagster/column_lineage"].deps_by_column["lifetime_value"]
    assert [(d.asset_key.to_user_string(), d.column_name) for d in ltv] == [
        ("gold/fct_orders", "net")
    ]


def test_dropping_the_same_demo_again_adds_nothing(settings, demo_run) -> None:
    before = {
        t: _count(settings, f"SELECT count(*) FROM {t}")
        for t in ("bronze.files_products", "bronze.files_ad_spend", "silver.products")
    }
    generate_landing_files(settings.landing_dir, scale=SCALE)  # same seed: same bytes
    result = _run(settings)
    assert result.success
    mats = _materializations(result)
    assert mats["bronze/files_products"]["rows_added"] == 0
    assert mats["bronze/files_ad_spend"]["rows_added"] == 0
    assert mats["silver/products"]["rows_added"] == 0
    for table, count in before.items():
        assert _count(settings, f"SELECT count(*) FROM {table}") == count, table


def test_a_failed_blocking_silver_check_stops_gold_in_the_same_run(settings, demo_run) -> None:
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        conn.execute("INSERT INTO silver.products SELECT * FROM silver.products LIMIT 1")
    result = _run(settings)
    assert not result.success
    mats = _materializations(result)
    assert "gold/dim_product" not in mats  # blocked by silver/products' unique_key check
    assert "gold/marketing_spend_daily" in mats  # other branches still run
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failed == ["silver_products"]
    checks = {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_key == AssetKey(["silver", "products"])
    }
    assert checks["unique_key"] is False and checks["not_null"] is True


def test_the_sensor_run_request_loads_only_its_feed(settings) -> None:
    path = write_csv(
        settings.landing_dir,
        "ad_spend/email_2026-10-01.csv",
        "date,channel,campaign,spend,impressions,clicks\n2026-10-01,email,c1,1.50,100,3\n",
    )
    os.utime(path, (time.time() - 60, time.time() - 60))  # settled
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("landing_zone_sensor")
    context = build_sensor_context(
        instance=DagsterInstance.ephemeral(),
        resources={"landing_zone": LandingZoneResource(path=str(settings.landing_dir))},
    )
    (request,) = sensor(context).run_requests
    result = _run(settings, run_config=request.run_config, asset_selection=request.asset_selection)
    assert result.success
    assert set(_materializations(result)) == {
        "bronze/files_ad_spend",
        "silver/ad_spend",
        "quarantine/ad_spend",
        "gold/marketing_spend_daily",
    }
    assert _count(settings, "SELECT count(*) FROM silver.ad_spend") == 1


def test_marketing_spend_daily_figures_are_right(settings) -> None:
    """Hand-computed: spend, impressions, clicks, CTR and CPC per date and channel."""
    header = "date,channel,campaign,spend,impressions,clicks\n"
    write_csv(
        settings.landing_dir,
        "ad_spend/google_ads_2026-10-01.csv",
        header
        + "2026-10-01,google_ads,a,100.00,10000,200\n2026-10-01,google_ads,b,50.50,5000,50\n",
    )
    write_csv(
        settings.landing_dir,
        "ad_spend/email_2026-10-01.csv",
        header + "2026-10-01,email,news,0.00,0,0\n",
    )
    write_csv(  # a corrected re-delivery of campaign b: it replaces the first version
        settings.landing_dir,
        "ad_spend/google_ads_2026-10-01_corrected.csv",
        header + "2026-10-01,google_ads,b,49.50,5000,50\n",
    )
    selection = [
        AssetKey(["bronze", "files_ad_spend"]),
        AssetKey(["silver", "ad_spend"]),
        AssetKey(["quarantine", "ad_spend"]),
        AssetKey(["gold", "marketing_spend_daily"]),
    ]
    assert _run(settings, asset_selection=selection).success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        rows = conn.execute(
            "SELECT channel, campaigns, spend, impressions, clicks, ctr, cpc "
            "FROM gold.marketing_spend_daily ORDER BY channel"
        ).fetchall()
    assert rows == [
        ("email", 1, Decimal("0.00"), 0, 0, None, None),
        ("google_ads", 2, Decimal("149.50"), 15000, 250, 0.016667, 0.598),
    ]


def test_funnel_daily_matches_counts_computed_from_the_published_events(
    demo_run_with_ml, clickstream
) -> None:
    settings, _manifest, _result = demo_run_with_ml
    messages, manifest = generate_clickstream(CLICKSTREAM_EVENTS, seed=11)
    assert manifest == clickstream  # the very events the fixture published
    first, _malformed = truth(messages)
    assert _count(settings, "SELECT count(*) FROM silver.events") == len(first)

    expected: dict[tuple, list] = {}
    for session in sessionize(list(first.values())):
        row = expected.setdefault((session["date"], session["channel"]), [0] * 6 + [Decimal(0)])
        row[0] += 1
        for i, stage in enumerate(FUNNEL_STAGES, start=1):
            row[i] += stage in session["types"]
        row[5] += session["purchases"]
        row[6] += session["revenue"]
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        actual = {
            (r[0], r[1]): list(r[2:9])
            for r in conn.execute(
                "SELECT date, channel, sessions, product_view_sessions, add_to_cart_sessions, "
                "checkout_sessions, purchase_sessions, purchases, revenue FROM gold.funnel_daily"
            ).fetchall()
        }
        rates = conn.execute(
            "SELECT count(*) FROM gold.funnel_daily WHERE conversion_rate <> "
            "round(purchase_sessions / sessions, 4) OR view_to_cart_rate IS DISTINCT FROM "
            "round(add_to_cart_sessions / nullif(product_view_sessions, 0), 4)"
        ).fetchone()[0]
        sessions = conn.execute("SELECT count(*) FROM gold.sessions").fetchone()[0]
    assert actual == expected
    assert rates == 0
    assert sessions == sum(row[0] for row in expected.values())
    assert sum(row[4] for row in expected.values()) > 0  # the demo does sell something


def test_silver_events_are_stored_by_day_and_the_run_says_which_days_it_touched(
    demo_run_with_ml, clickstream
) -> None:
    settings, _manifest, result = demo_run_with_ml
    meta = _materializations(result)["silver/events"]
    days = meta["days_touched"]
    assert days == sorted(days) and len(days) == clickstream.days
    assert meta["partition_column"] == "event_date" and "| event_date |" in meta["partitions"]
    assert meta["rows_added"] == clickstream.events
    per_day = dict(
        duckdb.connect(str(settings.warehouse_path), read_only=True)
        .execute("SELECT CAST(event_date AS VARCHAR), count(*) FROM silver.events GROUP BY 1")
        .fetchall()
    )
    assert sorted(per_day) == days and sum(per_day.values()) == clickstream.events


def test_app_database_tables_in_silver_equal_the_source(
    settings, postgres, app_db, demo_run
) -> None:
    """The demo app database captured by medallion_job (snapshot), then more workload and a
    second run (changes): silver holds exactly the rows PostgreSQL holds, and the history's
    current versions are those rows."""
    with postgres.connect(dbname=app_db) as pg:
        apply_workload(pg, transactions=150, seed=99)
    job = build_definitions(settings).resolve_job_def(MAIN_JOB)
    with DagsterInstance.ephemeral() as instance:
        second = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
        logs = [repr(entry) for entry in instance.all_logs(second.run_id)]
    assert second.success
    # The database password reaches libpq only: not the run's log, not any metadata.
    assert any("app_db:" in line and "changes in" in line for line in logs)
    assert not any(postgres.password in line for line in logs)
    cdc_meta = _materializations(second)["bronze/app_db_customers"]
    assert cdc_meta["rows_added"] > 0 and postgres.password not in repr(cdc_meta)
    with postgres.connect(dbname=app_db) as pg:
        truth = app_db_snapshot(pg)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        for table, key in (("customers", "customer_id"), ("orders", "order_id")):
            columns = list(truth[table][0])
            rows = conn.execute(
                f"SELECT {', '.join(columns)} FROM silver.{table} "
                f"{'WHERE NOT _deleted' if table == 'orders' else ''} ORDER BY {key}"
            ).fetchall()
            assert rows == [tuple(r[c] for c in columns) for r in truth[table]], table
        items = conn.execute(
            "SELECT order_id, line_no, sku, quantity, unit_price FROM silver.order_items "
            "ORDER BY order_id, line_no"
        ).fetchall()
        assert items == [
            (r["order_id"], r["line_no"], r["sku"], r["quantity"], r["unit_price"])
            for r in truth["order_items"]
        ]
        current = conn.execute(
            "SELECT count(*) FROM silver.customers_history WHERE is_current"
        ).fetchone()[0]
        versions = conn.execute("SELECT count(*) FROM silver.customers_history").fetchone()[0]
    assert current == len(truth["customers"]) and versions > current


def test_churn_model_retrained_with_the_same_seed_gives_the_same_model(
    demo_run_with_ml,
) -> None:
    """Training is deterministic: same data, same seed, same version and metrics."""
    settings, _, first = demo_run_with_ml
    before = _materializations(first)["ml/churn_model"]
    again = _run(settings, asset_selection=[AssetKey(["ml", "churn_model"])])
    assert again.success
    after = _materializations(again)["ml/churn_model"]
    for key in ("model_version", "auc", "precision_at_top_decile", "baseline_rate", "n_train"):
        assert after[key] == before[key], key
    assert before["auc"] > 0.65
