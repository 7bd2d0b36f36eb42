"""Issue 15: syncs through the emulators in their default (production-like) failure modes.

Each test provokes what the real service does on a first day against a real account and checks
the three things that matter: the good rows land, the bad ones are recorded with the
destination's own error, and nothing is silently skipped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest

from medallion_platform.devkit.demo.destinations.hubspot import CONTACT_PROPERTIES, HubSpotEmulator
from medallion_platform.devkit.demo.destinations.salesforce import CONTACT, SalesforceEmulator
from medallion_platform.devkit.demo.destinations.zendesk import USER_FIELDS, ZendeskEmulator
from medallion_platform.reverse_etl import state
from medallion_platform.reverse_etl.destinations.base import DestinationRecord
from medallion_platform.reverse_etl.destinations.hubspot import HubSpotDestination
from medallion_platform.reverse_etl.destinations.salesforce import SalesforceDestination
from medallion_platform.reverse_etl.engine import SyncError, execute
from medallion_platform.reverse_etl.spec import open_destination
from medallion_platform_tests.reverse_etl import (
    TOKEN,
    ZENDESK_EMAIL,
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


def run(conn, spec, emulators: Emulators, **options):
    if spec.destination == "zendesk":
        options = ZENDESK_FAST | options
    destination = open_destination(spec, emulators.env, **options)
    try:
        return execute(conn, spec, destination)
    finally:
        destination.close()


# -- HubSpot: one bad input fails the whole batch (400 / 409) ----------------------------------


def test_hubspot_one_bad_contact_never_blocks_the_good_ones(conn, emulators) -> None:
    """HubSpot refuses a whole batch/upsert for one invalid email (400 VALIDATION_ERROR) or one
    unique value another contact holds (409 CONFLICT). The client splits the batch to find
    them: the 300 good contacts land in the first run, the 4 bad ones are row failures with
    HubSpot's message, and the next run sends only those (no batch failure, no abort)."""
    customers = make_customers(304, invalid_every=101)  # 3 invalid emails
    create_gold(conn, customers)
    # A contact a marketer created by hand already holds customer C00005's id (a unique
    # property): upserting C00005 under its own email conflicts.
    with HubSpotDestination(emulators.hubspot.base_url, TOKEN) as by_hand:
        [seeded] = by_hand.upsert([_by_hand("C00005")])
        assert seeded.ok
    spec = sync("hubspot_contacts")
    invalid = {c.email.lower() for c in customers if c.email.startswith("bad")}
    conflicting = {c.email.lower() for c in customers if c.customer_id == "C00005"}
    good = [c for c in with_orders(customers) if c.email.lower() not in invalid | conflicting]
    assert len(invalid) == 3 and len(good) == 300

    first = run(conn, spec, emulators)
    assert first.error is None
    assert (first.added, first.failed, first.skipped) == (300, 4, 0)
    held = hubspot_state(emulators.hubspot)
    held.pop("someone.else@example.com")
    assert held == expected_hubspot(good)
    failed = {o[0]: o[3] for o in outcomes(conn, spec.name, first.run_id) if o[2] == "failed"}
    assert set(failed) == invalid | conflicting
    for email in invalid:
        assert failed[email].startswith("VALIDATION_ERROR: Property values were not valid")
        assert f"Email address {email} is invalid" in failed[email]
    [conflict] = [failed[email] for email in conflicting]
    assert conflict == f"CONFLICT: Contact already exists. Existing ID: {seeded.destination_id}"
    assert set(state_hashes(conn, spec.name)) == set(expected_hubspot(good))
    upserts = emulators.hubspot.stats().by_endpoint["POST /crm/v3/objects/contacts/batch/upsert"]
    assert upserts <= 4 + 4 * 2 * 7  # 4 batches, then at most 2 log2(100) calls per bad input

    again = run(conn, spec, emulators)  # only the 4 are planned, and fail again alone
    assert (again.added, again.changed, again.failed, again.unchanged) == (0, 0, 4, 300)
    assert {f.identity for f in again.failures} == invalid | conflicting
    assert not any(f.error.startswith("batch failed") for f in again.failures)


