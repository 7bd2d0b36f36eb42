"""The sync engine against the real clients and the emulators: destination state, not calls."""

from __future__ import annotations

import os
import tracemalloc

import duckdb
import pytest

from medallion_platform.reverse_etl import state
from medallion_platform.reverse_etl.destinations.base import DestinationError
from medallion_platform.reverse_etl.engine import SyncAuthError, execute, run_sync
from medallion_platform.reverse_etl.spec import SyncSpec, open_destination
from medallion_platform_tests.reverse_etl import (
    TOKEN,
    ZENDESK_FAST,
    Emulators,
    changed,
    create_gold,
    expected_hubspot,
    expected_salesforce,
    expected_zendesk,
    hubspot_state,
    make_customers,
    outcomes,
    salesforce_state,
    state_hashes,
    sync,
    with_orders,
    write_customers,
    zendesk_state,
)


def run(conn, spec, emulators: Emulators, **kwargs):
    options = ZENDESK_FAST if spec.destination == "zendesk" else {}
    destination = open_destination(spec, emulators.env, **options)
    try:
        return execute(conn, spec, destination, **kwargs)
    finally:
        destination.close()


def test_rejected_records_are_recorded_retried_and_land_once_fixed(conn, emulators) -> None:
    """Salesforce rejects invalid emails per record; the rest lands exactly as mapped. The
    rejected ones are recorded with Salesforce's error, planned again next run, and land once
    the data is fixed."""
    customers = make_customers(120, invalid_every=17, no_orders_every=13)
    create_gold(conn, customers)
    spec = sync("salesforce_contacts", batch_size=50)
    invalid = {c.customer_id for c in with_orders(customers) if c.email.startswith("bad")}
    valid = [c for c in customers if c.customer_id not in invalid]
    assert invalid

    first = run(conn, spec, emulators)
    assert salesforce_state(emulators.salesforce) == expected_salesforce(valid)
    assert first.added == len(with_orders(valid)) and first.failed == len(invalid)
    failed = [o for o in outcomes(conn, spec.name, first.run_id) if o[2] == "failed"]
    assert {o[0] for o in failed} == invalid
    assert all(o[1] == "add" and "INVALID_EMAIL_ADDRESS" in o[3] for o in failed)
    assert set(state_hashes(conn, spec.name)) == set(expected_salesforce(valid))

    again = run(conn, spec, emulators)  # nothing changed: only the rejected ones are retried
    assert (again.added, again.changed, again.failed) == (0, 0, len(invalid))
    assert again.unchanged == len(with_orders(valid))

    fixed = [
        changed(c, email=f"fixed{c.customer_id}@example.com") if c.customer_id in invalid else c
        for c in customers
    ]
    write_customers(conn, fixed)
    third = run(conn, spec, emulators)
    assert (third.added, third.changed, third.failed) == (len(invalid), 0, 0)
    assert salesforce_state(emulators.salesforce) == expected_salesforce(fixed)
    assert set(state_hashes(conn, spec.name)) == set(expected_salesforce(fixed))


def test_an_unchanged_run_sends_nothing_and_a_change_sends_only_it(conn, emulators) -> None:
    customers = make_customers(300)
    create_gold(conn, customers)
    spec = sync("hubspot_contacts")
    first = run(conn, spec, emulators)
    assert first.added == 300 and hubspot_state(emulators.hubspot) == expected_hubspot(customers)

    requests = len(emulators.hubspot.requests)
    before = emulators.hubspot.records()
    second = run(conn, spec, emulators)
    assert (second.added, second.changed, second.removed, second.api_calls) == (0, 0, 0, 0)
    assert second.unchanged == 300 and len(emulators.hubspot.requests) == requests

    # 1% of the customers change (value, segment, churn score): exactly those are sent.
    touched = {customers[i].customer_id for i in (5, 150, 299)}
    updated = [
        changed(c, lifetime_value=c.lifetime_value + 1, segment="pro", churn_probability=0.99)
        if c.customer_id in touched
        else c
        for c in customers
    ]
    write_customers(conn, updated)
    third = run(conn, spec, emulators)
    assert (third.added, third.changed, third.removed, third.unchanged) == (0, 3, 0, 297)
    after = emulators.hubspot.records()
    rewritten = {k for k in after if after[k]["updatedAt"] != before[k]["updatedAt"]}
    assert {after[k]["properties"]["acme_customer_id"] for k in rewritten} == touched
    assert hubspot_state(emulators.hubspot) == expected_hubspot(updated)


