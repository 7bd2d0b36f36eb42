"""The Zendesk client against the Zendesk emulator over real HTTP: bulk jobs submitted and
polled (pipelined), per-user results, failed jobs, update-only, bulk delete, API-token auth,
the per-minute limit (paced, learned, 429 + Retry-After) and too many queued jobs."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from medallion_platform.devkit.demo.destinations.zendesk import DEFAULT_EMAIL, ZendeskEmulator
from medallion_platform.devkit.demo.http_emulator import RateLimit as EmulatorRateLimit
from medallion_platform.reverse_etl.destinations.base import (
    DestinationAuthError,
    DestinationError,
    DestinationRecord,
    DestinationSetupError,
)
from medallion_platform.reverse_etl.destinations.http import DestinationConfigError, RetryPolicy
from medallion_platform.reverse_etl.destinations.ratelimit import RateLimit
from medallion_platform.reverse_etl.destinations.zendesk import (
    FIELDS,
    ZendeskDestination,
    _match_results,
)
from medallion_platform.reverse_etl.spec import load_syncs

TOKEN = "ZdClientTestApiTokenSecret000000000000042"
UPSERT = "POST /api/v2/users/create_or_update_many"
JOB = "GET /api/v2/job_statuses/{id}"
SHOW = "GET /api/v2/users/show_many"
FAST = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05, rate_limit_patience_s=30)
QUICK_POLLS = {"poll_first_s": 0.05, "poll_min_s": 0.02}
# The demo account's custom user fields, as the packaged sync declares them (syncs.yaml).
ORG_FIELDS = {s.name: s for s in load_syncs()}["zendesk_users"].writable_fields


def user(n: int, **fields: Any) -> DestinationRecord:
    values = {
        "email": f"customer{n}@example.com",
        "name": f"Ada Lovelace {n}",
        "tags": ["acme", "loyal"],
        "user_fields.ltv": 1234.5,
        "user_fields.churn_risk": 0.07,
        "user_fields.last_order_date": dt.date(2026, 11, 1),
    }
    return DestinationRecord(identity=f"cus_{n:06d}", fields=values | fields)


def client(api: ZendeskEmulator, **options: Any) -> ZendeskDestination:
    options = {"retry": FAST, "fields": ORG_FIELDS, **QUICK_POLLS, **options}
    return ZendeskDestination(api.base_url, DEFAULT_EMAIL, TOKEN, **options)


@pytest.fixture
def api() -> Iterator[ZendeskEmulator]:
    with ZendeskEmulator(token=TOKEN, job_delay=0.03) as server:
        yield server


@pytest.fixture
def zd(api: ZendeskEmulator) -> Iterator[ZendeskDestination]:
    with client(api) as destination:
        yield destination


def test_jobs_of_100_are_polled_and_a_repeat_updates_without_duplicates(
    api: ZendeskEmulator, zd: ZendeskDestination
) -> None:
    first = zd.upsert([user(n) for n in range(250)])
    assert all(o.ok and o.created is True for o in first)
    assert [o.identity for o in first] == [f"cus_{n:06d}" for n in range(250)]
    assert [job["total"] for job in api.job_statuses()] == [100, 100, 50]
    stored = api.records()
    assert len(stored) == 250
    assert stored["cus_000007"]["user_fields"]["ltv"] == 1234.5
    assert stored["cus_000007"]["user_fields"]["last_order_date"] == "2026-11-01"
    assert stored["cus_000007"]["tags"] == ["acme", "loyal"]
    assert first[7].destination_id == str(stored["cus_000007"]["id"])

    again = zd.upsert([user(n, name=f"Ada {n}") for n in range(250)])
    assert all(o.ok and o.created is False for o in again)
    assert [o.destination_id for o in again] == [o.destination_id for o in first]
    assert len(api.records()) == 250 and api.records()["cus_000003"]["name"] == "Ada 3"
    by_endpoint = api.stats().by_endpoint
    assert by_endpoint[UPSERT] == 6 and by_endpoint[JOB] >= 6
    assert by_endpoint[SHOW] == 1  # the tags read back once, after the first jobs
    assert zd.stats.api_calls == by_endpoint[UPSERT] + by_endpoint[JOB] + 1 == 7 + zd.job_polls


def test_jobs_are_pipelined_up_to_the_in_flight_cap() -> None:
    with ZendeskEmulator(token=TOKEN, job_delay=0.3) as api, client(api) as zd:
        outcomes = zd.upsert([user(n) for n in range(1000)])  # 10 jobs of 0.3 s each
        submitted = [r.time for r in api.requests if r.endpoint == UPSERT]
    assert all(o.ok for o in outcomes) and len(api.records()) == 1000
    assert max(submitted) - min(submitted) < 0.3  # all queued before the first was done


def test_failed_users_are_outcomes_and_the_rest_is_committed(
    api: ZendeskEmulator, zd: ZendeskDestination
) -> None:
    outcomes = zd.upsert(
        [
            user(0),
            user(1, email="not-an-email"),
            user(2, **{"user_fields.ltv": float("nan")}),  # never sent: not valid JSON
            user(3, tags="vip"),  # never sent: not a list of strings
            user(4, **{"user_fields.ltv": None}),  # None clears the field
        ]
    )
    assert [o.ok for o in outcomes] == [True, False, False, False, True]
    assert outcomes[1].error == "UserUpdateError: Email: not-an-email is not properly formatted"
    assert outcomes[2].error == "not sent: field 'user_fields.ltv': nan is not a finite number"
    assert outcomes[3].error is not None and "expected a list of strings" in outcomes[3].error
    assert sorted(api.records()) == ["cus_000000", "cus_000004"]
    assert api.records()["cus_000004"]["user_fields"]["ltv"] is None


def test_a_failed_job_is_submitted_again(api: ZendeskEmulator, zd: ZendeskDestination) -> None:
    api.fail_next_jobs(2)
    outcomes = zd.upsert([user(n) for n in range(3)])
    assert all(o.ok and o.created for o in outcomes) and len(api.records()) == 3
    assert [job["status"] for job in api.job_statuses()] == ["failed", "failed", "completed"]
    assert zd.stats.retries == 2


def test_a_job_that_keeps_failing_fails_the_call(api: ZendeskEmulator) -> None:
    api.fail_next_jobs(2, message="Internal Server Error")
    with client(api, job_attempts=2) as zd, pytest.raises(DestinationError) as raised:
        zd.upsert([user(1)])
    message = str(raised.value)
    assert message.startswith("zendesk: job ") and "failed 2 time(s)" in message
    assert "Internal Server Error" in message and api.records() == {}


def test_update_only_looks_up_by_external_id_and_creates_nothing(
    api: ZendeskEmulator, zd: ZendeskDestination
) -> None:
    zd.upsert([user(1), user(2)])
    outcomes = zd.update([user(1, name="Updated"), user(9, name="Updated")])
    assert outcomes[0].ok and outcomes[0].created is False
    assert not outcomes[1].ok and outcomes[1].error == "not found in zendesk"
    assert sorted(api.records()) == ["cus_000001", "cus_000002"]
    assert api.records()["cus_000001"]["name"] == "Updated"
    assert api.stats().by_endpoint[SHOW] == 2  # the tags read back, then the lookup


def test_remove_destroys_by_id_or_external_id(api: ZendeskEmulator, zd: ZendeskDestination) -> None:
    created = zd.upsert([user(n) for n in range(3)])
    outcomes = zd.remove(
        [
            ("cus_000000", created[0].destination_id),
            ("cus_000001", None),
            ("cus_000404", None),  # not in Zendesk: already gone
            ("cus_000000", created[0].destination_id),  # twice: the second finds it gone
        ]
    )
    assert all(o.ok for o in outcomes)
    assert [o.destination_id for o in outcomes[:2]] == [
        created[0].destination_id,
        created[1].destination_id,
    ]
    assert sorted(api.records()) == ["cus_000002"] and len(api.deleted()) == 2


def test_refused_credentials_raise_auth_error_and_store_nothing(api: ZendeskEmulator) -> None:
    with client(api) as zd:
        zd.upsert([user(1)])
    api.set_token("ZdRotatedTokenTheClientDoesNotHave00000000")
    with client(api) as zd, pytest.raises(DestinationAuthError) as raised:
        zd.upsert([user(2)])
    message = str(raised.value)
    assert message.startswith(f"zendesk: {UPSERT}.json was refused with HTTP 401")
    assert "Couldn't authenticate you" in message
    assert sorted(api.records()) == ["cus_000001"] and len(api.job_statuses()) == 1


def test_paces_under_the_limit_it_learns_from_x_rate_limit() -> None:
    """5 requests a second on the emulator; the client, told the window is a second, learns
    the count from ``X-Rate-Limit`` and its polls wait in the same queue as its jobs."""
    limit = EmulatorRateLimit(max_requests=5, window_seconds=1)
    with ZendeskEmulator(token=TOKEN, rate_limit=limit, job_delay=0.02) as api:
        with client(api, rate_window_seconds=1) as zd:
            outcomes = zd.upsert([user(n) for n in range(600)])  # 6 jobs, 12+ requests
            assert zd.pacer.limit == RateLimit(max_requests=5, window_seconds=1)
        stats = api.stats()
    assert all(o.ok for o in outcomes) and len(api.records()) == 600
    assert stats.peak_in_window <= 5 and stats.limited == 0
    assert zd.stats.api_calls == stats.requests >= 12 and zd.stats.waited_seconds > 1


def test_a_429_storm_is_waited_out_for_retry_after() -> None:
    limit = EmulatorRateLimit(max_requests=5, window_seconds=1)
    with ZendeskEmulator(token=TOKEN, rate_limit=limit, job_delay=0.02) as api:
        too_high = RateLimit(max_requests=50, window_seconds=1)
        with client(api, rate_limit=too_high) as zd:
            outcomes = zd.upsert([user(n) for n in range(500)])
        stats = api.stats()
    assert all(o.ok for o in outcomes) and len(api.records()) == 500
    assert stats.limited > 0 and zd.stats.rate_limited == stats.limited
    assert zd.stats.waited_seconds >= 1  # Retry-After: 1, at least once


def test_too_many_queued_jobs_is_waited_out() -> None:
    with ZendeskEmulator(token=TOKEN, job_delay=0.2, max_active_jobs=2) as api:
        with client(api, max_jobs_in_flight=4) as zd:
            outcomes = zd.upsert([user(n) for n in range(400)])
        statuses = api.stats().by_status
    assert all(o.ok for o in outcomes) and len(api.records()) == 400
    assert statuses[429] == zd.stats.rate_limited > 0


def test_transient_failures_are_retried(api: ZendeskEmulator, zd: ZendeskDestination) -> None:
    api.fail_next(status=503, path="/api/v2/users/create_or_update_many")
    api.fail_next(2, status=500, path="/api/v2/job_statuses/")
    api.drop_next(path="/api/v2/job_statuses/")
    outcomes = zd.upsert([user(n) for n in range(3)])
    assert all(o.ok for o in outcomes) and len(api.job_statuses()) == 1
    assert zd.stats.retries == 4


def test_the_credentials_never_leak(
    api: ZendeskEmulator, zd: ZendeskDestination, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.fail_next(status=500)
    outcomes = zd.upsert([user(1), user(2, email="bad")])
    api.expire_token()
    with pytest.raises(DestinationAuthError) as raised:
        zd.remove([("cus_000001", None)])
    basic = base64.b64encode(f"{DEFAULT_EMAIL}/token:{TOKEN}".encode()).decode()
    assert "retry 1 of" in caplog.text
    for text in (caplog.text, str(raised.value), repr(zd)):
        assert TOKEN not in text and basic not in text
    assert all(TOKEN not in outcome.model_dump_json() for outcome in outcomes)


def test_fields_and_from_env() -> None:
    # Every account's user fields; the account's custom ones come from the sync (syncs.yaml).
    assert {name: spec.type for name, spec in FIELDS.items()} == {
        "external_id": "string",
        "email": "string",
        "name": "string",
        "tags": "string_list",
    }
    assert {name: spec.type for name, spec in ORG_FIELDS.items()} == {
        **{name: spec.type for name, spec in FIELDS.items()},
        "user_fields.ltv": "number",
        "user_fields.churn_risk": "number",
        "user_fields.segment": "string",
        "user_fields.last_order_date": "date",
    }
    env = {"ZENDESK_BASE_URL": "https://acme.zendesk.com", "ZENDESK_API_TOKEN": TOKEN}
    with pytest.raises(DestinationConfigError, match="ZENDESK_EMAIL is not set"):
        ZendeskDestination.from_env(environ=env)
    with ZendeskDestination.from_env(environ=env | {"ZENDESK_EMAIL": DEFAULT_EMAIL}) as zd:
        assert zd.base_url == "https://acme.zendesk.com" and zd.max_batch == 100


# -- issue 15: what a real account does --------------------------------------------------------


def test_results_without_index_are_matched_by_position_and_echo() -> None:
    """Zendesk's results carry no index (the emulator's default): in input order they are
    matched by position; a result the position cannot vouch for is matched by its echo."""
    with ZendeskEmulator(token=TOKEN, job_delay=0.01) as api, client(api) as zd:
        outcomes = zd.upsert([user(0), user(1, email="nope@"), user(2)])
        statuses = api.job_statuses()
    assert all("index" not in r for job in statuses for r in job["results"])
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].error == "UserUpdateError: Email: nope@ is not properly formatted"
    assert outcomes[2].destination_id == str(api.records()["cus_000002"]["id"])
    inputs = [{"external_id": "a"}, {"external_id": "b"}, {"external_id": "c"}]
    # One result short, out of order: matched by what each echoes, the missing one unmatched.
    shuffled = {"results": [{"external_id": "c", "status": "Created"}, {"external_id": "a"}]}
    assert _match_results(shuffled, inputs) == {
        2: {"external_id": "c", "status": "Created"},
        0: {"external_id": "a"},
    }


def test_bulk_import_not_enabled_is_a_clear_permanent_error() -> None:
    with (
        ZendeskEmulator(token=TOKEN, bulk_import=False) as api,
        client(api) as zd,
        pytest.raises(DestinationSetupError) as raised,
    ):
        zd.upsert([user(1)])
    message = str(raised.value)
    assert "HTTP 403" in message and "Bulk user imports are not enabled" in message
    assert "account owner must ask Zendesk Customer Support" in message
    assert api.stats().by_endpoint == {UPSERT: 1}  # not retried: waiting will not fix it
    assert TOKEN not in message


def test_tags_that_do_not_stick_are_caught_by_the_read_back() -> None:
    with (
        ZendeskEmulator(token=TOKEN, job_delay=0.01, user_tagging=False) as api,
        client(api) as zd,
        pytest.raises(DestinationSetupError) as raised,
    ):
        zd.upsert([user(n) for n in range(3)])
    message = str(raised.value)
    assert "not applied to 3 of 3 users" in message and "Tags on users and organizations" in message
    assert len(api.records()) == 3  # written without tags: the outcomes are never reported


def test_merge_keeps_an_agents_tags_and_replace_drops_them() -> None:
    managed = ["vip", "churn_risk_high"]
    with ZendeskEmulator(token=TOKEN, job_delay=0.01) as api:
        with client(api, tags="merge", managed_tags=managed) as zd:
            zd.upsert([user(1, tags=["vip"]), user(2, tags=["vip"])])
            api.tag_user("cus_000001", "escalated")  # an agent's own tag
            zd.upsert([user(1, tags=["churn_risk_high"]), user(2, tags=[])])
        assert api.records()["cus_000001"]["tags"] == ["escalated", "churn_risk_high"]
        assert api.records()["cus_000002"]["tags"] == []  # vip no longer holds: removed
        with client(api, tags="replace") as zd:
            zd.upsert([user(1, tags=["vip"])])
        assert api.records()["cus_000001"]["tags"] == ["vip"]
    with pytest.raises(DestinationConfigError, match="needs the managed_tags"):
        ZendeskDestination("http://127.0.0.1:1", DEFAULT_EMAIL, TOKEN, tags="merge")
