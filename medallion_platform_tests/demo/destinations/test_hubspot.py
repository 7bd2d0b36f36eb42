"""The HubSpot emulator over real HTTP: batch upsert by email, one bad input failing the whole
batch (400/409, HubSpot's default) or 207 multi-status (where enabled), batch read and archive,
auth and the ten-secondly rolling limit with its headers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medallion_platform.devkit.demo.destinations.hubspot import HubSpotEmulator
from medallion_platform.devkit.demo.http_emulator import RateLimit

TOKEN = "pat-eu1-0000aaaa-bbbb-cccc-dddd-eeeeffff9876"
UPSERT = "/crm/v3/objects/contacts/batch/upsert"
READ = "/crm/v3/objects/contacts/batch/read"
ARCHIVE = "/crm/v3/objects/contacts/batch/archive"


def contact(email: str, **properties: Any) -> dict[str, Any]:
    defaults = {
        "lifetime_value": "12.5",
        "churn_risk": 0.42,
        "acme_segment": "loyal",
        "last_order_date": "2026-11-01",
    }
    return {"idProperty": "email", "id": email, "properties": defaults | properties}


def _client(api: HubSpotEmulator, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=api.base_url, headers=headers, trust_env=False, timeout=10)


@pytest.fixture
def api() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(token=TOKEN) as server:
        yield server


@pytest.fixture
def client(api: HubSpotEmulator) -> Iterator[httpx.Client]:
    with _client(api) as http:
        yield http


def upsert(client: httpx.Client, inputs: list[dict[str, Any]]) -> httpx.Response:
    return client.post(UPSERT, json={"inputs": inputs})


def test_upsert_creates_then_updates_by_email(api: HubSpotEmulator, client: httpx.Client) -> None:
    first = upsert(client, [contact("ada@example.com"), contact("grace@example.com")])
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "COMPLETE" and "errors" not in body
    assert {"startedAt", "completedAt"} <= set(body)
    assert [result["new"] for result in body["results"]] == [True, True]
    ada = body["results"][0]
    assert ada["archived"] is False and ada["id"].isdigit()
    assert ada["properties"]["hs_object_id"] == ada["id"]
    # Values come back as strings, numbers included.
    assert ada["properties"]["churn_risk"] == "0.42"
    assert ada["properties"]["lifetime_value"] == "12.5"
    assert ada["properties"]["email"] == "ada@example.com"

    again = upsert(client, [contact("ADA@example.com", lifetime_value=99)]).json()
    [result] = again["results"]
    assert result["new"] is False and result["id"] == ada["id"]
    assert result["properties"]["lifetime_value"] == "99"
    records = api.records()
    assert set(records) == {"ada@example.com", "grace@example.com"}
    assert records["ada@example.com"]["properties"]["lifetime_value"] == "99"
    assert records["ada@example.com"]["createdAt"] == ada["createdAt"]


def test_rate_limit_headers_are_on_every_response(client: httpx.Client) -> None:
    response = upsert(client, [contact("ada@example.com")])
    assert response.headers["X-HubSpot-RateLimit-Max"] == "100"
    assert response.headers["X-HubSpot-RateLimit-Remaining"] == "99"
    assert response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"


def test_an_empty_value_clears_a_property(api: HubSpotEmulator, client: httpx.Client) -> None:
    upsert(client, [contact("ada@example.com")]).raise_for_status()
    upsert(client, [contact("ada@example.com", acme_segment="")]).raise_for_status()
    assert "acme_segment" not in api.records()["ada@example.com"]["properties"]


def test_dates_take_iso_days_or_midnight_epoch_millis(
    api: HubSpotEmulator, client: httpx.Client
) -> None:
    midnight = 1_793_491_200_000  # 2026-11-01T00:00:00Z
    response = upsert(client, [contact("a@example.com", last_order_date=midnight)])
    assert response.json()["results"][0]["properties"]["last_order_date"] == "2026-11-01"
    noon = upsert(client, [contact("b@example.com", last_order_date=str(midnight + 43_200_000))])
    assert noon.status_code == 400
    assert "not midnight" in noon.json()["errors"][0]["message"]


def test_more_than_100_inputs_is_refused_whole(api: HubSpotEmulator, client: httpx.Client) -> None:
    response = upsert(client, [contact(f"c{n}@example.com") for n in range(101)])
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert body["message"] == (
        "The maximum number of inputs supported in a batch is 100. Please reduce the number of "
        "items and try again"
    )
    assert body["correlationId"]
    assert api.records() == {}
    assert upsert(client, [contact(f"c{n}@example.com") for n in range(100)]).status_code == 200


def test_with_multi_status_invalid_inputs_come_back_as_207_and_the_rest_is_written() -> None:
    with HubSpotEmulator(token=TOKEN, multi_status=True) as api, _client(api) as client:
        _multi_status(api, client)


def _multi_status(api: HubSpotEmulator, client: httpx.Client) -> None:
    inputs = [
        contact("ok@example.com"),
        contact("not-an-email"),
        contact("typo@example.com", lifetme_value="1"),
        contact("nan@example.com", churn_risk="high"),
        contact("date@example.com", last_order_date="2026-13-01"),
        contact("ro@example.com", hs_object_id="1"),
        contact("ok2@example.com"),
    ]
    inputs[-1]["objectWriteTraceId"] = "trace-7"
    response = upsert(client, inputs)
    assert response.status_code == 207
    body = response.json()
    assert body["status"] == "COMPLETE" and body["numErrors"] == 5
    assert [result["properties"]["email"] for result in body["results"]] == [
        "ok@example.com",
        "ok2@example.com",
    ]
    assert body["results"][1]["objectWriteTraceId"] == "trace-7"
    errors = {error["context"]["id"][0]: error for error in body["errors"]}
    assert set(errors) == {
        "not-an-email",
        "typo@example.com",
        "nan@example.com",
        "date@example.com",
        "ro@example.com",
    }
    email_error = errors["not-an-email"]
    assert email_error["status"] == "error" and email_error["category"] == "VALIDATION_ERROR"
    assert email_error["message"].startswith("Property values were not valid: ")
    listed = json.loads(email_error["message"].removeprefix("Property values were not valid: "))
    assert listed[0]["error"] == "INVALID_EMAIL" and listed[0]["name"] == "email"
    codes = {key: error["errors"][0]["code"] for key, error in errors.items()}
    assert codes == {
        "not-an-email": "INVALID_EMAIL",
        "typo@example.com": "PROPERTY_DOESNT_EXIST",
        "nan@example.com": "INVALID_INTEGER",
        "date@example.com": "INVALID_DATE",
        "ro@example.com": "READ_ONLY_VALUE",
    }
    assert errors["typo@example.com"]["errors"][0] == {
        "message": 'Property "lifetme_value" does not exist',
        "code": "PROPERTY_DOESNT_EXIST",
        "context": {"propertyName": ["lifetme_value"]},
    }
    assert set(api.records()) == {"ok@example.com", "ok2@example.com"}


def test_by_default_one_invalid_input_fails_the_whole_batch(
    api: HubSpotEmulator, client: httpx.Client
) -> None:
    response = upsert(client, [contact("ok@example.com"), contact("bad")])
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: ")
    assert body["errors"][0]["code"] == "INVALID_EMAIL"
    assert "context" not in body or "id" not in body["context"]  # no word of which input
    assert api.records() == {}


def test_by_default_one_conflicting_input_fails_the_whole_batch_with_409(
    api: HubSpotEmulator, client: httpx.Client
) -> None:
    first = upsert(client, [contact("ada@example.com", acme_customer_id="cus_1")]).json()
    taken = contact("grace@example.com", acme_customer_id="cus_1")
    response = upsert(client, [contact("ok@example.com"), taken, contact("ok2@example.com")])
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "error" and body["category"] == "CONFLICT"
    assert body["message"] == f"Contact already exists. Existing ID: {first['results'][0]['id']}"
    assert sorted(api.records()) == ["ada@example.com"]  # ok@ was rolled back


def test_duplicate_and_non_unique_ids_are_refused(
    api: HubSpotEmulator, client: httpx.Client
) -> None:
    duplicate = upsert(client, [contact("ada@example.com"), contact("Ada@Example.com")])
    assert duplicate.status_code == 400
    assert duplicate.json()["message"] == (
        "Duplicate IDs found in batch input: [ada@example.com]. IDs must be unique"
    )
    by_name = upsert(client, [{"idProperty": "lastname", "id": "Lovelace", "properties": {}}])
    assert by_name.status_code == 400
    assert "non-unique" in by_name.json()["message"]
    no_id = client.post(UPSERT, json={"inputs": [{"idProperty": "email", "properties": {}}]})
    assert no_id.status_code == 400 and no_id.json()["message"].startswith("Invalid input JSON")
    assert api.records() == {}


def test_upsert_by_another_unique_property_and_conflicts(
    api: HubSpotEmulator, client: httpx.Client
) -> None:
    by_customer = {
        "idProperty": "acme_customer_id",
        "id": "cus_000001",
        "properties": {"email": "ada@example.com", "lifetime_value": "5"},
    }
    created = upsert(client, [by_customer]).json()["results"][0]
    assert created["new"] is True
    assert created["properties"]["acme_customer_id"] == "cus_000001"
    updated = upsert(client, [contact("ada@example.com", lifetime_value="6")]).json()["results"]
    assert updated[0]["id"] == created["id"] and updated[0]["new"] is False
    upsert(client, [contact("grace@example.com")]).raise_for_status()
    clash = {**by_customer, "properties": {"email": "grace@example.com"}}
    response = upsert(client, [clash])
    assert response.status_code == 409
    assert response.json()["category"] == "CONFLICT"
    assert api.records()["ada@example.com"]["properties"]["lifetime_value"] == "6"


def test_batch_read_finds_ids_by_email(api: HubSpotEmulator, client: httpx.Client) -> None:
    created = upsert(client, [contact("ada@example.com")]).json()["results"][0]
    body = {
        "idProperty": "email",
        "inputs": [{"id": "ADA@example.com"}, {"id": "nobody@example.com"}],
        "properties": ["email", "lifetime_value"],
    }
    response = client.post(READ, json=body)
    assert response.status_code == 207
    read = response.json()
    [found] = read["results"]
    assert found["id"] == created["id"]
    assert found["properties"]["lifetime_value"] == "12.5"
    assert set(found["properties"]) == {
        "email",
        "lifetime_value",
        "hs_object_id",
        "createdate",
        "lastmodifieddate",
    }
    assert read["errors"] == [
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some CONTACT objects, they may be deleted or not exist. "
            "Check that ids are valid.",
            "context": {"ids": ["nobody@example.com"]},
        }
    ]
    by_id = client.post(READ, json={"inputs": [{"id": created["id"]}]})
    assert by_id.status_code == 200
    assert by_id.json()["results"][0]["properties"]["email"] == "ada@example.com"
    single = client.get(f"/crm/v3/objects/contacts/{created['id']}")
    assert single.status_code == 200 and single.json()["id"] == created["id"]
    by_email = client.get(
        "/crm/v3/objects/contacts/ada@example.com", params={"idProperty": "email"}
    )
    assert by_email.json()["id"] == created["id"]
    assert client.get("/crm/v3/objects/contacts/404").status_code == 404


def test_archive_removes_contacts(api: HubSpotEmulator, client: httpx.Client) -> None:
    results = upsert(client, [contact("ada@example.com"), contact("grace@example.com")]).json()
    ada_id = results["results"][0]["id"]
    response = client.post(ARCHIVE, json={"inputs": [{"id": ada_id}, {"id": "999"}]})
    assert response.status_code == 204 and response.content == b""
    assert set(api.records()) == {"grace@example.com"}
    assert api.archived()[ada_id]["archived"] is True
    read = client.post(READ, json={"idProperty": "email", "inputs": [{"id": "ada@example.com"}]})
    assert read.status_code == 207
    archived = client.post(
        READ,
        params={"archived": "true"},
        json={"idProperty": "email", "inputs": [{"id": "ada@example.com"}]},
    )
    assert archived.status_code == 200 and archived.json()["results"][0]["archived"] is True
    again = upsert(client, [contact("ada@example.com")]).json()["results"][0]
    assert again["new"] is True and again["id"] != ada_id
    too_many = client.post(ARCHIVE, json={"inputs": [{"id": str(n)} for n in range(101)]})
    assert too_many.status_code == 400


def test_bad_credentials_are_401_and_store_nothing(api: HubSpotEmulator) -> None:
    for token in (None, "pat-eu1-wrong"):
        with _client(api, token) as http:
            response = upsert(http, [contact("ada@example.com")])
        assert response.status_code == 401
        body = response.json()
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert body["message"].startswith("Authentication credentials not found.")
        assert TOKEN not in response.text
    assert api.records() == {}
    api.expire_token()
    with _client(api) as http:
        expired = upsert(http, [contact("ada@example.com")])
    assert expired.status_code == 401 and expired.json()["category"] == "EXPIRED_AUTHENTICATION"
    assert api.records() == {}


def test_the_rolling_limit_answers_429_with_its_headers() -> None:
    limit = RateLimit(max_requests=5, window_seconds=0.5)
    with HubSpotEmulator(token=TOKEN, rate_limit=limit) as api, _client(api) as client:
        responses = [upsert(client, [contact(f"c{n}@example.com")]) for n in range(6)]
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        remaining = [r.headers["X-HubSpot-RateLimit-Remaining"] for r in responses]
        assert remaining == ["4", "3", "2", "1", "0", "0"]
        limited = responses[-1]
        assert limited.headers["X-HubSpot-RateLimit-Max"] == "5"
        assert limited.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "500"
        body = limited.json()
        assert body["status"] == "error" and body["errorType"] == "RATE_LIMIT"
        assert body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert len(api.records()) == 5
        time.sleep(0.55)
        assert upsert(client, [contact("c5@example.com")]).status_code == 200
        stats = api.stats()
    assert stats.limited == 1 and stats.peak_in_window == 6
    assert stats.by_status == {200: 6, 429: 1}


def test_a_paced_client_never_exceeds_the_window() -> None:
    limit = RateLimit(max_requests=4, window_seconds=0.2)
    with HubSpotEmulator(token=TOKEN, rate_limit=limit) as api, _client(api) as client:
        for n in range(8):
            assert upsert(client, [contact(f"c{n}@example.com")]).status_code == 200
            time.sleep(0.2 / 4 + 0.01)
        stats = api.stats()
    assert stats.peak_in_window <= 4 and stats.limited == 0


def test_the_daily_limit() -> None:
    with HubSpotEmulator(token=TOKEN, daily_limit=2) as api, _client(api) as client:
        responses = [upsert(client, [contact(f"c{n}@example.com")]) for n in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"
    assert responses[2].json()["policyName"] == "DAILY"
    assert len(api.records()) == 2


def test_injected_faults(api: HubSpotEmulator, client: httpx.Client) -> None:
    api.fail_next(status=429, retry_after=2)
    api.fail_next(status=500, path="/crm/v3/objects/contacts/batch/read")
    limited = upsert(client, [contact("ada@example.com")])
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert limited.json()["errorType"] == "RATE_LIMIT"
    assert upsert(client, [contact("ada@example.com")]).status_code == 200
    read = client.post(READ, json={"idProperty": "email", "inputs": [{"id": "ada@example.com"}]})
    assert read.status_code == 500 and read.json()["status"] == "error"
    assert api.stats().by_endpoint == {
        "POST /crm/v3/objects/contacts/batch/upsert": 2,
        "POST /crm/v3/objects/contacts/batch/read": 1,
    }