def test_mirror_archives_what_left_the_source(conn, emulators) -> None:
    """HubSpot mirror (identity = email): a customer erased from gold, one with no orders any
    more and one whose email changed are archived; the new email is a new contact."""
    customers = make_customers(40)
    create_gold(conn, customers)
    spec = sync("hubspot_contacts", batch_size=25)
    run(conn, spec, emulators)
    gone, stopped, moved = customers[3], customers[10], customers[20]
    now = [
        changed(c, order_count=0)
        if c is stopped
        else changed(c, email="moved-away@example.org")
        if c is moved
        else c
        for c in customers
        if c is not gone
    ]
    write_customers(conn, now)
    result = run(conn, spec, emulators)
    assert (result.removed, result.added, result.failed) == (3, 1, 0)
    archived = {r["properties"]["email"] for r in emulators.hubspot.archived().values()}
    assert archived == {c.email.lower() for c in (gone, stopped, moved)}
    assert hubspot_state(emulators.hubspot) == expected_hubspot(now)
    assert set(state_hashes(conn, spec.name)) == set(expected_hubspot(now))  # lower-cased
    removed = [o for o in outcomes(conn, spec.name, result.run_id) if o[1] == "remove"]
    assert len(removed) == 3 and {o[2] for o in removed} == {"synced"}


def test_zendesk_users_with_tags_and_rejections(conn, emulators) -> None:
    customers = make_customers(150, invalid_every=25)
    create_gold(conn, customers)
    spec = sync("zendesk_users")
    result = run(conn, spec, emulators)
    invalid = [c for c in customers if c.email.startswith("bad")]
    valid = [c for c in customers if c not in invalid]
    assert (result.added, result.failed) == (len(valid), len(invalid))
    assert zendesk_state(emulators.zendesk) == expected_zendesk(valid)
    tagged = {tag for user in expected_zendesk(valid).values() for tag in user["tags"]}
    assert tagged == {"vip", "churn_risk_high"}  # both rules fire for someone
    assert all("is not properly formatted" in f.error for f in result.failures)


def test_expired_token_stops_the_run_and_marks_nothing_synced(conn, emulators) -> None:
    customers = make_customers(60)
    create_gold(conn, customers)
    spec = sync("salesforce_contacts", batch_size=20)
    run(conn, spec, emulators)
    synced = state_hashes(conn, spec.name)
    write_customers(conn, [changed(c, segment="wholesale") for c in customers])
    emulators.salesforce.expire_token()
    with pytest.raises(SyncAuthError) as raised:
        run(conn, spec, emulators)
    message = str(raised.value)
    assert "salesforce refused the credentials" in message
    assert "SALESFORCE_ACCESS_TOKEN" in message and TOKEN not in message
    assert state_hashes(conn, spec.name) == synced  # nothing of the refused run marked synced
    latest = state.latest_run(conn, spec.name)
    assert latest["error"] == message and latest["finished_at"] is not None
    assert latest["added"] + latest["changed"] == 0 and latest["failed"] == 20
    logged = conn.execute("SELECT string_agg(error, ' ') FROM _meta.sync_row_outcomes").fetchone()
    assert TOKEN not in (logged[0] or "")

    emulators.salesforce.set_token(TOKEN)  # renewed: the rerun sends what was not confirmed
    rerun = run(conn, spec, emulators)
    assert (rerun.changed, rerun.failed) == (60, 0), rerun.summary()
    assert salesforce_state(emulators.salesforce) == expected_salesforce(
        [changed(c, segment="wholesale") for c in customers]
    )


