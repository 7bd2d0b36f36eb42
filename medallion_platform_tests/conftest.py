"""Shared fixtures: every test gets its own platform home with a real DuckDB file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from medallion_platform.config import PlatformConfig, platform_config
from medallion_platform.connectors.files import FileFeed
from medallion_platform.connectors.streams.kafka import create_topic, produce
from medallion_platform.contracts import Contract
from medallion_platform.devkit.brokers.tansu import TansuBroker
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.devkit.demo.app_db import apply_workload, orders_to_charge
from medallion_platform.devkit.demo.app_db import seed as seed_app_db
from medallion_platform.devkit.demo.calendar import ORDER_HISTORY_DAYS, order_history_start
from medallion_platform.devkit.demo.clickstream import ClickstreamManifest, generate_clickstream
from medallion_platform.devkit.demo.payments_api import (
    PaymentsApi,
    generate_payments,
    payments_for_orders,
)
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import Warehouse

# The suite tests the packaged demo declarations; a team's own MEDALLION_CONFIG_DIR in the
# shell must not change what it builds (tests that use the variable set it themselves).
os.environ.pop("MEDALLION_CONFIG_DIR", None)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PlatformSettings]:
    """A fresh platform home; ``MEDALLION_HOME`` points at it for code that reads the env."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEDALLION_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    settings = PlatformSettings(home=home)
    settings.ensure_dirs()
    yield settings


PAYMENTS_TOKEN = "sk_test_fixture_token_0123456789"
PAYMENTS_CHARGES = 300


@pytest.fixture
def payments_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[PaymentsApi]:
    """A real payments API emulator on 127.0.0.1, and the env vars the code location reads."""
    with PaymentsApi(generate_payments(PAYMENTS_CHARGES), token=PAYMENTS_TOKEN) as api:
        monkeypatch.setenv("PAYMENTS_API_BASE_URL", api.base_url)
        monkeypatch.setenv("PAYMENTS_API_TOKEN", PAYMENTS_TOKEN)
        yield api


@pytest.fixture
def app_payments_api(
    postgres: PostgresServer, app_db: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PaymentsApi]:
    """The payments API charging the app database's orders, as in the demo: gold joins them,
    and its checks (refunds within what was paid, refund rates) hold only if they agree."""
    with postgres.connect(dbname=app_db) as conn:
        orders = orders_to_charge(conn)
    with PaymentsApi(payments_for_orders(orders), token=PAYMENTS_TOKEN) as api:
        monkeypatch.setenv("PAYMENTS_API_BASE_URL", api.base_url)
        monkeypatch.setenv("PAYMENTS_API_TOKEN", PAYMENTS_TOKEN)
        yield api


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One real Kafka-compatible broker (Tansu) on 127.0.0.1 for the whole session."""
    with TansuBroker(tmp_path_factory.mktemp("tansu")) as broker:
        yield broker


CLICKSTREAM_EVENTS = 3_000


@pytest.fixture(scope="session")
def demo_clickstream(kafka_broker: TansuBroker) -> ClickstreamManifest:
    """The demo storefront's clickstream on the packaged config's topic, published once.

    Tests only read it (each has its own warehouse, so each reads it from offset 0); a test
    that publishes its own events uses a topic of its own."""
    messages, manifest = generate_clickstream(CLICKSTREAM_EVENTS, seed=11)
    create_topic(kafka_broker.bootstrap_servers, "clickstream", 3)
    produce(kafka_broker.bootstrap_servers, "clickstream", [(k, v, None) for k, v in messages])
    return manifest


@pytest.fixture
def clickstream(
    kafka_broker: TansuBroker, demo_clickstream: ClickstreamManifest, monkeypatch
) -> ClickstreamManifest:
    """medallion_job reads the clickstream: the env var the packaged stream config names."""
    monkeypatch.setenv("EVENTS_KAFKA_BOOTSTRAP", kafka_broker.bootstrap_servers)
    return demo_clickstream


@pytest.fixture
def warehouse(settings: PlatformSettings) -> Warehouse:
    return Warehouse(settings.warehouse_path, lock_timeout_s=10)


@pytest.fixture
def config() -> PlatformConfig:
    return platform_config()


@pytest.fixture
def products_feed(config: PlatformConfig) -> FileFeed:
    return next(f for f in config.feeds if f.name == "products")


@pytest.fixture
def ad_spend_feed(config: PlatformConfig) -> FileFeed:
    return next(f for f in config.feeds if f.name == "ad_spend")


@pytest.fixture
def products_contract(config: PlatformConfig) -> Contract:
    return config.contract("products")


@pytest.fixture
def ad_spend_contract(config: PlatformConfig) -> Contract:
    return config.contract("ad_spend")


def copy_packaged_config(target: Path) -> Path:
    """The demo's declarations and SQL copied to ``target`` as a MEDALLION_CONFIG_DIR is laid
    out (``*.yaml``, ``models/<layer>/*.sql``): tests edit the copy, never the package."""
    import shutil

    from medallion_platform.config import CONFIG_DIR
    from medallion_platform.gold.spec import MODELS_ROOT

    shutil.copytree(CONFIG_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copytree(MODELS_ROOT, target / "models")
    return target


def write_csv(landing: Path, relpath: str, text: str) -> Path:
    """Drop a file into the landing zone (creating the feed folder), as if an hour ago."""
    path = landing / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return settled(path)


def settled_write(path: Path, data: bytes) -> Path:
    """Drop raw bytes into the landing zone, as if an hour ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return settled(path)


def settled(path: Path, age_s: float = 3600) -> Path:
    """Age a landed file past any feed's settle time, keeping the order files arrived in
    (``ingest_files`` loads a file only once it has not changed for ``settle_seconds``)."""
    st = path.lstat()
    shift = int(age_s * 1e9)
    os.utime(path, ns=(st.st_atime_ns - shift, st.st_mtime_ns - shift), follow_symlinks=False)
    return path


PG_TEST_PASSWORD = "pg-test-Secret-0123"


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One real PostgreSQL (logical decoding on) for the whole session; tests use their own
    databases or schemas."""
    data_dir = tmp_path_factory.mktemp("postgres") / "data"
    with PostgresServer(data_dir, password=PG_TEST_PASSWORD) as server:
        yield server


def fresh_database(postgres: PostgresServer, name: str) -> str:
    """Create database ``name`` (it must not exist yet: one name per test) and return it."""
    from psycopg import sql

    with postgres.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


APP_DB = "demo_app"


@pytest.fixture(scope="session")
def demo_app_db(postgres: PostgresServer) -> str:
    """The demo's app database (seeded, then a workload of inserts, updates and deletes) in
    the session's PostgreSQL. Tests only read it; the packaged CDC source captures it."""
    fresh_database(postgres, APP_DB)
    with postgres.connect(dbname=APP_DB) as conn:
        # A year of orders, as the demo's: the churn model needs history past its horizon.
        seed_app_db(
            conn,
            customers=300,
            orders=900,
            seed=11,
            start=order_history_start(),
            days=ORDER_HISTORY_DAYS,
        )
        apply_workload(conn, transactions=300, seed=11)
    return APP_DB


@pytest.fixture
def app_db(postgres: PostgresServer, demo_app_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """medallion_job captures the app database: the env vars the packaged CDC source names.
    Each test has its own warehouse, so its first run takes a new snapshot (the slot is
    recreated), which keeps tests independent."""
    monkeypatch.setenv("APP_DB_DSN", make_conninfo(postgres.dsn, dbname=demo_app_db))
    monkeypatch.setenv("APP_DB_PASSWORD", postgres.password)
    return demo_app_db