def _by_hand(customer_id: str) -> DestinationRecord:
    return DestinationRecord(
        identity="someone.else@example.com",
        fields={"acme_customer_id": customer_id, "firstname": "Someone"},
    )


# -- Zendesk: bulk import off, results without index, tagging off, agents' tags ----------------


def test_zendesk_bulk_import_not_enabled_stops_the_sync_with_what_to_ask(conn) -> None:
    """A fresh account answers create_or_update_many with 403: the first batch says what to ask
    the account owner and the run stops (no three-batch wait); nothing is marked synced."""
    create_gold(conn, make_customers(250))
    with _zendesk(bulk_import=False) as emulators:
        spec = sync("zendesk_users")
        with pytest.raises(SyncError) as raised:
            run(conn, spec, emulators)
        message = str(raised.value)
        assert "Bulk user imports are not enabled" in message
        assert "account owner must ask Zendesk Customer Support" in message
        calls = emulators.zendesk.stats().by_endpoint
    assert calls.get("POST /api/v2/users/create_or_update_many") == 1
    assert state_hashes(conn, spec.name) == {}
    run_row = state.latest_run(conn, spec.name)
    assert run_row["error"] == message and run_row["added"] == 0


def test_zendesk_results_without_index_land_on_the_right_users(conn, emulators) -> None:
    """The emulator answers as Zendesk does (no index): every user's outcome, id and rejection
    is matched by position; the stored users are exactly the valid customers."""
    customers = make_customers(230, invalid_every=23)
    create_gold(conn, customers)
    spec = sync("zendesk_users")
    result = run(conn, spec, emulators)
    jobs = emulators.zendesk.job_statuses()
    assert jobs and all("index" not in r for job in jobs for r in job["results"] or [])
    invalid = {c.customer_id for c in customers if c.email.startswith("bad")}
    valid = [c for c in customers if c.customer_id not in invalid]
    assert (result.added, result.failed) == (len(valid), len(invalid))
    assert zendesk_state(emulators.zendesk) == expected_zendesk(valid)
    assert {f.identity for f in result.failures} == invalid
    ids = dict(
        conn.execute(
            "SELECT identity, destination_id FROM _meta.sync_state WHERE sync = ?", [spec.name]
        ).fetchall()
    )
    held = emulators.zendesk.records()
    assert ids == {c.customer_id: str(held[c.customer_id]["id"]) for c in valid}


def test_zendesk_tagging_off_stops_the_sync_and_nothing_is_marked_synced(conn) -> None:
    create_gold(conn, make_customers(120))
    with _zendesk(user_tagging=False) as emulators:
        spec = sync("zendesk_users")
        with pytest.raises(SyncError, match="user tagging is off"):
            run(conn, spec, emulators)
    assert state_hashes(conn, spec.name) == {}  # resent once tagging is on


def test_zendesk_merge_keeps_the_tags_agents_added(conn, emulators) -> None:
    """The packaged sync declares tags: merge. An agent tags a VIP customer 'escalated'; the
    customer's churn band changes: the next sync adds churn_risk_high and keeps 'escalated'."""
    customers = make_customers(40)
    create_gold(conn, customers)
    spec = sync("zendesk_users")
    run(conn, spec, emulators)
    vip = next(c for c in customers if c.lifetime_value >= 2500 and c.risk_band != "high")
    emulators.zendesk.tag_user(vip.customer_id, "escalated")
    now = [
        changed(c, risk_band="high", churn_probability=0.95) if c is vip else c for c in customers
    ]
    write_customers(conn, now)
    result = run(conn, spec, emulators)
    assert (result.changed, result.failed) == (1, 0)
    tags = emulators.zendesk.records()[vip.customer_id]["tags"]
    assert sorted(tags) == ["churn_risk_high", "escalated", "vip"]