def test_dry_run_sends_nothing_and_reports_the_diff(conn, emulators, settings) -> None:
    customers = make_customers(30)
    create_gold(conn, customers)
    conn.close()
    result = run_sync("zendesk_users", settings, dry_run=True, environ={})  # no credentials
    assert result.dry_run and (result.added, result.changed, result.removed) == (30, 0, 0)
    assert result.attempted == 0
    assert emulators.zendesk.stats().requests == 0
    sample = {row.identity: row for row in result.planned}
    assert len(sample) == 20  # the sample, not the whole plan
    first = expected_zendesk(customers)["C00001"]
    assert sample["C00001"].action == "add"
    assert sample["C00001"].fields["tags"] == first["tags"]
    with duckdb.connect(str(settings.warehouse_path)) as again:
        assert state_hashes(again, "zendesk_users") == {}
        run_row = state.latest_run(again, "zendesk_users", dry_run=True)
        assert run_row["dry_run"] and run_row["added"] == 30
        planned = again.execute(
            "SELECT count(*) FROM _meta.sync_row_outcomes WHERE status = 'planned'"
        ).fetchone()
        assert planned == (20,)


def test_run_sync_by_name_reads_credentials_from_the_environment(
    conn, emulators, settings, monkeypatch
) -> None:
    create_gold(conn, make_customers(10))
    conn.close()
    for name, value in emulators.env.items():
        monkeypatch.setenv(name, value)
    result = run_sync("salesforce_contacts", settings)
    assert result.added == 10 and len(emulators.salesforce.records()) == 10
    full = run_sync("salesforce_contacts", settings, full=True)  # forget, resend: no duplicate
    assert full.added == 10 and len(emulators.salesforce.records()) == 10
    with pytest.raises(KeyError, match="no sync named"):
        run_sync("nope", settings)
    with pytest.raises(DestinationError, match="set SALESFORCE_ACCESS_TOKEN"):
        run_sync("salesforce_contacts", settings, environ={"SALESFORCE_INSTANCE_URL": "x"})


def test_null_and_duplicate_identities_are_skipped_not_guessed(conn, emulators) -> None:
    customers = make_customers(20)
    twin = changed(customers[1], email=customers[0].email)  # two customers, one email
    customers = [customers[0], twin, *customers[2:]]
    create_gold(conn, customers)
    spec = sync("hubspot_contacts")
    result = run(conn, spec, emulators)
    assert (result.added, result.skipped, result.failed) == (18, 2, 0)
    skipped = [o for o in outcomes(conn, spec.name, result.run_id) if o[2] == "skipped"]
    assert [o[0] for o in skipped] == [customers[0].email.lower()] * 2  # HubSpot: lower-cased
    assert "appears 2 times" in skipped[0][3]
    assert customers[0].email.lower() not in emulators.hubspot.records()


def test_update_only_never_creates(conn, emulators) -> None:
    customers = make_customers(20)
    create_gold(conn, customers[:8])
    run(conn, sync("salesforce_contacts"), emulators)  # 8 contacts exist in Salesforce
    write_customers(conn, [changed(c, segment="wholesale") for c in customers])
    spec = sync("salesforce_contacts", name="salesforce_updates", mode="update_only")
    result = run(conn, spec, emulators)
    assert (result.added, result.skipped, result.failed) == (8, 12, 0)
    records = emulators.salesforce.records()
    assert len(records) == 8 and {r["Segment__c"] for r in records.values()} == {"wholesale"}
    skipped = {o[3] for o in outcomes(conn, spec.name, result.run_id) if o[2] == "skipped"}
    assert skipped == {"not found in salesforce"}


