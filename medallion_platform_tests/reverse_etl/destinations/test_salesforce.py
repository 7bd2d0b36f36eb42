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

from medallion_platform.devkit.demo.destinations.salesforce import (
    CONTACT,
    SalesforceEmulator,
    SObjectSchema,
)
from medallion_platform.devkit.demo.http_emulator import RateLimit as EmulatorRateLimit
from medallion_platform.reverse_etl.destinations.base import (
    DestinationAuthError,
    DestinationError,
    DestinationRecord,
)
from medallion_platform.reverse_etl.destinations.http import DestinationConfigError, RetryPolicy
from medallion_platform.reverse_etl.destinations.ratelimit import RateLimit
from medallion_platform.reverse_etl.destinations.salesforce import (
    FIELDS,
    OAuthSettings,
    SalesforceDestination,
)
from medallion_platform.reverse_etl.spec import load_syncs

TOKEN = "00DAcmeClientTest!AQ4AQSecretSessionToken4242"
UPSERT = "PATCH /composite/sobjects/{sobject}/{externalIdField}"
FAST = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05, rate_limit_patience_s=30)
# The demo org's custom fields, as the packaged sync declares them (syncs.yaml).
ORG_FIELDS = {s.name: s for s in load_syncs()}["salesforce_contacts"].writable_fields


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
    with SalesforceDestination(api.base_url, TOKEN, retry=FAST, fields=ORG_FIELDS) as client:
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
    # Standard Contact fields; the org's custom fields come from the sync (syncs.yaml).
    assert {name: spec.type for name, spec in FIELDS.items()} == {
        "Email": "string",
        "FirstName": "string",
        "LastName": "string",
    }
    assert {name: spec.type for name, spec in ORG_FIELDS.items()} == {
        **{name: spec.type for name, spec in FIELDS.items()},
        "Acme_Customer_Id__c": "string",
        "LTV__c": "number",
        "Churn_Risk__c": "number",
        "Segment__c": "string",
        "Last_Order_Date__c": "date",
    }
    with pytest.raises(
        DestinationConfigError, match=r"set SALESFORCE_ACCESS_TOKEN .*, or SALESFORCE_CLIENT_ID"
    ):
        SalesforceDestination.from_env(environ={"SALESFORCE_INSTANCE_URL": "https://x.test"})
    with pytest.raises(DestinationConfigError, match="SF_SANDBOX_INSTANCE_URL is not set"):
        SalesforceDestination.from_env("SF_SANDBOX", environ={})
    # A second account's error names its own variables, not the default account's.
    with pytest.raises(DestinationConfigError) as second:
        SalesforceDestination.from_env(
            "SF_SANDBOX", environ={"SF_SANDBOX_INSTANCE_URL": "https://x.test"}
        )
    assert "set SF_SANDBOX_ACCESS_TOKEN" in str(second.value)
    assert "SF_SANDBOX_CLIENT_ID and SF_SANDBOX_CLIENT_SECRET" in str(second.value)
    assert "SALESFORCE_" not in str(second.value)
    with pytest.raises(DestinationConfigError, match="must use https"):
        SalesforceDestination("http://acme.my.salesforce.com", TOKEN)
    env = {
        "SALESFORCE_INSTANCE_URL": "https://acme.my.salesforce.com/",
        "SALESFORCE_ACCESS_TOKEN": TOKEN,
    }
    with SalesforceDestination.from_env(environ=env, sobject="Lead") as sf:
        assert sf.base_url == "https://acme.my.salesforce.com" and sf.sobject == "Lead"
        assert sf.max_batch == 200 and sf.name == "salesforce"


# -- issue 15: lookups by SOQL, 300, duplicate rules, OAuth --------------------------------------

QUERY = "GET /query"
QUERY_MORE = "GET /query/{locator}"
NOT_UNIQUE = SObjectSchema(
    name="Contact",
    key_prefix="003",
    fields=tuple(
        f.model_copy(update={"unique": False}) if f.external_id else f for f in CONTACT.fields
    ),
)


def test_lookups_are_batched_soql_queries_following_next_records_url() -> None:
    """Update-only and removals find 450 records with a few /query requests (pages of 100 here,
    2,000 in Salesforce, followed by nextRecordsUrl), not 450 GETs of the daily budget."""
    with (
        SalesforceEmulator(token=TOKEN, query_page_size=100) as api,
        SalesforceDestination(api.base_url, TOKEN, retry=FAST) as sf,
    ):
        sf.upsert([record(n) for n in range(450)])
        api.clear_log()
        wanted = [record(n, Segment__c="vip") for n in range(0, 900, 2)]  # half exist
        outcomes = sf.update(wanted)
        calls = api.stats().by_endpoint
        assert [o.ok for o in outcomes] == [n < 450 for n in range(0, 900, 2)]
        assert {o.error for o in outcomes if not o.ok} == {"not found in salesforce"}
        assert (
            calls[QUERY] == 2 and calls[QUERY_MORE] == 2
        )  # 2 queries of ~225 values, ~112 rows: 2 pages each
        assert (
            calls[UPSERT] == 2 and "GET /sobjects/{sobject}/{externalIdField}/{value}" not in calls
        )
        api.clear_log()
        removed = sf.remove([(f"cus_{n:06d}", None) for n in range(450)])
        assert all(o.ok for o in removed) and api.records() == {}
        assert api.stats().by_endpoint[QUERY] == 2