@contextlib.contextmanager
def _emulators(
    salesforce: dict | None = None, hubspot: dict | None = None, zendesk: dict | None = None
) -> Iterator[Emulators]:
    """The three emulators, with some account ``settings`` switched."""
    with (
        SalesforceEmulator(token=TOKEN, **(salesforce or {})) as sf,
        HubSpotEmulator(token=TOKEN, **(hubspot or {})) as hs,
        ZendeskEmulator(token=TOKEN, email=ZENDESK_EMAIL, job_delay=0.01, **(zendesk or {})) as zd,
    ):
        yield Emulators(sf, hs, zd)


def _zendesk(**settings) -> contextlib.AbstractContextManager[Emulators]:
    return _emulators(zendesk=settings)


# -- Salesforce: SOQL lookups, 300, duplicate rules, OAuth refresh ------------------------------


def test_salesforce_update_only_looks_up_by_soql_not_one_get_per_record(conn, emulators) -> None:
    customers = make_customers(500)
    create_gold(conn, customers)
    present = customers[:300]  # created in Salesforce by someone else; the sync never creates
    with SalesforceDestination(emulators.salesforce.base_url, TOKEN) as seed:
        assert all(o.ok for o in seed.upsert([_contact(c) for c in present]))
    emulators.salesforce.clear_log()
    spec = sync("salesforce_contacts", mode="update_only")
    result = run(conn, spec, emulators)
    assert (result.changed + result.added, result.skipped, result.failed) == (300, 200, 0)
    calls = emulators.salesforce.stats().by_endpoint
    assert calls["GET /query"] == 3  # one SOQL IN query per batch of 200
    assert "GET /sobjects/{sobject}/{externalIdField}/{value}" not in calls
    assert salesforce_state(emulators.salesforce) == expected_salesforce(present)
    skipped = [o for o in outcomes(conn, spec.name, result.run_id) if o[2] == "skipped"]
    assert {o[0] for o in skipped} == {c.customer_id for c in customers[300:]}
    assert {o[3] for o in skipped} == {"not found in salesforce"}


def test_salesforce_an_external_id_on_two_records_fails_that_row_naming_them(conn) -> None:
    customers = make_customers(60)
    create_gold(conn, customers)
    with _emulators(salesforce={"sobjects": (NOT_UNIQUE_CONTACT,)}) as emulators:
        twins = [
            emulators.salesforce.insert("Contact", {"Acme_Customer_Id__c": "C00007", "LastName": n})
            for n in ("Twin A", "Twin B")
        ]
        spec = sync("salesforce_contacts")
        result = run(conn, spec, emulators)
        assert (result.added, result.failed) == (59, 1)
        [failure] = result.failures
        assert failure.identity == "C00007" and "DUPLICATE_EXTERNAL_ID" in failure.error
        assert all(twin in failure.error for twin in twins)
        held = emulators.salesforce.records_by_id()
        assert {held[t]["LastName"] for t in twins} == {"Twin A", "Twin B"}  # neither touched
        assert "C00007" not in state_hashes(conn, spec.name)


def test_salesforce_duplicate_rule_is_a_row_failure_unless_the_sync_allows_saving(conn) -> None:
    customers = make_customers(30)
    shared = [
        changed(c, email="family@example.com") if c.customer_id in ("C00004", "C00005") else c
        for c in customers
    ]
    create_gold(conn, shared)
    with _emulators() as emulators:
        spec = sync("salesforce_contacts")
        result = run(conn, spec, emulators)
        assert (result.added, result.failed) == (29, 1)
        [failure] = result.failures
        assert failure.identity == "C00005"
        assert failure.error.startswith("DUPLICATES_DETECTED: Use one of these records?")
        assert emulators.salesforce.records()["C00004"]["Id"] in failure.error
        allowing = spec.model_copy(
            update={"options": {"duplicate_rule_header": {"allow_save": True}}}
        )
        again = run(conn, allowing, emulators)
        assert (again.added, again.failed) == (1, 0)
        assert salesforce_state(emulators.salesforce) == expected_salesforce(shared)