def test_a_large_source_is_planned_in_the_warehouse_not_in_python(conn) -> None:
    """120k rows: the diff is DuckDB's work; Python holds a sample, never the rows."""
    create_gold(conn, [])
    conn.execute(
        """
        INSERT INTO gold.customer_360 (customer_id, email, segment, order_count,
                                       lifetime_value, last_order_date)
        SELECT printf('C%07d', i), printf('c%07d@example.com', i), 'retail', 1, i % 5000,
               DATE '2025-01-01' + CAST(i % 300 AS INTEGER)
        FROM range(120000) AS r(i)
        """
    )
    conn.execute(
        "INSERT INTO gold.dim_customer (customer_id, first_name, last_name, is_deleted) "
        "SELECT customer_id, 'F', 'L', false FROM gold.customer_360"
    )
    tracemalloc.start()
    try:
        result = execute(conn, sync("salesforce_contacts"), None, dry_run=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.added == result.source_rows == 120_000
    assert peak < 5_000_000, f"Python peaked at {peak / 1e6:.1f} MB"


def test_transforms_constants_and_utc_dates_reach_the_destination(conn, emulators) -> None:
    create_gold(conn, make_customers(3))
    # 23:30 in New York is the next day in UTC: a date is the UTC day, whatever the session.
    conn.execute(
        "UPDATE gold.dim_customer SET signed_up_at = TIMESTAMPTZ '2025-03-01 23:30:00-05:00'"
    )
    spec = SyncSpec.model_validate(
        {
            "name": "transformed",
            "description": "Every kind of mapping, for the test.",
            "owner": "team:crm",
            "source": "SELECT c.customer_id, c.segment, c.lifetime_value, d.signed_up_at, "
            "CAST(NULL AS VARCHAR) AS nickname FROM gold.customer_360 AS c "
            "JOIN gold.dim_customer AS d ON d.customer_id = c.customer_id",
            "destination": "salesforce",
            "object": "Contact",
            "fields": sync("salesforce_contacts").fields,  # the demo org's custom fields
            "identity": {"column": "customer_id", "field": "Acme_Customer_Id__c"},
            "mapping": {
                "Segment__c": {"column": "segment", "transform": "upper"},
                "LTV__c": {"column": "lifetime_value", "transform": "round(0)"},
                "Last_Order_Date__c": {"column": "signed_up_at", "transform": "date"},
                "FirstName": {"column": "nickname", "default": "Friend"},
                "LastName": {"constant": "Customer"},
            },
        }
    )
    result = run(conn, spec, emulators)
    assert result.added == 3
    record = emulators.salesforce.records()["C00002"]
    customer = make_customers(3)[1]
    assert record["Segment__c"] == customer.segment.upper()
    assert record["LTV__c"] == float(round(customer.lifetime_value))
    assert record["Last_Order_Date__c"] == "2025-03-02"
    assert (record["FirstName"], record["LastName"]) == ("Friend", "Customer")


def test_the_medallion_sync_command(conn, emulators, settings, monkeypatch, capsys) -> None:
    """`medallion sync <name> [--dry-run]` as a user runs it: a real process, real emulator."""
    import subprocess
    import sys
    from pathlib import Path

    create_gold(conn, make_customers(12))
    conn.close()
    env = {**os.environ, **emulators.env, "MEDALLION_HOME": str(settings.home)}
    medallion = str(Path(sys.executable).parent / "medallion")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [medallion, "sync", *args], env=env, capture_output=True, text=True, timeout=120
        )

    planned = cli("salesforce_contacts", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "would add 12" in planned.stdout and emulators.salesforce.records() == {}
    sent = cli("salesforce_contacts")
    assert sent.returncode == 0, sent.stderr
    assert "added 12" in sent.stdout and len(emulators.salesforce.records()) == 12
    token = emulators.env["SALESFORCE_ACCESS_TOKEN"]
    assert all(token not in out for r in (planned, sent) for out in (r.stdout, r.stderr))

    # The same command in this process (it reads the same environment), to save start-ups.
    from medallion_platform.cli import main

    for name, value in {**emulators.env, "MEDALLION_HOME": str(settings.home)}.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["sync", "salesforce_contacts"]) == 0
    again = capsys.readouterr().out
    assert "added 0, changed 0" in again and "unchanged 12" in again and token not in again
    assert main(["sync", "nope"]) == 2
    assert "no sync named 'nope'" in capsys.readouterr().err