def test_an_external_id_matching_several_records_fails_that_record_naming_them() -> None:
    """Salesforce answers 300 Multiple Choices (collections: DUPLICATE_EXTERNAL_ID) and changes
    none of them: the record fails with the ids; the rest of the call lands."""
    with (
        SalesforceEmulator(token=TOKEN, sobjects=(NOT_UNIQUE,)) as api,
        SalesforceDestination(api.base_url, TOKEN, retry=FAST) as sf,
    ):
        first = api.insert("Contact", {"Acme_Customer_Id__c": "cus_000001", "LastName": "A"})
        second = api.insert("Contact", {"Acme_Customer_Id__c": "cus_000001", "LastName": "B"})
        outcomes = sf.upsert([record(0), record(1), record(2)])
        assert [o.ok for o in outcomes] == [True, False, True]
        assert outcomes[1].error == (
            "DUPLICATE_EXTERNAL_ID: Acme Customer Id: more than one record found for external "
            f"id field: [{first}, {second}]"
        )
        updated = sf.update([record(1, Segment__c="vip"), record(2, Segment__c="vip")])
        assert [o.ok for o in updated] == [False, True]
        assert updated[0].error is not None and "300 Multiple Choices" in updated[0].error
        assert first in updated[0].error and second in updated[0].error
        removed = sf.remove([("cus_000001", None)])
        assert not removed[0].ok and first in (removed[0].error or "")
        held = api.records_by_id()
        assert (held[first]["LastName"], held[second]["LastName"]) == ("A", "B")  # untouched


def test_duplicate_rule_refuses_unless_the_header_allows_saving() -> None:
    with SalesforceEmulator(token=TOKEN) as api:
        with SalesforceDestination(api.base_url, TOKEN, retry=FAST) as sf:
            [existing] = sf.upsert([record(1, Email="shared@example.com")])
            outcomes = sf.upsert([record(2, Email="SHARED@example.com"), record(3)])
        assert [o.ok for o in outcomes] == [False, True]
        assert outcomes[0].error == (
            "DUPLICATES_DETECTED: Use one of these records? (duplicate rule "
            f"Standard_Contact_Duplicate_Rule matched {existing.destination_id}; allowSave=true)"
        )
        allow = {"allow_save": True}
        with SalesforceDestination(
            api.base_url, TOKEN, retry=FAST, duplicate_rule_header=allow
        ) as sf:
            [saved] = sf.upsert([record(2, Email="shared@example.com")])
        assert saved.ok and saved.created is True
        assert sorted(api.records()) == ["cus_000001", "cus_000002", "cus_000003"]
    with (
        SalesforceEmulator(token=TOKEN, duplicate_rule="block") as api,
        SalesforceDestination(api.base_url, TOKEN, retry=FAST, duplicate_rule_header=allow) as sf,
    ):
        sf.upsert([record(1, Email="shared@example.com")])
        [blocked] = sf.upsert([record(2, Email="shared@example.com")])
        assert not blocked.ok and "allowSave=false" in (blocked.error or "")


OAUTH = {"oauth_client_id": "3MVG9AcmeClientId", "oauth_client_secret": "AcmeClientSecret999"}
REFRESH = "5Aep861AcmeRefreshTokenSecret"


@pytest.mark.parametrize("flow", ["refresh_token", "client_credentials"])
def test_an_expired_session_is_refreshed_by_oauth_and_secrets_never_leak(
    flow: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with SalesforceEmulator(token=TOKEN, oauth_refresh_token=REFRESH, **OAUTH) as api:
        env = {
            "SALESFORCE_INSTANCE_URL": api.base_url,
            "SALESFORCE_ACCESS_TOKEN": TOKEN,
            "SALESFORCE_CLIENT_ID": OAUTH["oauth_client_id"],
            "SALESFORCE_CLIENT_SECRET": OAUTH["oauth_client_secret"],
        }
        if flow == "refresh_token":
            env["SALESFORCE_REFRESH_TOKEN"] = REFRESH
        with SalesforceDestination.from_env(environ=env, retry=FAST) as sf:
            assert sf.oauth is not None and sf.oauth.grant == flow
            sf.upsert([record(1)])
            api.expire_token()  # the session times out mid-sync
            outcomes = sf.upsert([record(2), record(3)])
            assert all(o.ok for o in outcomes) and sf.token_refreshes == 1
            assert api.tokens_issued == 1 and len(api.records()) == 3
            api.revoke_refresh_token()
            api.expire_token()
            if flow == "refresh_token":
                with pytest.raises(DestinationAuthError) as raised:
                    sf.upsert([record(4)])
                assert "refresh_token OAuth flow was refused" in str(raised.value)
                assert "invalid_grant" in str(raised.value)
                texts = [str(raised.value)]
            else:  # client credentials need no refresh token
                assert sf.upsert([record(4)])[0].ok
                texts = []
        texts += [caplog.text, repr(sf), repr(sf.oauth)]
        for text in texts:
            for secret in (TOKEN, REFRESH, OAUTH["oauth_client_secret"]):
                assert secret not in text
        assert "00DDn000000Emul!" not in caplog.text  # the refreshed access token


def test_oauth_without_an_access_token_and_a_wrong_secret() -> None:
    with SalesforceEmulator(token=TOKEN, **OAUTH) as api:
        oauth = OAuthSettings(
            token_url=f"{api.base_url}/services/oauth2/token",
            client_id=OAUTH["oauth_client_id"],
            client_secret=OAUTH["oauth_client_secret"],
        )
        with SalesforceDestination(api.base_url, "", oauth=oauth, retry=FAST) as sf:
            assert sf.upsert([record(1)])[0].ok and sf.token_refreshes == 1
        wrong = oauth.model_copy(update={"client_secret": "not-it"})
        with (
            SalesforceDestination(api.base_url, "", oauth=wrong, retry=FAST) as sf,
            pytest.raises(DestinationAuthError, match="invalid client credentials"),
        ):
            sf.upsert([record(2)])