def test_salesforce_an_expired_session_is_refreshed_mid_sync(conn, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    customers = make_customers(450)
    create_gold(conn, customers)
    secret, refresh = "SfConnectedAppSecret0042", "5AepSfRefreshToken0042"
    settings = {
        "oauth_client_id": "3MVGsfClient",
        "oauth_client_secret": secret,
        "oauth_refresh_token": refresh,
    }
    with _emulators(salesforce=settings) as emulators:
        env = emulators.env | {
            "SALESFORCE_CLIENT_ID": "3MVGsfClient",
            "SALESFORCE_CLIENT_SECRET": secret,
            "SALESFORCE_REFRESH_TOKEN": refresh,
        }
        emulators.salesforce.expire_token()  # the session timed out since the token was issued
        spec = sync("salesforce_contacts")
        destination = open_destination(spec, env)
        try:
            result = execute(conn, spec, destination)
        finally:
            destination.close()
        assert (result.added, result.failed) == (450, 0)
        assert emulators.salesforce.tokens_issued == 1  # refreshed once, then kept
        assert salesforce_state(emulators.salesforce) == expected_salesforce(customers)
    stored = conn.execute(
        "SELECT coalesce(string_agg(error, ' '), '') FROM _meta.sync_row_outcomes"
    ).fetchone()[0]
    for text in (caplog.text, stored, result.model_dump_json()):
        assert secret not in text and refresh not in text and TOKEN not in text


def _contact(customer) -> DestinationRecord:
    return DestinationRecord(
        identity=customer.customer_id,
        fields={"LastName": customer.last_name or "(unknown)", "Email": customer.email},
    )


NOT_UNIQUE_CONTACT = CONTACT.model_copy(
    update={
        "fields": tuple(
            f.model_copy(update={"unique": False}) if f.external_id else f for f in CONTACT.fields
        )
    }
)


# -- Org fields declared in syncs.yaml, checked against the account at the start ----------------


def _without(names: set[str]) -> dict[str, dict]:
    """Emulator settings for accounts that lack the custom fields ``names``."""
    contact = CONTACT.model_copy(
        update={"fields": tuple(f for f in CONTACT.fields if f.name not in names)}
    )
    return {
        "salesforce": {"sobjects": (contact,)},
        "hubspot": {"properties": tuple(p for p in CONTACT_PROPERTIES if p.name not in names)},
        "zendesk": {
            "user_fields": tuple(f for f in USER_FIELDS if f"user_fields.{f.key}" not in names)
        },
    }


@pytest.mark.parametrize(
    ("sync_name", "missing"),
    [
        ("salesforce_contacts", ["Churn_Risk__c", "Segment__c"]),
        ("hubspot_contacts", ["churn_risk"]),
        ("zendesk_users", ["user_fields.segment"]),
    ],
)
def test_a_missing_destination_field_refuses_the_run_naming_it(conn, sync_name, missing) -> None:
    """The org's fields are declared in syncs.yaml; with check_fields the run asks the account
    (describe / properties / user_fields) first and sends nothing when some are missing."""
    create_gold(conn, make_customers(30))
    spec = sync(sync_name)
    assert spec.check_fields and set(missing) <= set(spec.fields)
    settings = _without(set(missing))[spec.destination]
    with _emulators(**{spec.destination: settings}) as emulators:
        with pytest.raises(SyncError) as raised:
            run(conn, spec, emulators)
        emulator = getattr(emulators, spec.destination)
        assert emulator.records() == {}  # nothing sent
    message = str(raised.value)
    assert f"has no field {', '.join(missing)}" in message
    assert state.latest_run(conn, spec.name)["error"] == message
    assert state_hashes(conn, spec.name) == {}
