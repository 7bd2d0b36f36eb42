"""The payments API assets through Dagster: silver figures, metadata, and no leaked secret."""

from __future__ import annotations

from decimal import Decimal

import duckdb
from dagster import DagsterInstance, materialize, serialize_value

from medallion_platform.connectors.rest import RestSource
from medallion_platform.definitions import build_definitions
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.defs.rest import (
    RestApiResource,
    build_rest_bronze_asset,
    rest_resource_key,
)
from medallion_platform.devkit.demo.payments_api import generate_payments
from medallion_platform_tests.conftest import PAYMENTS_CHARGES, PAYMENTS_TOKEN

QUIET = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}


def _run_payments_job(settings, instance):
    job = build_definitions(settings).resolve_job_def("payments_job")
    return job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)


def test_payments_job_builds_silver_payments_with_refunds_attached(
    settings, payments_api, capfd
) -> None:
    payments_api.faults.add("429", path="/v1/charges", after=1, count=2, retry_after=0.05)
    with DagsterInstance.ephemeral() as instance:
        result = _run_payments_job(settings, instance)
        assert result.success
        logs = serialize_value(instance.all_logs(result.run_id))
    data = generate_payments(PAYMENTS_CHARGES)  # what the fixture serves (deterministic)
    refunded: dict[str, int] = {}
    for refund in data.refunds:
        refunded[refund["charge"]] = refunded.get(refund["charge"], 0) + refund["amount"]
    valid = [c for c in data.charges if c["currency"] in ("usd", "eur", "gbp")]
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        rows = {
            charge_id: (amount, refunded_amount, net, currency)
            for charge_id, amount, refunded_amount, net, currency in conn.execute(
                "SELECT charge_id, amount, refunded_amount, net_amount, currency "
                "FROM silver.payments"
            ).fetchall()
        }
        quarantined = conn.execute(
            "SELECT count(*) FROM quarantine.payments_charges WHERE _reason LIKE 'currency:%'"
        ).fetchone()[0]
    assert len(rows) == len(valid)
    for charge in valid:
        amount, refunded_amount, net, currency = rows[charge["id"]]
        assert amount == Decimal(charge["amount"]) / 100
        assert refunded_amount == Decimal(refunded.get(charge["id"], 0)) / 100
        assert net == amount - refunded_amount
        assert currency == charge["currency"].upper()
    assert quarantined == len(data.charges) - len(valid)

    meta = {
        e.event_specific_data.materialization.asset_key.to_user_string(): {
            k: v.value for k, v in e.event_specific_data.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }
    charges = meta["bronze/payments_charges"]
    assert charges["rows_added"] == len(data.charges)
    # + 2 retries, + 1 call noting where the event log stands (the first sync)
    assert charges["retries"] == 2 and charges["api_calls"] == charges["pages"] + 3
    assert meta["silver/payments"]["dagster/row_count"] == len(valid)

    token = PAYMENTS_TOKEN
    captured = capfd.readouterr()
    assert token not in logs and token not in str(meta)
    assert token not in captured.out + captured.err


def test_a_revoked_token_fails_the_run_with_a_clear_message_and_no_secret(
    settings, payments_api, capfd
) -> None:
    payments_api.revoke_token()
    with DagsterInstance.ephemeral() as instance:
        result = _run_payments_job(settings, instance)
        logs = serialize_value(instance.all_logs(result.run_id))
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    messages = " ".join(e.event_specific_data.error.to_string() for e in failures)
    assert "HTTP 401" in messages and "Invalid API Key" in messages
    captured = capfd.readouterr()
    assert PAYMENTS_TOKEN not in messages + logs + captured.out + captured.err


def test_a_budget_reached_shows_in_the_materialization_and_the_next_run_continues(
    settings, payments_api, config
) -> None:
    """Two pages a run, declared on the endpoint: the asset succeeds, says the budget was
    reached and that the sync is not complete; the next materialization continues."""
    raw = config.rest_sources[0].model_dump(exclude_unset=True)
    for endpoint in raw["endpoints"]:
        endpoint["budget"] = {"max_pages": 2}
    source = RestSource.model_validate(raw)
    charges = next(e for e in source.endpoints if e.name == "charges")
    bronze = build_rest_bronze_asset(source, charges)
    resources = {
        "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
        rest_resource_key(source): RestApiResource(
            base_url=payments_api.base_url, token=PAYMENTS_TOKEN
        ),
    }
    metadata, logs = [], []
    with DagsterInstance.ephemeral() as instance:
        for _ in range(2):
            result = materialize([bronze], resources=resources, instance=instance)
            assert result.success
            event = result.get_asset_materialization_events()[0]
            metadata.append({k: v.value for k, v in event.materialization.metadata.items()})
            logs.append(serialize_value(instance.all_logs(result.run_id)))
    assert [m["budget_reached"] for m in metadata] == ["max_pages=2", "(no)"]
    assert [m["complete"] for m in metadata] == [False, True]
    assert [m["rows_added"] for m in metadata] == [200, PAYMENTS_CHARGES - 200]
    assert metadata[1]["resumed"] is True
    assert "charges: budget max_pages=2 reached" in logs[0]
    assert "budget max_pages=2 reached" not in logs[1]
