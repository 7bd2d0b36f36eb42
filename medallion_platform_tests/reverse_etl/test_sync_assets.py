"""The sync assets through Dagster, against the emulators, on a real warehouse file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import duckdb
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AutomationCondition,
    DagsterInstance,
    materialize,
)

from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.defs.reverse_etl import (
    CHECK_NAME,
    build_reverse_etl_automation_sensor,
    build_reverse_etl_defs,
)
from medallion_platform.settings import PlatformSettings
from medallion_platform_tests.reverse_etl import (
    TOKEN,
    Emulators,
    changed,
    create_gold,
    expected_salesforce,
    make_customers,
    packaged_syncs,
    running_emulators,
    salesforce_state,
    sync,
    write_customers,
)

SF_KEY = AssetKey(["reverse_etl", "salesforce_contacts"])
RUN_METADATA = {
    "rows_added",
    "rows_changed",
    "rows_removed",
    "rows_failed",
    "rows_skipped",
    "rows_unchanged",
    "source_rows",
    "api_calls",
    "retries",
    "rate_limited",
    "duration_s",
    "failure_rate",
    "dry_run",
    "destination_object",
    "sync_run_id",
}


@pytest.fixture
def emulators(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulators]:
    """The emulators, and their addresses and credentials in the environment."""
    for started in running_emulators():
        for name, value in started.env.items():
            monkeypatch.setenv(name, value)
        yield started


def materialize_sync(settings: PlatformSettings, spec, instance: DagsterInstance, **config):
    assets, checks, resources = build_reverse_etl_defs([spec], settings)
    run_config = {"ops": {"reverse_etl__" + spec.name: {"config": config}}} if config else None
    return materialize(
        [*assets, *checks],
        resources={
            "warehouse": WarehouseResource(path=str(settings.warehouse_path), lock_timeout_s=10),
            **resources,
        },
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )


def run_metadata(result) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}


def check_result(result):
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_NAME
    return evaluation


def logged_text(instance: DagsterInstance, result) -> str:
    """Everything the run wrote to the event log (messages, metadata, errors), as text."""
    return "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))


def test_the_sync_assets_are_declared_as_the_design_says(settings) -> None:
    syncs = list(packaged_syncs().values())
    assets, checks, resources = build_reverse_etl_defs(syncs, settings)
    specs = {spec.key: spec for a in assets for spec in a.specs}
    assert list(specs) == [AssetKey(["reverse_etl", s.name]) for s in syncs]
    deps = {
        AssetKey(["gold", "customer_360"]),
        AssetKey(["gold", "dim_customer"]),
        AssetKey(["ml", "churn_scores"]),
    }
    for sync_spec, spec in zip(syncs, specs.values(), strict=True):
        assert spec.group_name == "reverse_etl"
        assert {dep.asset_key for dep in spec.deps} == deps
        assert spec.kinds == {sync_spec.destination, "duckdb"}
        assert spec.owners == [sync_spec.owner] and spec.tags["layer"] == "reverse_etl"
        assert len(spec.description or "") > 40
        assert spec.freshness_policy.fail_window.to_timedelta() == timedelta(minutes=120)
        assert spec.automation_condition == AutomationCondition.eager()
        assert spec.metadata["destination_object"] == sync_spec.object
    assert [key.name for c in checks for key in c.check_keys] == [CHECK_NAME] * 3
    # Credentials are the names of variables in the definitions, never values.
    assert set(resources) == {
        "salesforce_destination",
        "hubspot_destination",
        "zendesk_destination",
    }
    # Each client argument's variable as its destination declares it; no value in the definitions.
    zendesk, salesforce = resources["zendesk_destination"], resources["salesforce_destination"]
    assert zendesk.env == {
        "base_url": "ZENDESK_BASE_URL",
        "email": "ZENDESK_EMAIL",
        "api_token": "ZENDESK_API_TOKEN",
    }
    # Optional settings (Salesforce's token, or a connected app) are read when set.
    assert salesforce.env == {"instance_url": "SALESFORCE_INSTANCE_URL"}
    sensor = build_reverse_etl_automation_sensor()
    assert sensor.name == "reverse_etl_automation"


def test_the_deps_are_assets_of_the_packaged_definitions() -> None:
    from medallion_platform.definitions import defs

    keys = set(defs().resolve_asset_graph().get_all_asset_keys())
    for spec in packaged_syncs().values():
        assert {AssetKey(t.split(".")) for t in spec.tables} <= keys


def test_materialize_reports_the_run_and_checks_the_failure_rate(settings, emulators) -> None:
    customers = make_customers(60)
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        create_gold(conn, customers)
    instance = DagsterInstance.ephemeral()
    spec = sync("salesforce_contacts", batch_size=25)

    first = materialize_sync(settings, spec, instance)
    assert first.success
    metadata = run_metadata(first)
    assert set(metadata) >= RUN_METADATA
    # 3 upserts of 25, and the start-of-run describe (check_fields)
    assert (metadata["rows_added"], metadata["rows_failed"], metadata["api_calls"]) == (60, 0, 4)
    assert metadata["destination_object"] == "salesforce Contact" and not metadata["dry_run"]
    assert salesforce_state(emulators.salesforce) == expected_salesforce(customers)
    check = check_result(first)
    assert check.passed and check.severity == AssetCheckSeverity.ERROR

    # 10% of the customers get an email Salesforce rejects: above the 5% threshold.
    broken = [changed(c, email="broken@") if i % 10 == 0 else c for i, c in enumerate(customers)]
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        write_customers(conn, broken)
    second = materialize_sync(settings, spec, instance)
    assert second.success  # the run worked; the data did not all land: the check says so
    metadata = run_metadata(second)
    assert (metadata["rows_changed"], metadata["rows_failed"]) == (0, 6)
    assert "INVALID_EMAIL_ADDRESS" in metadata["failures_sample"]
    check = check_result(second)
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["failure_rate"].value == 1.0  # 6 sent, 6 rejected
    assert TOKEN not in logged_text(instance, second)


def test_dry_run_from_run_config_sends_nothing_and_materializes_nothing(
    settings, emulators
) -> None:
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        create_gold(conn, make_customers(15))
    instance = DagsterInstance.ephemeral()
    result = materialize_sync(settings, sync("hubspot_contacts"), instance, dry_run=True)
    assert result.success
    assert result.get_asset_materialization_events() == []  # a dry run is never "fresh"
    (observation,) = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observation.metadata["dry_run"].value is True
    assert observation.metadata["rows_added"].value == 15
    assert emulators.hubspot.stats().requests == 0


def test_an_expired_token_fails_the_run_with_a_clear_error_and_no_secret(
    settings, emulators
) -> None:
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        create_gold(conn, make_customers(10))
    emulators.zendesk.expire_token()
    instance = DagsterInstance.ephemeral()
    result = materialize_sync(settings, sync("zendesk_users"), instance)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.to_string()
    assert "zendesk refused the credentials" in message and "ZENDESK_API_TOKEN" in message
    text = logged_text(instance, result)
    assert TOKEN not in text and "refused the credentials" in text
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        assert conn.execute("SELECT count(*) FROM _meta.sync_state").fetchone() == (0,)
