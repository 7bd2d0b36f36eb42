"""Gold's net revenue against the truth, computed straight from the sources.

The app database (real PostgreSQL) and the payments API (the emulator over HTTP) are read
directly, with psycopg and httpx GETs, never through the warehouse: net revenue per currency is
the revenue orders' totals minus every succeeded refund of them. Some charges are malformed in
the API (silver quarantines them), among them charges that were refunded, so a gold that
reaches refunds only through the charges silver kept overstates net revenue and fails here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import duckdb
import httpx
import pytest
from dagster import AssetCheckSeverity, DagsterInstance

from medallion_platform.definitions import MAIN_JOB, build_definitions
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.devkit.demo.app_db import orders_to_charge
from medallion_platform.devkit.demo.generator import generate_landing_files
from medallion_platform.devkit.demo.payments_api import PaymentsApi, payments_for_orders
from medallion_platform.settings import PlatformSettings
from medallion_platform_tests.conftest import PAYMENTS_TOKEN

# How each chosen charge is broken, so silver quarantines it (each breaks the contract).
MALFORMED = (
    ("currency", "xxx"),  # not one of usd, eur, gbp
    ("amount", -100),  # below the minimum 0
    ("status", "captured"),  # not an accepted status
    ("currency", "xxx"),
)


def _malform(data: Any, revenue_orders: set[str]) -> list[dict[str, Any]]:
    """Break two refunded charges (one EUR, one USD) and two unrefunded ones, all succeeded
    charges of revenue orders; returns them as they were before."""
    refunded = {r["charge"] for r in data.refunds if r["status"] == "succeeded"}
    candidates = sorted(
        (
            c
            for c in data.charges
            if c["status"] == "succeeded"
            and c["currency"] in ("usd", "eur")
            and c["metadata"]["order_id"] in revenue_orders
        ),
        key=lambda c: c["id"],
    )
    picks = [
        next(c for c in candidates if c["id"] in refunded and c["currency"] == "eur"),
        next(c for c in candidates if c["id"] in refunded and c["currency"] == "usd"),
        *[c for c in candidates if c["id"] not in refunded][:2],
    ]
    originals = [dict(c) for c in picks]
    for charge, (field, value) in zip(picks, MALFORMED, strict=True):
        charge[field] = value
    return originals


@pytest.fixture
def payments_with_malformed_charges(
    postgres: PostgresServer, app_db: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PaymentsApi, list[dict[str, Any]]]]:
    """The payments API charging the app database's orders (as the demo's does), with four
    charges malformed; yields the API and those charges as they were."""
    with postgres.connect(dbname=app_db) as conn:
        orders = orders_to_charge(conn)
    data = payments_for_orders(orders)
    broken = _malform(data, {o.order_id for o in orders if o.status != "cancelled"})
    with PaymentsApi(data, token=PAYMENTS_TOKEN) as api:
        monkeypatch.setenv("PAYMENTS_API_BASE_URL", api.base_url)
        monkeypatch.setenv("PAYMENTS_API_TOKEN", PAYMENTS_TOKEN)
        yield api, broken


def _list(api: PaymentsApi, path: str) -> list[dict[str, Any]]:
    """Every object of a Stripe-style list endpoint, page by page (``starting_after``)."""
    objects: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    headers = {"Authorization": f"Bearer {PAYMENTS_TOKEN}"}
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=30) as client:
        while True:
            response = client.get(path, params=params)
            response.raise_for_status()
            page = response.json()
            objects += page["data"]
            if not page["has_more"]:
                return objects
            params["starting_after"] = page["data"][-1]["id"]


def _truth(postgres: PostgresServer, app_db: str, api: PaymentsApi) -> dict:
    """Net revenue per currency and refunds per order, from the sources themselves."""
    with postgres.connect(dbname=app_db) as conn:
        orders = {
            order_id: (currency, total)
            for order_id, currency, total in conn.execute(
                "SELECT order_id, currency, order_total FROM public.orders "
                "WHERE status <> 'cancelled'"
            ).fetchall()
        }
    order_of = {c["id"]: c["metadata"]["order_id"] for c in _list(api, "/v1/charges")}
    refunded: dict[str, Decimal] = defaultdict(Decimal)
    for refund in _list(api, "/v1/refunds"):
        order_id = order_of[refund["charge"]]
        if refund["status"] == "succeeded" and order_id in orders:
            assert refund["currency"].upper() == orders[order_id][0]  # a sane source
            refunded[order_id] += Decimal(refund["amount"]) / 100
    net: dict[str, Decimal] = defaultdict(Decimal)
    for order_id, (currency, total) in orders.items():
        net[currency] += total - refunded.get(order_id, Decimal(0))
    return {"net": dict(net), "refunded": dict(refunded)}


def _run(settings: PlatformSettings):
    """medallion_job in this process, minus the churn model and the report (not needed)."""
    job = build_definitions(settings).resolve_job_def(MAIN_JOB)
    selection = [
        k for k in job.asset_layer.selected_asset_keys if k.path[0] not in ("ml", "reports")
    ]
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with DagsterInstance.ephemeral() as instance:
        return job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=quiet, asset_selection=selection
        )


def test_gold_net_revenue_equals_the_sources_with_refunded_charges_in_quarantine(
    settings: PlatformSettings,
    postgres: PostgresServer,
    app_db: str,
    clickstream,
    payments_with_malformed_charges,
) -> None:
    api, broken = payments_with_malformed_charges
    generate_landing_files(settings.landing_dir, scale=0.05)  # the feeds dim_date also spans
    result = _run(settings)
    assert result.success

    truth = _truth(postgres, app_db, api)
    broken_ids = {c["id"] for c in broken}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        quarantined = {
            r[0]
            for r in conn.execute(
                "SELECT _raw ->> 'charge_id' FROM quarantine.payments_charges"
            ).fetchall()
        }
        gold_net = dict(
            conn.execute("SELECT currency, sum(net) FROM gold.daily_revenue GROUP BY 1").fetchall()
        )
        refunded = dict(
            conn.execute(
                "SELECT order_id, refunded_amount FROM gold.fct_orders "
                "WHERE is_revenue AND refunded_amount > 0"
            ).fetchall()
        )
        statuses = dict(
            conn.execute(
                "SELECT order_id, payment_status FROM gold.fct_orders WHERE order_id IN "
                f"({', '.join('?' for _ in broken)})",
                [c["metadata"]["order_id"] for c in broken],
            ).fetchall()
        )

    # The failure mode is really there: the malformed charges are in quarantine, and two of
    # them carry refunds (EUR and USD) that a gold reaching refunds through silver's charges
    # would lose.
    assert broken_ids <= quarantined
    lost = {c["metadata"]["order_id"]: c["currency"] for c in broken if c["amount_refunded"]}
    assert sorted(lost.values()) == ["eur", "usd"] and set(lost) <= set(truth["refunded"])

    assert gold_net == truth["net"]
    assert set(truth["net"]) == {"EUR", "USD"}
    assert refunded == truth["refunded"]
    # What was paid for them is not known: not 'unpaid'.
    assert statuses == {c["metadata"]["order_id"]: "unknown" for c in broken}

    checks = {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }
    reconciled = [v for (_, name), v in checks.items() if name.endswith("_reconciles_with_silver")]
    assert len(reconciled) == 7 and all(e.passed for e in reconciled)
    # The refunds whose charge is quarantined are orphans in silver: a warning naming them.
    orphans = checks[("silver/payments_refunds", "no_orphans")]
    assert not orphans.passed and orphans.severity == AssetCheckSeverity.WARN
    assert orphans.metadata["orphans"].value == len(lost)
    sample = " ".join(orphans.metadata["sample"].value)
    assert all(c["id"] in sample for c in broken if c["amount_refunded"])


def test_a_charge_captured_then_refunded_days_later_reaches_silver_and_gold_on_the_next_sync(
    settings: PlatformSettings,
    postgres: PostgresServer,
    app_db: str,
    clickstream,
    app_payments_api: PaymentsApi,
) -> None:
    """A placed order's charge is pending at the first sync; a day later it succeeds, two
    days after creation it is refunded in full. Its ``created`` never changes, so the
    charges list (filtered on ``created``, an hour of lookback) never shows it again: before
    the change log was read, silver kept it pending and gold called the order 'pending'."""
    api = app_payments_api
    generate_landing_files(settings.landing_dir, scale=0.05)
    assert _run(settings).success
    charge = next(c for c in _list(api, "/v1/charges") if c["status"] == "pending")
    order_id = charge["metadata"]["order_id"]
    day = 86_400
    api.update_charge(
        charge["id"],
        {"status": "succeeded", "paid": True},
        at=charge["created"] + day,
        event="charge.succeeded",
    )
    api.refund_charge(charge["id"], charge["amount"], at=charge["created"] + 2 * day)

    assert _run(settings).success
    amount = Decimal(charge["amount"]) / 100
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        silver = conn.execute(
            "SELECT status, amount_refunded FROM silver.payments_charges WHERE charge_id = ?",
            [charge["id"]],
        ).fetchone()
        payment = conn.execute(
            "SELECT status, refunded_amount, net_amount FROM silver.payments WHERE charge_id = ?",
            [charge["id"]],
        ).fetchone()
        gold = conn.execute(
            "SELECT payment_status, refunded_amount FROM gold.fct_orders WHERE order_id = ?",
            [order_id],
        ).fetchone()
        gold_net = dict(
            conn.execute("SELECT currency, sum(net) FROM gold.daily_revenue GROUP BY 1").fetchall()
        )
    assert silver == ("succeeded", amount)
    assert payment == ("succeeded", amount, Decimal(0))
    assert gold == ("refunded", amount)
    assert gold_net == _truth(postgres, app_db, api)["net"]
