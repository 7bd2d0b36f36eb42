"""The HubSpot client against the HubSpot emulator over real HTTP: batch upserts by email,
whole-batch 400/409 split to find the bad inputs (and 207 multi-status where enabled),
update-only, archive, auth, the ten-secondly limit (paced under it, learned from the headers;
429s waited out) and transient failures, with the token never leaking."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from medallion_platform.devkit.demo.destinations.hubspot import HubSpotEmulator
from medallion_platform.devkit.demo.http_emulator import RateLimit as EmulatorRateLimit
from medallion_platform.reverse_etl.destinations.base import (
    DestinationAuthError,
    DestinationError,
    DestinationRecord,
)
from medallion_platform.reverse_etl.destinations.http import DestinationConfigError, RetryPolicy
from medallion_platform.reverse_etl.destinations.hubspot import FIELDS, HubSpotDestination
from medallion_platform.reverse_etl.destinations.ratelimit import RateLimit
from medallion_platform.reverse_etl.spec import load_syncs

TOKEN = "pat-na1-11111111-2222-3333-4444-secret5555555"
UPSERT = "POST /crm/v3/objects/contacts/batch/upsert"
READ = "POST /crm/v3/objects/contacts/batch/read"
ARCHIVE = "POST /crm/v3/objects/contacts/batch/archive"
FAST = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05, rate_limit_patience_s=30)
# The demo portal's custom properties, as the packaged sync declares them (syncs.yaml).
ORG_FIELDS = {s.name: s for s in load_syncs()}["hubspot_contacts"].writable_fields


def contact(n: int, **fields: Any) -> DestinationRecord:
    values = {
        "firstname": "Ada",
        "lastname": f"Lovelace {n}",
        "lifetime_value": 1234.5,
        "churn_risk": 0.07,
        "acme_segment": "loyal",
        "last_order_date": dt.date(2026, 11, 1),
    }
    return DestinationRecord(identity=f"customer{n}@example.com", fields=values | fields)


@pytest.fixture
def api() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(token=TOKEN) as server:
        yield server


@pytest.fixture
def hs(api: HubSpotEmulator) -> Iterator[HubSpotDestination]:
    with HubSpotDestination(api.base_url, TOKEN, retry=FAST, fields=ORG_FIELDS) as client:
        yield client


def test_upserts_in_batches_of_100_and_a_repeat_updates_without_duplicates(
    api: HubSpotEmulator, hs: HubSpotDestination
) -> None:
    first = hs.upsert([contact(n) for n in range(250)])
    assert all(o.ok and o.created is True for o in first)
    assert [o.identity for o in first] == [f"customer{n}@example.com" for n in range(250)]
    assert api.stats().by_endpoint == {UPSERT: 3}  # 100 + 100 + 50
    stored = api.records()
    assert len(stored) == 250
    properties = stored["customer7@example.com"]["properties"]
    assert properties["lifetime_value"] == "1234.5" and properties["churn_risk"] == "0.07"
    assert properties["last_order_date"] == "2026-11-01"
    assert first[7].destination_id == stored["customer7@example.com"]["id"]

    # The same people, their emails spelled in capitals: HubSpot matches emails lower-cased.
    again = hs.upsert(
        [
            DestinationRecord(identity=f"Customer{n}@Example.COM", fields={"acme_segment": "vip"})
            for n in range(250)
        ]
    )
    assert all(o.ok and o.created is False for o in again)
    assert again[7].identity == "Customer7@Example.COM"
    assert [o.destination_id for o in again] == [o.destination_id for o in first]
    assert len(api.records()) == 250
    assert {r["properties"]["acme_segment"] for r in api.records().values()} == {"vip"}


@pytest.mark.parametrize("multi_status", [False, True], ids=["whole-batch", "207"])
def test_rejections_are_outcomes_and_the_rest_is_committed(multi_status: bool) -> None:
    """By default HubSpot fails the whole batch (400 for the invalid email, 409 for the taken
    customer id) and the client splits it; with multi-status the 207 names them at once."""
    with (
        HubSpotEmulator(token=TOKEN, multi_status=multi_status) as api,
        HubSpotDestination(api.base_url, TOKEN, retry=FAST, fields=ORG_FIELDS) as hs,
    ):
        _rejections(api, hs)
        assert (hs.split_calls > 0) is not multi_status


def _rejections(api: HubSpotEmulator, hs: HubSpotDestination) -> None:
    records = [
        contact(0),
        DestinationRecord(identity="not-an-email", fields={"firstname": "X"}),
        contact(2, lifetime_value="a lot"),  # never sent: not a number
        contact(3, acme_customer_id="cus_1"),
        contact(4, acme_customer_id="cus_1"),  # a unique value another contact holds
        contact(5, churn_risk=None),  # None clears the property
    ]
    outcomes = hs.upsert(records)
    assert [o.ok for o in outcomes] == [True, False, False, True, False, True]
    assert outcomes[1].error is not None
    assert outcomes[1].error.startswith("VALIDATION_ERROR: Property values were not valid")
    assert "Email address not-an-email is invalid" in outcomes[1].error
    assert outcomes[2].error == ("not sent: field 'lifetime_value': expected a number, got 'a lot'")
    assert outcomes[4].error is not None and outcomes[4].error.startswith("CONFLICT: ")
    assert sorted(api.records()) == [
        "customer0@example.com",
        "customer3@example.com",
        "customer5@example.com",
    ]
    assert "churn_risk" not in api.records()["customer5@example.com"]["properties"]


def test_one_email_twice_goes_out_in_two_calls(
    api: HubSpotEmulator, hs: HubSpotDestination
) -> None:
    outcomes = hs.upsert(
        [
            contact(1, acme_segment="first"),
            DestinationRecord(identity="CUSTOMER1@example.com", fields={"acme_segment": "last"}),
        ]
    )
    assert [(o.ok, o.created) for o in outcomes] == [(True, True), (True, False)]
    assert api.records()["customer1@example.com"]["properties"]["acme_segment"] == "last"


def test_update_only_reads_first_and_creates_nothing(
    api: HubSpotEmulator, hs: HubSpotDestination
) -> None:
    hs.upsert([contact(1), contact(2)])
    outcomes = hs.update([contact(1, acme_segment="vip"), contact(9, acme_segment="vip")])
    assert outcomes[0].ok and outcomes[0].created is False
    assert not outcomes[1].ok and outcomes[1].error == "not found in hubspot"
    assert sorted(api.records()) == ["customer1@example.com", "customer2@example.com"]
    assert api.stats().by_endpoint == {UPSERT: 2, READ: 1}


def test_remove_archives_by_id_or_by_email(api: HubSpotEmulator, hs: HubSpotDestination) -> None:
    created = hs.upsert([contact(n) for n in range(3)])
    outcomes = hs.remove(
        [
            (created[0].identity, created[0].destination_id),
            (created[1].identity, None),  # found by email first
            ("nobody@example.com", None),  # not in HubSpot: already gone
        ]
    )
    assert all(o.ok for o in outcomes)
    assert [o.destination_id for o in outcomes] == [
        created[0].destination_id,
        created[1].destination_id,
        None,
    ]
    assert sorted(api.records()) == ["customer2@example.com"]
    assert sorted(api.archived()) == sorted([created[0].destination_id, created[1].destination_id])


def test_a_refused_token_raises_auth_error_and_stores_nothing(api: HubSpotEmulator) -> None:
    wrong = HubSpotDestination(api.base_url, "pat-na1-wrong-token", retry=FAST)
    with wrong as hs, pytest.raises(DestinationAuthError) as raised:
        hs.upsert([contact(1)])
    message = str(raised.value)
    assert message.startswith(f"hubspot: {UPSERT} was refused with HTTP 401")
    assert "INVALID_AUTHENTICATION" in message and "pat-na1-wrong-token" not in message
    assert api.records() == {}


def test_paces_itself_under_the_limit_it_learns_from_the_headers() -> None:
    """A 5-per-second window (the client starts assuming 100 / 10 s): after the first answer the
    client paces itself, so the emulator never sees more than 5 requests in any second."""
    limit = EmulatorRateLimit(max_requests=5, window_seconds=1)
    with HubSpotEmulator(token=TOKEN, rate_limit=limit) as api:
        with HubSpotDestination(api.base_url, TOKEN, retry=FAST) as hs:
            started = time.monotonic()
            outcomes = hs.upsert([contact(n) for n in range(1200)])  # 12 calls
            elapsed = time.monotonic() - started
            assert hs.pacer.limit == RateLimit(max_requests=5, window_seconds=1)
        stats = api.stats()
    assert all(o.ok for o in outcomes) and len(api.records()) == 1200
    assert stats.peak_in_window <= 5 and stats.limited == 0
    assert hs.stats.rate_limited == 0 and hs.stats.api_calls == 12
    assert hs.stats.waited_seconds > 1.5 and elapsed > 2.0


def test_two_clients_sharing_one_quota_book_each_others_requests() -> None:
    """Each client books what ``X-HubSpot-RateLimit-Remaining`` says the other one used, so
    together they run into the limit only now and then (without it, about every other call)."""
    limit = EmulatorRateLimit(max_requests=6, window_seconds=1)
    with HubSpotEmulator(token=TOKEN, rate_limit=limit) as api:
        clients = [HubSpotDestination(api.base_url, TOKEN, retry=FAST) for _ in range(2)]
        results: dict[int, list[Any]] = {}

        def sync(k: int) -> None:
            batch = [contact(k * 1000 + n) for n in range(800)]
            results[k] = clients[k].upsert(batch)

        threads = [threading.Thread(target=sync, args=(k,)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for client in clients:
            client.close()
        stats = api.stats()
    assert all(o.ok for k in range(2) for o in results[k]) and len(api.records()) == 1600
    # Two pacers cannot see each other's requests in flight: they collide now and then (at
    # the start, before either knows the limit); each collision is waited out.
    assert stats.by_status.get(200) == 16 and stats.limited <= 6
    assert sum(c.stats.rate_limited for c in clients) == stats.limited


def test_a_429_storm_is_waited_out() -> None:
    """A client held to a wrong, too high limit (no learning) hits 429s: each is counted,
    waited out (HubSpot sends no Retry-After: backoff from the window's share) and retried."""
    limit = EmulatorRateLimit(max_requests=5, window_seconds=1)
    with HubSpotEmulator(token=TOKEN, rate_limit=limit) as api:
        too_high = RateLimit(max_requests=100, window_seconds=1)
        with HubSpotDestination(api.base_url, TOKEN, rate_limit=too_high, retry=FAST) as hs:
            outcomes = hs.upsert([contact(n) for n in range(1000)])
        stats = api.stats()
    assert all(o.ok for o in outcomes) and len(api.records()) == 1000
    assert stats.limited > 0 and hs.stats.rate_limited == stats.limited
    assert hs.stats.retries == stats.limited and hs.stats.waited_seconds > 0.5
    assert hs.stats.api_calls == 10 + stats.limited


def test_injected_429s_are_retried(api: HubSpotEmulator, hs: HubSpotDestination) -> None:
    api.fail_next(3, status=429, retry_after=0.1)
    outcomes = hs.upsert([contact(1)])
    assert outcomes[0].ok and hs.stats.rate_limited == 3
    assert hs.stats.waited_seconds >= 0.3


def test_the_daily_limit_fails_at_once() -> None:
    with (
        HubSpotEmulator(token=TOKEN, daily_limit=1) as api,
        HubSpotDestination(api.base_url, TOKEN, retry=FAST) as hs,
    ):
        hs.upsert([contact(1)])
        with pytest.raises(DestinationError, match="daily request limit is reached"):
            hs.upsert([contact(2)])
        assert hs.stats.api_calls == 2


def test_transient_failures_are_retried(api: HubSpotEmulator, hs: HubSpotDestination) -> None:
    api.fail_next(status=502)
    api.fail_next(status=500, path="/crm/v3/objects/contacts/batch/read")
    api.drop_next()
    hs.upsert([contact(1)])
    outcomes = hs.update([contact(1, acme_segment="vip")])
    assert outcomes[0].ok
    assert hs.stats.retries == 3 and hs.stats.api_calls == 6


def test_the_token_never_leaks(
    api: HubSpotEmulator, hs: HubSpotDestination, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.fail_next(status=503)
    api.fail_next(status=429, retry_after=0)
    outcomes = hs.upsert([contact(1), DestinationRecord(identity="bad", fields={})])
    api.expire_token()
    with pytest.raises(DestinationAuthError) as raised:
        hs.upsert([contact(2)])
    assert "retry 1 of" in caplog.text and "rate limited" in caplog.text
    for text in (caplog.text, str(raised.value), repr(hs)):
        assert TOKEN not in text
    assert all(TOKEN not in outcome.model_dump_json() for outcome in outcomes)


def test_fields_and_from_env() -> None:
    # HubSpot's own properties; the portal's custom ones come from the sync (syncs.yaml).
    assert {name: spec.type for name, spec in FIELDS.items()} == {
        "email": "string",
        "firstname": "string",
        "lastname": "string",
        "phone": "string",
    }
    assert {name: spec.type for name, spec in ORG_FIELDS.items()} == {
        **{name: spec.type for name, spec in FIELDS.items()},
        "acme_customer_id": "string",
        "lifetime_value": "number",
        "churn_risk": "number",
        "acme_segment": "string",
        "last_order_date": "date",
    }
    with pytest.raises(DestinationConfigError, match="HUBSPOT_BASE_URL is not set"):
        HubSpotDestination.from_env(environ={"HUBSPOT_ACCESS_TOKEN": TOKEN})
    env = {"HUBSPOT_BASE_URL": "https://api.hubapi.com", "HUBSPOT_ACCESS_TOKEN": TOKEN}
    with HubSpotDestination.from_env(environ=env, id_property="acme_customer_id") as hs:
        assert hs.id_property == "acme_customer_id" and hs.max_batch == 100
