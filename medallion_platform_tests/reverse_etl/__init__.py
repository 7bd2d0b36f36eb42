"""Reverse-ETL tests: a small gold warehouse of known customers, the three SaaS emulators, and
what each destination should hold for those customers (computed here, independently of the
engine's SQL, from the rows themselves)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from medallion_platform.config import platform_config
from medallion_platform.devkit.demo.destinations.hubspot import HubSpotEmulator
from medallion_platform.devkit.demo.destinations.salesforce import SalesforceEmulator
from medallion_platform.devkit.demo.destinations.zendesk import ZendeskEmulator
from medallion_platform.reverse_etl.spec import SyncSpec, declared_catalog, load_syncs
from medallion_platform.warehouse.identifiers import qualified

TOKEN = "rev-etl-Secret-token-0123456789"
ZENDESK_EMAIL = "integrations@acme-outfitters.test"
TABLES = ("gold.dim_customer", "gold.customer_360", "ml.churn_scores")
VIP_FROM = Decimal(2500)  # the packaged zendesk_users sync's vip rule


@dataclass(frozen=True)
class Customer:
    customer_id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    segment: str
    order_count: int
    lifetime_value: Decimal
    last_order_date: dt.date | None
    churn_probability: float
    risk_band: str


def make_customers(n: int, *, invalid_every: int = 0, no_orders_every: int = 0) -> list[Customer]:
    """``n`` deterministic customers; every ``invalid_every``-th has an invalid (but unique)
    email, every ``no_orders_every``-th has no orders (so no sync sends it)."""
    customers = []
    for i in range(1, n + 1):
        bad = invalid_every and i % invalid_every == 0
        no_orders = no_orders_every and i % no_orders_every == 0
        probability = round((i * 37 % 100) / 100, 4)
        customers.append(
            Customer(
                customer_id=f"C{i:05d}",
                email=f"bad-email-{i}@" if bad else f"Customer{i:05d}@Example.com",
                first_name=f"First{i}",
                last_name=None if i % 11 == 0 else f"Last{i}",
                segment=("retail", "pro", "outdoor_club")[i % 3],
                order_count=0 if no_orders else 1 + i % 5,
                lifetime_value=Decimal(0) if no_orders else Decimal(i * 7919 % 500_000) / 100,
                last_order_date=None if no_orders else dt.date(2025, 1, 1) + dt.timedelta(i % 300),
                churn_probability=probability,
                risk_band="high"
                if probability >= 0.7
                else "medium"
                if probability >= 0.4
                else "low",
            )
        )
    return customers


def with_orders(customers: Iterable[Customer]) -> list[Customer]:
    return [c for c in customers if c.order_count > 0]


def changed(customer: Customer, **values: Any) -> Customer:
    return replace(customer, **values)


# -- the warehouse ---------------------------------------------------------------------------


def create_gold(conn: duckdb.DuckDBPyConnection, customers: list[Customer]) -> None:
    """The tables the packaged syncs read, with the column types the platform declares (taken
    from the same declared catalog the spec validation uses), holding ``customers``."""
    catalog = declared_catalog(platform_config())
    try:
        for table in TABLES:
            schema, name = table.split(".")
            columns = catalog.execute(f"DESCRIBE {qualified(schema, name)}").fetchall()
            ddl = ", ".join(f'"{c[0]}" {c[1]}' for c in columns)
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute(f"CREATE OR REPLACE TABLE {qualified(schema, name)} ({ddl})")
    finally:
        catalog.close()
    write_customers(conn, customers)


def write_customers(conn: duckdb.DuckDBPyConnection, customers: list[Customer]) -> None:
    """Replace the customers (an upstream rebuild of gold and of the scores)."""
    dim = pa.Table.from_pylist(
        [
            {
                "customer_id": c.customer_id,
                "email": c.email,
                "first_name": c.first_name,
                "last_name": c.last_name,
                "segment": c.segment,
                "is_deleted": False,
            }
            for c in customers
        ]
    )
    c360 = pa.Table.from_pylist(
        [
            {
                "customer_id": c.customer_id,
                "email": c.email,
                "segment": c.segment,
                "order_count": c.order_count,
                "lifetime_value": c.lifetime_value,
                "last_order_date": c.last_order_date,
            }
            for c in customers
        ]
    )
    scores = pa.Table.from_pylist(
        [
            {
                "customer_id": c.customer_id,
                "churn_probability": c.churn_probability,
                "risk_band": c.risk_band,
                "model_version": "v1",
                "cutoff_date": dt.date(2025, 11, 1),
                "scored_at": dt.datetime(2025, 11, 1, 6),
                "scored_by": "model",
            }
            for c in customers
        ]
    )
    for table, rows in zip(TABLES, (dim, c360, scores), strict=True):
        conn.execute(f"DELETE FROM {table}")
        if customers:
            conn.register("_rows", rows)
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
            conn.unregister("_rows")


def state_hashes(conn: duckdb.DuckDBPyConnection, sync: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT identity, row_hash FROM _meta.sync_state WHERE sync = ?", [sync]
    ).fetchall()
    return dict(rows)


def outcomes(conn: duckdb.DuckDBPyConnection, sync: str, run_id: str) -> list[tuple]:
    return conn.execute(
        "SELECT identity, action, status, error FROM _meta.sync_row_outcomes "
        "WHERE sync = ? AND run_id = ? ORDER BY identity",
        [sync, run_id],
    ).fetchall()


# -- the syncs and the emulators -------------------------------------------------------------


def packaged_syncs() -> dict[str, SyncSpec]:
    return {spec.name: spec for spec in load_syncs(config=platform_config())}


def sync(packaged: str, **changes: Any) -> SyncSpec:
    """A packaged sync, optionally with some settings changed (e.g. a smaller batch_size)."""
    spec = packaged_syncs()[packaged]
    return spec.model_copy(update=changes) if changes else spec


@dataclass
class Emulators:
    salesforce: SalesforceEmulator
    hubspot: HubSpotEmulator
    zendesk: ZendeskEmulator

    @property
    def env(self) -> dict[str, str]:
        """The environment the destination clients read."""
        return {
            "SALESFORCE_INSTANCE_URL": self.salesforce.base_url,
            "SALESFORCE_ACCESS_TOKEN": TOKEN,
            "HUBSPOT_BASE_URL": self.hubspot.base_url,
            "HUBSPOT_ACCESS_TOKEN": TOKEN,
            "ZENDESK_BASE_URL": self.zendesk.base_url,
            "ZENDESK_EMAIL": ZENDESK_EMAIL,
            "ZENDESK_API_TOKEN": TOKEN,
        }


def running_emulators() -> Iterator[Emulators]:
    """The three emulators on 127.0.0.1, in this process (a test module's fixture yields from
    it); Zendesk jobs run after 10 ms and HubSpot keeps its real 100 requests / 10 s limit."""
    with (
        SalesforceEmulator(token=TOKEN) as salesforce,
        HubSpotEmulator(token=TOKEN) as hubspot,
        ZendeskEmulator(token=TOKEN, email=ZENDESK_EMAIL, job_delay=0.01) as zendesk,
    ):
        yield Emulators(salesforce, hubspot, zendesk)


ZENDESK_FAST = {"poll_first_s": 0.02, "poll_min_s": 0.01}  # client options: poll soon


# -- what each destination should hold -------------------------------------------------------


def _money(value: Decimal) -> float:
    return float(round(value, 2))


def expected_salesforce(customers: Iterable[Customer]) -> dict[str, dict[str, Any]]:
    return {
        c.customer_id: {
            "Acme_Customer_Id__c": c.customer_id,
            "Email": c.email,
            "FirstName": c.first_name,
            "LastName": c.last_name or "(unknown)",
            "LTV__c": _money(c.lifetime_value),
            "Churn_Risk__c": round(c.churn_probability, 4),
            "Segment__c": c.segment,
            "Last_Order_Date__c": c.last_order_date.isoformat() if c.last_order_date else None,
        }
        for c in with_orders(customers)
    }


def salesforce_state(emulator: SalesforceEmulator) -> dict[str, dict[str, Any]]:
    fields = next(iter(expected_salesforce(make_customers(1)).values())).keys()
    return {key: {f: rec.get(f) for f in fields} for key, rec in emulator.records().items()}


def expected_hubspot(customers: Iterable[Customer]) -> dict[str, dict[str, Any]]:
    """HubSpot keeps property values as strings and emails lower-cased."""
    return {
        c.email.lower(): {
            "email": c.email.lower(),
            "firstname": c.first_name,
            "lastname": c.last_name,
            "acme_customer_id": c.customer_id,
            "lifetime_value": _money(c.lifetime_value),
            "churn_risk": round(c.churn_probability, 4),
            "acme_segment": c.segment,
            "last_order_date": c.last_order_date.isoformat() if c.last_order_date else None,
        }
        for c in with_orders(customers)
        if c.email
    }


def hubspot_state(emulator: HubSpotEmulator) -> dict[str, dict[str, Any]]:
    numbers = ("lifetime_value", "churn_risk")
    state = {}
    for key, record in emulator.records().items():
        props = record["properties"]
        values = {
            f: props.get(f) or None
            for f in next(iter(expected_hubspot(make_customers(1)).values()))
        }
        for name in numbers:
            values[name] = float(values[name]) if values[name] is not None else None
        state[key] = values
    return state


def expected_zendesk(customers: Iterable[Customer]) -> dict[str, dict[str, Any]]:
    def tags(c: Customer) -> list[str]:
        return [
            tag
            for tag, holds in (
                ("vip", c.lifetime_value >= VIP_FROM),
                ("churn_risk_high", c.risk_band == "high"),
            )
            if holds
        ]

    return {
        c.customer_id: {
            "external_id": c.customer_id,
            "email": c.email.lower() if c.email else None,
            "name": " ".join(p for p in (c.first_name, c.last_name) if p) or "Acme customer",
            "tags": tags(c),
            "user_fields": {
                "ltv": _money(c.lifetime_value),
                "churn_risk": round(c.churn_probability, 4),
                "segment": c.segment,
                "last_order_date": c.last_order_date.isoformat() if c.last_order_date else None,
            },
        }
        for c in with_orders(customers)
    }


def zendesk_state(emulator: ZendeskEmulator) -> dict[str, dict[str, Any]]:
    keys = ("external_id", "email", "name", "tags", "user_fields")
    return {key: {k: user.get(k) for k in keys} for key, user in emulator.records().items()}
