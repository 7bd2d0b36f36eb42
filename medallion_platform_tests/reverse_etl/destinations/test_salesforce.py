"""The Salesforce client against the Salesforce emulator over real HTTP: collection upserts by
external id, per-record errors, update-only, deletes, the session, REQUEST_LIMIT_EXCEEDED and
transient failures, with the token never in an error, a log line or an outcome."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from medallion_platform.devkit.demo.destinations.common import RateLimit as EmulatorRateLimit
from medallion_platform.devkit.demo.destinations.salesforce import SalesforceEmulator
from medallion_platform.reverse_etl.destinations.base import (
    DestinationAuthError,
    DestinationError,
    DestinationRecord,
)
from medallion_platform.reverse_etl.destinations.http import DestinationConfigError, RetryPolicy
from medallion_platform.reverse_etl.destinations.ratelimit import RateLimit
from medallion_platform.reverse_etl.destinations.salesforce import FIELDS, SalesforceDestination

TOKEN = "00DAcmeClientTest!AQ4AQSecretSessionToken4242"
UPSERT = "PATCH /composite/sobjects/{sobject}/{externalIdField}"
FAST = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05, rate_limit_patience_s=30)


def record(n: int, **fields: Any) -> DestinationRecord:
    values = {
        "Email": f"customer{n}@example.com",
        "FirstName": "Ada",
        "LastName": f"Lovelace {n}",
        "LTV__c": decimal.Decimal("1234.50"),
        "Churn_Risk__c": 0.25,
        "Segment__c": "loyal",
        "Last_Order_Date__c": dt.date(2026, 11, 1),
    }
    return DestinationRecord(identity=f"cus_{n:06d}", fields=values | fields)


@pytest.fixture
def api() -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(token=TOKEN) as server:
        yield server


@pytest.fixture
def sf(api: SalesforceEmulator) -> Iterator[SalesforceDestination]:
    with SalesforceDestination(api.base_url, TOKEN, retry=FAST) as client:
        yield client


def test_upserts_in_calls_of_200_and_a_repeat_updates_without_duplicates(
    api: SalesforceEmulator, sf: SalesforceDestination
) -> None:
    first = sf.upsert([record(n) for n in range(450)])
    assert [o.identity for o in first] == [f"cus_{n:06d}" for n in range(450)]
    assert all(o.ok and o.created is True and o.error is None for o in first)
    assert api.stats().by_endpoint == {UPSERT: 3}  # 200 + 200 + 50
    stored = api.records()
    assert len(stored) == 450
    assert stored["cus_000007"]["LTV__c"] == 1234.5
    assert stored["cus_000007"]["Last_Order_Date__c"] == "2026-11-01"
    assert first[7].destination_id == stored["cus_000007"]["Id"]

    again = sf.upsert([record(n, Segment__c="at_risk") for n in range(450)])
    assert all(o.ok and o.created is False for o in again)
    assert [o.destination_id for o in again] == [o.destination_id for o in first]
    assert len(api.records()) == 450
    assert {r["Segment__c"] for r in api.records().values()} == {"at_risk"}
    assert sf.stats.api_calls == 6 and sf.stats.retries == 0 and sf.stats.rate_limited == 0


def test_a_rejected_record_is_an_outcome_and_the_rest_is_committed(
    api: SalesforceEmulator, sf: SalesforceDestination
) -> None:
    records = [record(0), record(1, Email="not-an-email"), record(2, LTV__c="abc"), record(3)]
    outcomes = sf.upsert(records)
    assert [o.ok for o in outcomes] == [True, False, False, True]
    assert outcomes[1].error == "INVALID_EMAIL_ADDRESS: Email: invalid email address: not-an-email"
    # Salesforce would refuse the whole call for "abc" in a double field: it is never sent.
    assert outcomes[2].error is not None and outcomes[2].error.startswith("not sent: field")
    assert "LTV__c" in outcomes[2].error
    assert sorted(api.records()) == ["cus_000000", "cus_000003"]


def test_one_identity_twice_in_a_call_goes_out_in_two_calls_in_order(
    api: SalesforceEmulator, sf: SalesforceDestination
) -> None:
    outcomes = sf.upsert([record(1, Segment__c="first"), record(2), record(1, Segment__c="last")])
    assert [(o.ok, o.created) for o in outcomes] == [(True, True), (True, True), (True, False)]
    assert api.records()["cus_000001"]["Segment__c"] == "last"
    assert api.stats().by_endpoint == {UPSERT: 2}


def test_update_only_updates_what_exists_and_creates_nothing(
    api: SalesforceEmulator, sf: SalesforceDestination
) -> None:
    sf.upsert([record(1), record(2)])
    outcomes = sf.update([record(1, Segment__c="vip"), record(9, Segment__c="vip")])
    assert outcomes[0].ok and outcomes[0].created is False
    assert outcomes[1].model_dump() == {
        "identity": "cus_000009",
        "ok": False,
        "destination_id": None,
        "created": None,
        "error": "not found in salesforce",
    }
    assert sorted(api.records()) == ["cus_000001", "cus_000002"]
    assert api.records()["cus_000001"]["Segment__c"] == "vip"


def test_remove_deletes_by_id_or_by_identity_and_gone_is_ok(
    api: SalesforceEmulator, sf: SalesforceDestination
) -> None:
    created = sf.upsert([record(n) for n in range(3)])
    sf.remove([("cus_000002", created[2].destination_id)])  # deleted before: in the bin
    outcomes = sf.remove(
        [
            ("cus_000000", created[0].destination_id),
            ("cus_000001", None),  # looked up by external id
            ("cus_000002", created[2].destination_id),  # already deleted
            ("cus_000404", None),  # never existed
        ]
    )
    assert all(o.ok for o in outcomes)
    assert [o.destination_id for o in outcomes] == [
        created[0].destination_id,
        created[1].destination_id,
        created[2].destination_id,
        None,
    ]
    assert api.records() == {}
    assert len(api.recycle_bin()) == 3


def test_an_expired_session_raises_auth_error_and_stores_nothing(
    api: SalesforceEmulator, sf: SalesforceDestination
) -> None:
    api.expire_token()
    with pytest.raises(DestinationAuthError) as raised:
        sf.upsert([record(1)])
    message = str(raised.value)
    assert "salesforce" in message and "HTTP 401" in message and "INVALID_SESSION_ID" in message
    assert "/composite/sobjects/Contact/Acme_Customer_Id__c" in message
    assert TOKEN not in message
    assert api.records() == {} and sf.stats.api_calls == 1


def test_request_limit_exceeded_is_waited_out(api: SalesforceEmulator) -> None:
    """Salesforce's 403 REQUEST_LIMIT_EXCEEDED (here a 3-per-0.5 s window the client does not
    know about) is backed off and retried until every record lands."""
    api.set_rate_limit(EmulatorRateLimit(max_requests=3, window_seconds=0.5))
    with SalesforceDestination(api.base_url, TOKEN, retry=FAST) as sf:
        outcomes = sf.upsert([record(n) for n in range(1400)])  # 7 calls
    assert all(o.ok for o in outcomes) and len(api.records()) == 1400
    assert sf.stats.rate_limited > 0 and sf.stats.rate_limited == api.stats().limited
    assert sf.stats.waited_seconds > 0


def test_a_configured_rate_limit_is_never_exceeded(api: SalesforceEmulator) -> None:
    api.set_rate_limit(EmulatorRateLimit(max_requests=3, window_seconds=0.5))
    limit = RateLimit(max_requests=3, window_seconds=0.5)
    with SalesforceDestination(api.base_url, TOKEN, rate_limit=limit, retry=FAST) as sf:
        sf.upsert([record(n) for n in range(1400)])
    stats = api.stats()
    assert stats.limited == 0 and stats.peak_in_window <= 3
    assert sf.stats.rate_limited == 0 and sf.stats.waited_seconds > 0.5


def test_a_spent_daily_budget_fails_at_once(api: SalesforceEmulator) -> None:
    api.set_api_budget(1)
    with SalesforceDestination(api.base_url, TOKEN, retry=FAST) as sf:
        sf.upsert([record(1)])
        with pytest.raises(DestinationError, match=r"budget is spent \(api-usage=1/1\)"):
            sf.upsert([record(2)])
        assert sf.stats.api_calls == 2 and sf.stats.rate_limited == 1


def test_transient_failures_are_retried(api: SalesforceEmulator, sf: SalesforceDestination) -> None:
    api.fail_next(2, status=500)
    api.fail_next(status=502)  # the proxy's HTML page
    api.drop_next(after_processing=True)  # written, but the answer is lost: the retry updates
    outcomes = sf.upsert([record(n) for n in range(5)])
    assert all(o.ok for o in outcomes) and len(api.records()) == 5
    assert sf.stats.retries == 4 and sf.stats.api_calls == 5


def test_a_call_that_keeps_failing_raises_naming_the_endpoint(api: SalesforceEmulator) -> None:
    api.fail_next(10, status=503)
    retry = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02)
    with (
        SalesforceDestination(api.base_url, TOKEN, retry=retry) as sf,
        pytest.raises(DestinationError) as raised,
    ):
        sf.upsert([record(1)])
    message = str(raised.value)
    assert message.startswith("salesforce: PATCH /services/data/v62.0/composite/sobjects/Contact")
    assert "after 3 attempt(s)" in message and "HTTP 503" in message
    assert "SERVER_UNAVAILABLE" in message
    assert api.records() == {}


def test_a_bad_request_fails_the_call_with_the_api_message(
    api: SalesforceEmulator, sf: SalesforceDestination
) -> None:
    with pytest.raises(DestinationError, match="HTTP 400: INVALID_FIELD: No such column 'Nope'"):
        sf.upsert([record(1, Nope="x")])


def test_the_token_never_leaks(
    api: SalesforceEmulator, sf: SalesforceDestination, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.fail_next(status=500)
    outcomes = sf.upsert([record(1), record(2, Email="bad")])
    api.expire_token()
    with pytest.raises(DestinationAuthError) as raised:
        sf.remove([("cus_000001", None)])
    assert "retry 1 of" in caplog.text  # the retry was logged ...
    for text in (caplog.text, str(raised.value), repr(raised.value), repr(sf)):
        assert TOKEN not in text  # ... without the token
    assert all(TOKEN not in outcome.model_dump_json() for outcome in outcomes)


def test_fields_and_from_env() -> None:
    assert {name: spec.type for name, spec in FIELDS.items()} == {
        "Acme_Customer_Id__c": "string",
        "Email": "string",
        "FirstName": "string",
        "LastName": "string",
        "LTV__c": "number",
        "Churn_Risk__c": "number",
        "Segment__c": "string",
        "Last_Order_Date__c": "date",
    }
    with pytest.raises(DestinationConfigError, match="SALESFORCE_ACCESS_TOKEN is not set"):
        SalesforceDestination.from_env(environ={"SALESFORCE_INSTANCE_URL": "https://x.test"})
    with pytest.raises(DestinationConfigError, match="SF_SANDBOX_INSTANCE_URL is not set"):
        SalesforceDestination.from_env("SF_SANDBOX", environ={})
    with pytest.raises(DestinationConfigError, match="must use https"):
        SalesforceDestination("http://acme.my.salesforce.com", TOKEN)
    env = {
        "SALESFORCE_INSTANCE_URL": "https://acme.my.salesforce.com/",
        "SALESFORCE_ACCESS_TOKEN": TOKEN,
    }
    with SalesforceDestination.from_env(environ=env, sobject="Lead") as sf:
        assert sf.base_url == "https://acme.my.salesforce.com" and sf.sobject == "Lead"
        assert sf.max_batch == 200 and sf.name == "salesforce"
