"""Issue 15: syncs through the emulators in their default (production-like) failure modes.

Each test provokes what the real service does on a first day against a real account and checks
the three things that matter: the good rows land, the bad ones are recorded with the
destination's own error, and nothing is silently skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from medallion_platform.reverse_etl.destinations.base import DestinationRecord
from medallion_platform.reverse_etl.destinations.hubspot import HubSpotDestination
from medallion_platform.reverse_etl.engine import execute
from medallion_platform.reverse_etl.spec import open_destination
from medallion_platform_tests.reverse_etl import (
    TOKEN,
    ZENDESK_FAST,
    Emulators,
    create_gold,
    expected_hubspot,
    hubspot_state,
    make_customers,
    outcomes,
    running_emulators,
    state_hashes,
    sync,
    with_orders,
)


@pytest.fixture
def emulators() -> Iterator[Emulators]:
    yield from running_emulators()


@pytest.fixture
def conn(settings) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(settings.warehouse_path))
    yield connection
    connection.close()


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
