"""The Salesforce emulator over real HTTP: sObject Collections upsert and delete, allOrNone,
per-record errors, the session, the org's request budget and the optional rate window."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medallion_platform.devkit.demo.destinations.salesforce import (
    CONTACT,
    SalesforceEmulator,
    case_safe_id,
)
from medallion_platform.devkit.demo.http_emulator import RateLimit

TOKEN = "00DAcmeOutfitters!AQ4AQFakeSessionToken9876"
UPSERT = "/services/data/v62.0/composite/sobjects/Contact/Acme_Customer_Id__c"
COLLECTIONS = "/services/data/v62.0/composite/sobjects"


def contact(customer_id: str | None, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"attributes": {"type": "Contact"}}
    if customer_id is not None:
        record["Acme_Customer_Id__c"] = customer_id
    defaults = {
        "Email": f"{customer_id}@example.com",
        "LastName": "Lovelace",
        "LTV__c": 12.5,
        "Churn_Risk__c": 0.42,
        "Segment__c": "loyal",
        "Last_Order_Date__c": "2026-11-01",
    }
    return record | defaults | fields


def _client(api: SalesforceEmulator, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=api.base_url, headers=headers, trust_env=False, timeout=10)


@pytest.fixture
def api() -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(token=TOKEN) as server:
        yield server


@pytest.fixture
def client(api: SalesforceEmulator) -> Iterator[httpx.Client]:
    with _client(api) as http:
        yield http


def upsert(client: httpx.Client, records: list[dict[str, Any]], **body: Any) -> httpx.Response:
    return client.patch(UPSERT, json={"allOrNone": False, "records": records, **body})


# -- upsert ----------------------------------------------------------------------------------


def test_upsert_creates_then_updates_by_external_id(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    first = upsert(client, [contact("cus_000001"), contact("cus_000002", LTV__c="99.5")])
    assert first.status_code == 200
    created = first.json()
    assert [result["created"] for result in created] == [True, True]
    assert all(result["success"] and result["errors"] == [] for result in created)
    ids = [result["id"] for result in created]
    assert all(re.fullmatch(r"003[0-9A-Za-z]{15}", record_id) for record_id in ids)
    assert all(case_safe_id(record_id[:15]) == record_id for record_id in ids)

    # External ids match case-insensitively, as a default Text External ID does.
    second = upsert(client, [contact("CUS_000001", LastName="Byron"), contact("cus_000002")])
    assert [(r["id"], r["created"]) for r in second.json()] == [(ids[0], False), (ids[1], False)]
    records = api.records()
    assert set(records) == {"cus_000001", "cus_000002"}
    assert records["cus_000001"]["LastName"] == "Byron"
    assert records["cus_000001"]["Id"] == ids[0]
    assert records["cus_000002"]["LTV__c"] == 12.5
    assert records["cus_000002"]["Last_Order_Date__c"] == "2026-11-01"
    assert records["cus_000002"]["CreatedDate"].endswith("+0000")


def test_numbers_in_strings_are_read_into_doubles(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    upsert(client, [contact("cus_1", LTV__c="99.50", Churn_Risk__c=1)]).raise_for_status()
    record = api.records()["cus_1"]
    assert record["LTV__c"] == 99.5 and record["Churn_Risk__c"] == 1.0


def test_an_update_may_omit_the_required_last_name(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    upsert(client, [contact("cus_1")]).raise_for_status()
    update = {"attributes": {"type": "Contact"}, "Acme_Customer_Id__c": "cus_1", "LTV__c": 1}
    result = upsert(client, [update]).json()
    assert result[0]["success"] is True and result[0]["created"] is False
    assert api.records()["cus_1"]["LastName"] == "Lovelace"


def test_more_than_200_records_is_refused_whole(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    response = upsert(client, [contact(f"cus_{n}") for n in range(201)])
    assert response.status_code == 400
    [error] = response.json()
    assert error["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert "cannot submit more than 200 records" in error["message"]
    assert api.records() == {}
    assert upsert(client, [contact(f"cus_{n}") for n in range(200)]).status_code == 200
    assert len(api.records()) == 200


def test_per_record_errors_leave_the_rest_committed(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    records = [
        contact("cus_ok"),
        contact("cus_bad_email", Email="not-an-email"),
        contact("cus_no_name", LastName=None),
        contact(None),
        contact("cus_dup"),
        contact("CUS_DUP"),
        contact("cus_long", LastName="x" * 81),
        contact("cus_ok_2", Email=None),
    ]
    results = upsert(client, records).json()
    assert [result["success"] for result in results] == [
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert results[1]["errors"] == [
        {
            "statusCode": "INVALID_EMAIL_ADDRESS",
            "message": "Email: invalid email address: not-an-email",
            "fields": ["Email"],
        }
    ]
    assert results[2]["errors"] == [
        {
            "statusCode": "REQUIRED_FIELD_MISSING",
            "message": "Required fields are missing: [LastName]",
            "fields": ["LastName"],
        }
    ]
    assert results[3]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    assert results[3]["errors"][0]["message"] == "Acme_Customer_Id__c not specified"
    assert results[4]["errors"][0] == {
        "statusCode": "DUPLICATE_VALUE",
        "message": "Duplicate external id specified: cus_dup",
        "fields": ["Acme_Customer_Id__c"],
    }
    assert results[5]["errors"][0]["statusCode"] == "DUPLICATE_VALUE"
    assert results[6]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert all("id" not in result for result in results if not result["success"])
    assert set(api.records()) == {"cus_ok", "cus_ok_2"}


def test_all_or_none_rolls_back_every_record(api: SalesforceEmulator, client: httpx.Client) -> None:
    upsert(client, [contact("cus_existing", LastName="Before")]).raise_for_status()
    before = api.records()
    records = [
        contact("cus_new"),
        contact("cus_existing", LastName="After"),
        contact("cus_bad", Email="nope"),
    ]
    response = upsert(client, records, allOrNone=True)
    assert response.status_code == 200
    results = response.json()
    assert [result["success"] for result in results] == [False, False, False]
    for result in results[:2]:
        assert result["errors"] == [
            {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the "
                "request was using AllOrNone header",
                "fields": [],
            }
        ]
    assert results[2]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert api.records() == before

    ok = upsert(client, [contact("cus_new"), contact("cus_existing")], allOrNone=True)
    assert [result["created"] for result in ok.json()] == [True, False]


def test_a_value_the_field_cannot_hold_fails_the_whole_call(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    for bad in (contact("cus_2", LTV__c="lots"), contact("cus_2", Last_Order_Date__c="2026-13-01")):
        response = upsert(client, [contact("cus_1"), bad])
        assert response.status_code == 400
        [error] = response.json()
        assert error["errorCode"] == "JSON_PARSER_ERROR"
        assert error["message"].startswith("Cannot deserialize instance of")
    assert api.records() == {}


def test_record_mode_reports_type_errors_per_record() -> None:
    with (
        SalesforceEmulator(token=TOKEN, type_errors="record") as api,
        _client(api) as client,
    ):
        results = upsert(
            client,
            [
                contact("cus_1"),
                contact("cus_2", LTV__c="lots"),
                contact("cus_3", Churn_Risk__c=True),
                contact("cus_4", Last_Order_Date__c="01/11/2026"),
            ],
        ).json()
        assert [result["success"] for result in results] == [True, False, False, False]
        assert results[1]["errors"] == [
            {
                "statusCode": "INVALID_TYPE_ON_FIELD_IN_RECORD",
                "message": "LTV: value not of required type: lots",
                "fields": ["LTV__c"],
            }
        ]
        assert results[3]["errors"][0]["fields"] == ["Last_Order_Date__c"]
        assert set(api.records()) == {"cus_1"}


def test_malformed_requests_are_refused_whole(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    unknown = upsert(client, [contact("cus_1", Shoe_Size__c=44)])
    assert unknown.status_code == 400
    assert unknown.json() == [
        {
            "message": "No such column 'Shoe_Size__c' on sobject of type Contact",
            "errorCode": "INVALID_FIELD",
        }
    ]
    untyped = upsert(client, [{"Acme_Customer_Id__c": "cus_1", "LastName": "L"}])
    assert untyped.status_code == 400
    assert untyped.json()[0] == {
        "message": "Must send a concrete entity type.",
        "errorCode": "INVALID_TYPE",
    }
    not_json = client.patch(UPSERT, content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    no_records = client.patch(UPSERT, json={"allOrNone": False})
    assert no_records.status_code == 400
    assert api.records() == {}


def test_paths_are_checked_like_salesforce(client: httpx.Client) -> None:
    body = {"records": [contact("cus_1")]}
    other_version = "/services/data/v58.0/composite/sobjects/Contact/Acme_Customer_Id__c"
    assert client.patch(other_version, json=body).status_code == 200
    too_old = "/services/data/v45.0/composite/sobjects/Contact/Acme_Customer_Id__c"
    assert client.patch(too_old, json=body).status_code == 404
    unknown_object = client.patch(f"{COLLECTIONS}/Spaceship__c/Acme_Customer_Id__c", json=body)
    assert unknown_object.status_code == 404
    assert unknown_object.json()[0]["errorCode"] == "NOT_FOUND"
    not_external = client.patch(f"{COLLECTIONS}/Contact/LastName", json=body)
    assert not_external.status_code == 404
    assert not_external.json()[0]["message"] == (
        "Provided external ID field does not exist or is not accessible: LastName"
    )
    wrong_method = client.post(UPSERT, json=body)
    assert wrong_method.status_code == 405
    assert wrong_method.json()[0]["errorCode"] == "METHOD_NOT_ALLOWED"


# -- reads and delete ------------------------------------------------------------------------


def test_read_by_external_id_and_by_id(client: httpx.Client) -> None:
    record_id = upsert(client, [contact("cus_1")]).json()[0]["id"]
    by_external = client.get("/services/data/v62.0/sobjects/Contact/Acme_Customer_Id__c/CUS_1")
    assert by_external.status_code == 200
    body = by_external.json()
    assert body["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v62.0/sobjects/Contact/{record_id}",
    }
    assert body["Id"] == record_id and body["Acme_Customer_Id__c"] == "cus_1"
    assert body["FirstName"] is None and body["LTV__c"] == 12.5
    assert client.get(f"/services/data/v62.0/sobjects/Contact/{record_id[:15]}").json() == body
    missing = client.get("/services/data/v62.0/sobjects/Contact/Acme_Customer_Id__c/cus_404")
    assert missing.status_code == 404
    assert missing.json() == [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
    ]


def test_delete_by_ids_with_per_id_results(api: SalesforceEmulator, client: httpx.Client) -> None:
    ids = [r["id"] for r in upsert(client, [contact("cus_1"), contact("cus_2")]).json()]
    never = case_safe_id("003Dn0000zzzzzz")
    response = client.delete(
        COLLECTIONS, params={"ids": f"{ids[0]},{never},003bogus,{ids[0]}", "allOrNone": "false"}
    )
    assert response.status_code == 200
    results = response.json()
    assert results[0] == {"id": ids[0], "success": True, "errors": []}
    assert results[1]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert results[2]["errors"] == [
        {"statusCode": "MALFORMED_ID", "message": "malformed id 003bogus", "fields": []}
    ]
    assert results[3]["errors"][0] == {
        "statusCode": "ENTITY_IS_DELETED",
        "message": "entity is deleted",
        "fields": [],
    }
    assert set(api.records()) == {"cus_2"}
    assert api.recycle_bin()[ids[0]]["IsDeleted"] is True

    # A deleted record is not matched by a later upsert: the external id gets a new record.
    again = upsert(client, [contact("cus_1")]).json()[0]
    assert again["created"] is True and again["id"] != ids[0]


def test_delete_all_or_none_and_limits(api: SalesforceEmulator, client: httpx.Client) -> None:
    record_id = upsert(client, [contact("cus_1")]).json()[0]["id"]
    never = case_safe_id("003Dn0000zzzzzz")
    rolled = client.delete(COLLECTIONS, params={"ids": f"{record_id},{never}", "allOrNone": "true"})
    assert [r["errors"][0]["statusCode"] for r in rolled.json()] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "INVALID_CROSS_REFERENCE_KEY",
    ]
    assert set(api.records()) == {"cus_1"} and api.recycle_bin() == {}
    too_many = client.delete(COLLECTIONS, params={"ids": ",".join([record_id] * 201)})
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert client.delete(COLLECTIONS).status_code == 400


# -- session, limits and faults ----------------------------------------------------------------


def test_a_wrong_or_expired_session_is_401_and_stores_nothing(api: SalesforceEmulator) -> None:
    session_error = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    for token in (None, "00DWrongToken"):
        with _client(api, token) as http:
            response = upsert(http, [contact("cus_1")])
        assert response.status_code == 401 and response.json() == session_error
        assert TOKEN not in response.text
    assert api.records() == {} and api.api_usage == 0
    with _client(api) as http:
        assert upsert(http, [contact("cus_1")]).status_code == 200
        api.expire_token()
        assert upsert(http, [contact("cus_2")]).status_code == 401
        api.set_token("00DRefreshed")
    with _client(api, "00DRefreshed") as http:
        assert upsert(http, [contact("cus_2")]).status_code == 200
    assert set(api.records()) == {"cus_1", "cus_2"}


def test_the_org_request_budget_is_enforced(api: SalesforceEmulator, client: httpx.Client) -> None:
    api.set_api_budget(2)
    statuses = [upsert(client, [contact(f"cus_{n}")]).status_code for n in range(3)]
    assert statuses == [200, 200, 403]
    last = upsert(client, [contact("cus_9")])
    assert last.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert last.headers["Sforce-Limit-Info"] == "api-usage=2/2"
    assert set(api.records()) == {"cus_0", "cus_1"} and api.api_usage == 2
    api.set_api_budget(10)
    limits = client.get("/services/data/v62.0/limits").json()
    assert limits["DailyApiRequests"] == {"Max": 10, "Remaining": 7}
    assert api.stats().limited == 2


def test_the_rate_window_answers_request_limit_exceeded() -> None:
    limit = RateLimit(max_requests=3, window_seconds=0.4)
    with SalesforceEmulator(token=TOKEN, rate_limit=limit) as api, _client(api) as client:
        statuses = [upsert(client, [contact(f"cus_{n}")]).status_code for n in range(4)]
        assert statuses == [200, 200, 200, 403]
        time.sleep(0.45)
        assert upsert(client, [contact("cus_9")]).status_code == 200
        stats = api.stats()
    assert stats.limited == 1 and stats.peak_in_window == 4
    assert set(api.records()) == {"cus_0", "cus_1", "cus_2", "cus_9"}


def test_the_concurrency_limit_refuses_a_second_request_in_flight() -> None:
    with SalesforceEmulator(token=TOKEN, max_concurrent_requests=1) as api:
        api.slow_next(seconds=0.5)
        statuses: list[int] = []

        def slow() -> None:
            with _client(api) as http:
                statuses.append(upsert(http, [contact("cus_slow")]).status_code)

        thread = threading.Thread(target=slow)
        thread.start()
        deadline = time.monotonic() + 5
        while api.stats().peak_in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the slow request is being served
        with _client(api) as http:
            refused = upsert(http, [contact("cus_fast")])
        thread.join()
    assert refused.status_code == 403
    assert refused.json()[0]["message"] == "ConcurrentPerOrgLongTxn Limit exceeded."
    assert statuses == [200] and set(api.records()) == {"cus_slow"}
    assert api.stats().peak_in_flight == 2


def test_injected_errors_are_not_processed(api: SalesforceEmulator, client: httpx.Client) -> None:
    api.fail_next(status=503)
    api.fail_next(status=502)
    unavailable = upsert(client, [contact("cus_1")])
    assert unavailable.status_code == 503
    assert unavailable.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    bad_gateway = upsert(client, [contact("cus_1")])
    assert bad_gateway.status_code == 502 and "text/html" in bad_gateway.headers["Content-Type"]
    assert api.records() == {}
    assert upsert(client, [contact("cus_1")]).json()[0]["created"] is True


def test_a_lost_response_after_commit_is_safe_to_retry(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    api.drop_next(after_processing=True)
    with pytest.raises(httpx.RemoteProtocolError):
        upsert(client, [contact("cus_1")])
    assert set(api.records()) == {"cus_1"}
    retry = upsert(client, [contact("cus_1")]).json()[0]
    assert retry["created"] is False and len(api.records()) == 1
    api.drop_next()
    with pytest.raises(httpx.RemoteProtocolError):
        upsert(client, [contact("cus_2")])
    assert set(api.records()) == {"cus_1"}
    assert [record.status for record in api.requests] == [0, 200, 0]
    assert [record.fault for record in api.requests] == ["drop_after", None, "drop"]


def test_requests_are_counted_by_endpoint(api: SalesforceEmulator, client: httpx.Client) -> None:
    upsert(client, [contact("cus_1")])
    client.get("/services/data/v62.0/sobjects/Contact/Acme_Customer_Id__c/cus_1")
    client.get("/nowhere")
    stats = api.stats()
    assert stats.by_endpoint == {
        "PATCH /composite/sobjects/{sobject}/{externalIdField}": 1,
        "GET /sobjects/{sobject}/{externalIdField}/{value}": 1,
        "unmatched": 1,
    }
    assert stats.by_status == {200: 2, 404: 1} and stats.requests == 3


def test_constructor_guards() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SalesforceEmulator(token=TOKEN, host="0.0.0.0")
    with pytest.raises(ValueError):
        SalesforceEmulator(token="")
    with pytest.raises(ValueError):
        SalesforceEmulator(token=TOKEN, type_errors="never")  # type: ignore[arg-type]


# -- issue 15: SOQL, 300, duplicate rules, OAuth -------------------------------------------------

QUERY = "/services/data/v62.0/query"


def test_query_in_lists_pages_of_2000_and_next_records_url(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    for start in range(0, 2400, 200):
        upsert(client, [contact(f"cus_{n:06d}") for n in range(start, start + 200)])
    wanted = ",".join(f"'CUS_{n:06d}'" for n in range(0, 2500, 1))  # case-insensitive match
    soql = f"SELECT Id, Acme_Customer_Id__c FROM Contact WHERE Acme_Customer_Id__c IN ({wanted})"
    first = client.post(QUERY, data={"q": soql})  # POST is not how SOQL is sent
    assert first.status_code == 405
    page = client.get(QUERY, params={"q": soql}).json()
    assert page["totalSize"] == 2400 and page["done"] is False and len(page["records"]) == 2000
    assert page["records"][0]["attributes"]["type"] == "Contact"
    assert set(page["records"][0]) == {"attributes", "Id", "Acme_Customer_Id__c"}
    rest = client.get(page["nextRecordsUrl"]).json()
    assert rest["done"] is True and len(rest["records"]) == 400 and "nextRecordsUrl" not in rest
    seen = {r["Acme_Customer_Id__c"] for r in page["records"] + rest["records"]}
    assert len(seen) == 2400
    quoted = client.get(QUERY, params={"q": "SELECT Id FROM Contact WHERE LastName = 'O\\'Hara'"})
    assert quoted.status_code == 200 and quoted.json()["totalSize"] == 0


def test_a_malformed_or_unknown_query_is_400(client: httpx.Client) -> None:
    bad = client.get(QUERY, params={"q": "SELEC Id FROM Contact"})
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "MALFORMED_QUERY"
    field = client.get(QUERY, params={"q": "SELECT Id, Shoe__c FROM Contact"})
    assert field.status_code == 400 and field.json()[0]["errorCode"] == "INVALID_FIELD"
    sobject = client.get(QUERY, params={"q": "SELECT Id FROM Lead"})
    assert sobject.json()[0]["errorCode"] == "INVALID_TYPE"


def test_a_non_unique_external_id_answers_300_and_duplicate_external_id() -> None:
    schema = CONTACT.model_copy(
        update={
            "fields": tuple(
                f.model_copy(update={"unique": False}) if f.external_id else f
                for f in CONTACT.fields
            )
        }
    )
    with SalesforceEmulator(token=TOKEN, sobjects=(schema,)) as api, _client(api) as client:
        ids = [api.insert("Contact", {"Acme_Customer_Id__c": "cus_1", "LastName": n}) for n in "AB"]
        one = client.get("/services/data/v62.0/sobjects/Contact/Acme_Customer_Id__c/cus_1")
        assert one.status_code == 300
        assert one.json() == [f"/services/data/v62.0/sobjects/Contact/{i}" for i in ids]
        [result] = upsert(client, [contact("cus_1")]).json()
        assert result["success"] is False
        assert result["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"
        assert result["errors"][0]["message"] == (
            "Acme Customer Id: more than one record found for external id field: "
            f"[{ids[0]}, {ids[1]}]"
        )


def test_the_duplicate_rule_alerts_on_a_matching_email_unless_allow_save(
    api: SalesforceEmulator, client: httpx.Client
) -> None:
    [first] = upsert(client, [contact("cus_1", Email="same@example.com")]).json()
    [dup] = upsert(client, [contact("cus_2", Email="Same@Example.com")]).json()
    error = dup["errors"][0]
    assert dup["success"] is False and error["statusCode"] == "DUPLICATES_DETECTED"
    assert error["message"] == "Use one of these records?"
    match = error["duplicateResult"]["matchResults"][0]
    assert error["duplicateResult"]["allowSave"] is True
    assert [r["record"]["Id"] for r in match["matchRecords"]] == [first["id"]]
    header = {"Sforce-Duplicate-Rule-Header": "allowSave=true; includeRecordDetails=false"}
    saved = client.patch(
        UPSERT,
        json={"allOrNone": False, "records": [contact("cus_2", Email="same@example.com")]},
        headers=header,
    ).json()
    assert saved[0]["success"] is True and len(api.records()) == 2


def test_the_oauth_token_endpoint_refreshes_the_session() -> None:
    oauth = {"oauth_client_id": "cid", "oauth_client_secret": "csecret"}
    with (
        SalesforceEmulator(token=TOKEN, oauth_refresh_token="rtoken", **oauth) as api,
        httpx.Client(base_url=api.base_url, trust_env=False) as http,
    ):
        form = {"grant_type": "refresh_token", "client_id": "cid", "client_secret": "csecret"}
        refused = http.post("/services/oauth2/token", data=form | {"refresh_token": "stale"})
        assert refused.status_code == 400
        assert refused.json() == {
            "error": "invalid_grant",
            "error_description": "expired access/refresh token",
        }
        granted = http.post("/services/oauth2/token", data=form | {"refresh_token": "rtoken"})
        body = granted.json()
        assert granted.status_code == 200 and body["token_type"] == "Bearer"
        assert body["instance_url"] == api.base_url
        fresh = {"Authorization": f"Bearer {body['access_token']}"}
        assert http.get("/services/data/v62.0/limits", headers=fresh).status_code == 200
        stale = http.get(
            "/services/data/v62.0/limits", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert stale.status_code == 401 and stale.json()[0]["errorCode"] == "INVALID_SESSION_ID"
        credentials = http.post(
            "/services/oauth2/token", data=form | {"grant_type": "client_credentials"}
        )
        assert credentials.status_code == 200
