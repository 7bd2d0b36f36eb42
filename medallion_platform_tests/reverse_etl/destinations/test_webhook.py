"""The fourth destination, a generic webhook, as the proof that a destination is its own
files: the registry, the sync validation, the Dagster resource and the emulator's command line
find it with no edit elsewhere. Against its emulator on 127.0.0.1 over real HTTP: batches
land, a 5xx is retried, a 4xx rejects the batch's records (recorded, resent next run)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from medallion_platform.config import platform_config
from medallion_platform.defs.reverse_etl import build_reverse_etl_defs
from medallion_platform.devkit.demo.destinations import emulator_info
from medallion_platform.devkit.demo.destinations.__main__ import _parser, settings_from
from medallion_platform.devkit.demo.destinations.webhook import WebhookEmulator
from medallion_platform.reverse_etl.destinations import destination_names, registry
from medallion_platform.reverse_etl.destinations.base import (
    DestinationAuthError,
    DestinationRecord,
)
from medallion_platform.reverse_etl.destinations.http import DestinationConfigError, RetryPolicy
from medallion_platform.reverse_etl.destinations.webhook import WebhookDestination
from medallion_platform.reverse_etl.engine import SyncAuthError, execute
from medallion_platform.reverse_etl.spec import SyncSpec, load_syncs, open_destination
from medallion_platform_tests.reverse_etl import (
    TOKEN,
    Customer,
    create_gold,
    make_customers,
    outcomes,
    with_orders,
    write_customers,
)
from medallion_platform_tests.reverse_etl.test_sync_assets import materialize_sync, run_metadata

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "webhook_syncs.yaml"
PACKAGE = Path(__file__).resolve().parents[3] / "medallion_platform"
FAST = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05)


@pytest.fixture
def spec() -> SyncSpec:
    (webhook,) = load_syncs(CONFIG, config=platform_config())  # checked against the schemas
    return webhook


@pytest.fixture
def receiver() -> Iterator[WebhookEmulator]:
    with WebhookEmulator(token=TOKEN) as emulator:
        yield emulator


@pytest.fixture
def conn(settings) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(settings.warehouse_path))
    yield connection
    connection.close()


def _env(receiver: WebhookEmulator) -> dict[str, str]:
    return {"WEBHOOK_URL": receiver.base_url + "/hooks", "WEBHOOK_TOKEN": TOKEN}


def _run(conn, spec: SyncSpec, receiver: WebhookEmulator):
    destination = open_destination(spec, _env(receiver), retry=FAST)
    try:
        return execute(conn, spec, destination), destination
    finally:
        destination.close()


def _expected(customers: list[Customer]) -> dict[str, dict]:
    return {
        c.customer_id: {
            "customer_id": c.customer_id,
            "email": c.email,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "segment": c.segment,
            "lifetime_value": float(round(c.lifetime_value, 2)),
            "churn_risk": round(c.churn_probability, 4),
            "last_order_date": c.last_order_date.isoformat() if c.last_order_date else None,
        }
        for c in with_orders(customers)
    }


def test_the_registry_finds_it_and_no_other_file_of_the_package_names_it(spec) -> None:
    assert "webhook" in destination_names() and registry()["webhook"] is WebhookDestination
    info = WebhookDestination.info
    assert info.secret_env == ("WEBHOOK_TOKEN",) and info.url_env == "WEBHOOK_URL"
    assert WebhookDestination.name == "webhook" and WebhookDestination.max_batch == 500
    assert emulator_info("webhook").build(_parser().parse_args(["webhook"]), {"token": TOKEN})
    with pytest.raises(KeyError, match="WEBHOOK_TOKEN"):
        settings_from("webhook", {"WEBHOOK_URL": "http://127.0.0.1:1"})
    naming = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"\bwebhook\b", path.read_text(), re.IGNORECASE)
    )
    assert naming == ["devkit/demo/destinations/webhook.py", "reverse_etl/destinations/webhook.py"]
    # The sync's object, identity field and options reach the client as its arguments.
    env = {"WEBHOOK_URL": "https://hooks.example.com", "WEBHOOK_TOKEN": "t"}
    with open_destination(spec, env) as client:
        assert (client.object_name, client.identity_field) == ("customers", "customer_id")
        assert client.path == "/loyalty/customers"
    with pytest.raises(ValueError, match="options: path: path 'no-slash': start with /"):
        SyncSpec.model_validate(
            spec.model_dump(exclude_unset=True) | {"options": {"path": "no-slash"}}
        )
    with pytest.raises(DestinationConfigError, match="WEBHOOK_TOKEN is not set"):
        open_destination(spec, {"WEBHOOK_URL": "https://hooks.example.com"})


def test_batches_land_through_the_dagster_asset(
    spec, receiver, conn, settings, monkeypatch
) -> None:
    """The resource reads its settings from the variables the client declares."""
    customers = make_customers(130, invalid_every=40, no_orders_every=9)
    create_gold(conn, customers)
    conn.close()
    monkeypatch.setenv("WEBHOOK_URL", receiver.base_url + "/hooks")
    monkeypatch.setenv("WEBHOOK_TOKEN", TOKEN)
    _, _, resources = build_reverse_etl_defs([spec], settings)
    assert resources["webhook_destination"].env == {"url": "WEBHOOK_URL", "token": "WEBHOOK_TOKEN"}
    with DagsterInstance.ephemeral() as instance:
        result = materialize_sync(settings, spec, instance)
    assert result.success
    invalid = {c.customer_id for c in with_orders(customers) if c.email.startswith("bad")}
    valid = [c for c in customers if c.customer_id not in invalid]
    assert invalid and receiver.records() == _expected(valid)
    sent = len(with_orders(customers))
    assert [len(b["records"]) for b in receiver.batches] == [50, 50, sent - 100]
    assert {r.path for r in receiver.requests} == {"/hooks/loyalty/customers"}
    metadata = run_metadata(result)
    assert metadata["rows_added"] == len(with_orders(valid))
    assert metadata["rows_failed"] == len(invalid)


def test_a_5xx_is_retried_and_the_batch_lands_once(spec, receiver, conn) -> None:
    customers = make_customers(60)
    create_gold(conn, customers)
    receiver.fail_next(2, status=503)
    receiver.fail_next(1, status=502, after_processing=True)  # applied, answer lost: resent
    result, client = _run(conn, spec, receiver)
    assert result.failed == 0 and result.added == len(with_orders(customers))
    assert receiver.records() == _expected(customers)
    statuses = [r.status for r in receiver.requests]
    assert statuses[:4] == [503, 503, 502, 200] and client.stats.retries == 3


def test_a_4xx_rejects_the_batch_records_which_land_at_the_next_run(spec, receiver, conn) -> None:
    customers = make_customers(80)
    create_gold(conn, customers)
    receiver.fail_next(1, status=422)
    first, _ = _run(conn, spec, receiver)
    assert first.failed == 50 and first.added == len(with_orders(customers)) - 50
    failed = [o for o in outcomes(conn, spec.name, first.run_id) if o[2] == "failed"]
    assert len(failed) == 50 and all("HTTP 422" in o[3] and TOKEN not in o[3] for o in failed)
    # Row failures the client reports, not a failed call (the engine's "batch failed: ...").
    assert not any(o[3].startswith("batch failed") for o in failed)
    assert len(receiver.records()) == len(with_orders(customers)) - 50
    second, _ = _run(conn, spec, receiver)
    assert second.added == 50 and second.failed == 0
    assert receiver.records() == _expected(customers)


def test_mirror_removes_and_a_refused_token_stops_the_run(spec, receiver, conn) -> None:
    customers = make_customers(30)
    create_gold(conn, customers)
    _run(conn, spec, receiver)
    write_customers(conn, customers[5:])
    second, _ = _run(conn, spec, receiver)
    assert second.removed == len(with_orders(customers[:5]))
    assert set(receiver.records()) == set(_expected(customers[5:]))
    receiver.expire_token()
    write_customers(conn, customers)
    with pytest.raises(SyncAuthError, match="refused the credentials") as refused:
        _run(conn, spec, receiver)
    assert TOKEN not in str(refused.value)
    receiver.set_token(TOKEN)
    receiver.fail_next(1, status=403)
    destination = open_destination(spec, _env(receiver))
    try:
        assert destination.upsert([]) == []  # nothing to send: no call
        with pytest.raises(DestinationAuthError, match="HTTP 403"):
            destination.upsert([DestinationRecord(identity="C1", fields={})])
    finally:
        destination.close()
