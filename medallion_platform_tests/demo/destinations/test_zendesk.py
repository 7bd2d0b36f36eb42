"""The Zendesk emulator over real HTTP: bulk upserts answered with a job to poll, per-user
results, bulk delete, API-token auth and the per-minute limit with Retry-After."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medallion_platform.devkit.demo.destinations.zendesk import DEFAULT_EMAIL, ZendeskEmulator
from medallion_platform.devkit.demo.http_emulator import RateLimit

TOKEN = "ZdAcmeOutfittersApiToken0000000000009876"
UPSERT = "/api/v2/users/create_or_update_many.json"


def user(external_id: str | None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": f"{external_id}@example.com",
        "name": "Ada Lovelace",
        "tags": ["VIP"],
        "user_fields": {"ltv": 12.5, "churn_risk": 0.42},
    }
    if external_id is not None:
        body["external_id"] = external_id
    return body | fields


def basic(email: str = DEFAULT_EMAIL, token: str = TOKEN) -> str:
    return "Basic " + base64.b64encode(f"{email}/token:{token}".encode()).decode()


def _client(api: ZendeskEmulator, authorization: str | None = None) -> httpx.Client:
    headers = {"Authorization": authorization or basic()}
    return httpx.Client(base_url=api.base_url, headers=headers, trust_env=False, timeout=10)


@pytest.fixture
def api() -> Iterator[ZendeskEmulator]:
    with ZendeskEmulator(token=TOKEN, job_delay=0.02) as server:
        yield server


@pytest.fixture
def client(api: ZendeskEmulator) -> Iterator[httpx.Client]:
    with _client(api) as http:
        yield http


def poll(client: httpx.Client, url: str, timeout: float = 5.0) -> dict[str, Any]:
    """What a sync does: poll the job's url until it is completed or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(url).raise_for_status().json()["job_status"]
        if status["status"] in ("completed", "failed"):
            return status
        time.sleep(0.02)
    raise AssertionError("the job did not finish")


def upsert(client: httpx.Client, users: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post(UPSERT, json={"users": users})
    assert response.status_code == 200, response.text
    return poll(client, response.json()["job_status"]["url"])


def test_create_or_update_many_returns_a_job_to_poll(
    api: ZendeskEmulator, client: httpx.Client
) -> None:
    response = client.post(UPSERT, json={"users": [user("cus_000001"), user("cus_000002")]})
    assert response.status_code == 200
    job = response.json()["job_status"]
    assert job["status"] == "queued" and job["total"] == 2 and job["progress"] == 0
    assert job["results"] is None and len(job["id"]) == 32
    assert job["url"] == f"{api.base_url}/api/v2/job_statuses/{job['id']}.json"
    done = poll(client, f"/api/v2/job_statuses/{job['id']}")  # the .json suffix is optional
    assert done["status"] == "completed" and done["progress"] == 2
    assert done["message"].startswith("Completed at ")
    first, second = done["results"]  # in input order, without an index (as Zendesk answers)
    assert first == {
        "id": first["id"],
        "action": "create",
        "status": "Created",
        "success": True,
        "external_id": "cus_000001",
        "email": "cus_000001@example.com",
    }
    assert second["status"] == "Created" and second["external_id"] == "cus_000002"

    again = upsert(client, [user("cus_000001", name="Ada King", user_fields={"ltv": "99.5"})])
    [updated] = again["results"]
    assert (updated["action"], updated["status"], updated["id"]) == (
        "update",
        "Updated",
        first["id"],
    )
    records = api.records()
    assert set(records) == {"cus_000001", "cus_000002"}
    ada = records["cus_000001"]
    assert ada["name"] == "Ada King" and ada["tags"] == ["vip"]
    # user_fields merge: the update set ltv and left churn_risk as it was.
    assert ada["user_fields"] == {
        "ltv": 99.5,
        "churn_risk": 0.42,
        "segment": None,
        "last_order_date": None,
    }
    assert ada["role"] == "end-user" and ada["active"] is True


def test_users_are_matched_by_email_when_the_external_id_is_new(
    api: ZendeskEmulator, client: httpx.Client
) -> None:
    created = upsert(client, [user(None, email="ada@example.com")])["results"][0]
    linked = upsert(client, [user("cus_1", email="ADA@example.com")])["results"][0]
    assert linked["status"] == "Updated" and linked["id"] == created["id"]
    assert set(api.records()) == {"cus_1"}
    upsert(client, [user("cus_2")])
    clash = upsert(client, [user("cus_2", email="ada@example.com")])["results"][0]
    assert clash["status"] == "Failed"
    assert clash["details"] == "Email: ada@example.com is already being used by another user"


def test_invalid_users_fail_and_the_rest_are_written(
    api: ZendeskEmulator, client: httpx.Client
) -> None:
    job = upsert(
        client,
        [
            user("cus_ok"),
            user("cus_bad_email", email="nope@"),
            user("cus_no_name", name=None),
            user("cus_unknown_field", user_fields={"shoe_size": 44}),
            user("cus_wrong_type", user_fields={"ltv": "lots", "last_order_date": "01/11/2026"}),
            user("cus_ok_2"),
        ],
    )
    results = job["results"]
    assert [result["status"] for result in results] == [
        "Created",
        "Failed",
        "Failed",
        "Failed",
        "Failed",
        "Created",
    ]
    assert results[1] == {
        "status": "Failed",
        "error": "UserUpdateError",
        "details": "Email: nope@ is not properly formatted",
        "external_id": "cus_bad_email",
        "email": "nope@",
    }
    assert results[2]["details"] == "Name: is too short (minimum one character)"
    assert "shoe_size" in results[3]["details"]
    assert "ltv" in results[4]["details"] and "last_order_date" in results[4]["details"]
    assert set(api.records()) == {"cus_ok", "cus_ok_2"}


def test_more_than_100_users_is_refused(api: ZendeskEmulator, client: httpx.Client) -> None:
    response = client.post(UPSERT, json={"users": [user(f"cus_{n}") for n in range(101)]})
    assert response.status_code == 400
    assert response.json()["error"] == "TooManyValues"
    assert client.post(UPSERT, json={"users": []}).status_code == 400
    assert client.post(UPSERT, content=b"nope").status_code == 400
    assert api.job_statuses() == [] and api.records() == {}


def test_a_job_is_queued_then_working_then_completed() -> None:
    with (
        ZendeskEmulator(token=TOKEN, job_delay=0.15, job_work_seconds=0.15) as api,
        _client(api) as client,
    ):
        url = client.post(UPSERT, json={"users": [user("cus_1")]}).json()["job_status"]["url"]
        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status = client.get(url).json()["job_status"]
            if not seen or seen[-1] != status["status"]:
                seen.append(status["status"])
            if status["status"] == "completed":
                break
            time.sleep(0.02)
        assert seen == ["queued", "working", "completed"]
        assert set(api.records()) == {"cus_1"}


def test_a_failed_job_writes_nothing(api: ZendeskEmulator, client: httpx.Client) -> None:
    api.fail_next_jobs(message="Job failed: backend timeout")
    failed = upsert(client, [user("cus_1")])
    assert failed["status"] == "failed" and failed["results"] is None
    assert failed["message"] == "Job failed: backend timeout"
    assert api.records() == {}
    assert upsert(client, [user("cus_1")])["status"] == "completed"


def test_too_many_active_jobs_is_429() -> None:
    with (
        ZendeskEmulator(token=TOKEN, job_delay=0.3, max_active_jobs=1) as api,
        _client(api) as client,
    ):
        assert client.post(UPSERT, json={"users": [user("cus_1")]}).status_code == 200
        refused = client.post(UPSERT, json={"users": [user("cus_2")]})
        assert refused.status_code == 429 and refused.json()["error"] == "TooManyJobs"
        api.wait_for_jobs()
        assert set(api.records()) == {"cus_1"}


def test_unknown_job_is_404(client: httpx.Client) -> None:
    response = client.get("/api/v2/job_statuses/0123456789abcdef.json")
    assert response.status_code == 404
    assert response.json() == {"error": "RecordNotFound", "description": "Not found"}


def test_destroy_many_soft_deletes_by_external_id_or_id(
    api: ZendeskEmulator, client: httpx.Client
) -> None:
    results = upsert(client, [user("cus_1"), user("cus_2"), user("cus_3")])["results"]
    ids = [result["id"] for result in results]
    response = client.delete(
        "/api/v2/users/destroy_many.json", params={"external_ids": "cus_1,cus_404"}
    )
    assert response.status_code == 200
    done = poll(client, response.json()["job_status"]["url"])
    assert done["results"][0] == {
        "id": ids[0],
        "action": "delete",
        "status": "Deleted",
        "success": True,
        "external_id": "cus_1",
    }
    assert done["results"][1]["status"] == "Failed"
    by_id = client.delete("/api/v2/users/destroy_many", params={"ids": f"{ids[1]}"})
    assert poll(client, by_id.json()["job_status"]["url"])["results"][0]["status"] == "Deleted"
    assert set(api.records()) == {"cus_3"}
    deleted = api.deleted()
    assert {user["external_id"] for user in deleted.values()} == {"cus_1", "cus_2"}
    assert all(user["active"] is False for user in deleted.values())
    shown = client.get(f"/api/v2/users/{ids[0]}.json").json()["user"]
    assert shown["active"] is False
    # A deleted user no longer matches: the same external_id makes a new user.
    again = upsert(client, [user("cus_1")])["results"][0]
    assert again["status"] == "Created" and again["id"] != ids[0]
    too_many = client.delete(
        "/api/v2/users/destroy_many", params={"ids": ",".join(str(n) for n in range(101))}
    )
    assert too_many.status_code == 400
    assert client.delete("/api/v2/users/destroy_many").status_code == 400


def test_show_many_finds_users(api: ZendeskEmulator, client: httpx.Client) -> None:
    ids = [r["id"] for r in upsert(client, [user("cus_1"), user("cus_2")])["results"]]
    shown = client.get("/api/v2/users/show_many.json", params={"external_ids": "cus_2,cus_9"})
    [found] = shown.json()["users"]
    assert found["id"] == ids[1] and found["url"].endswith(f"/api/v2/users/{ids[1]}.json")
    by_ids = client.get("/api/v2/users/show_many", params={"ids": f"{ids[0]},{ids[1]}"}).json()
    assert [u["external_id"] for u in by_ids["users"]] == ["cus_1", "cus_2"]


def test_auth_basic_token_or_bearer_and_401(api: ZendeskEmulator) -> None:
    with _client(api, f"Bearer {TOKEN}") as bearer:
        assert upsert(bearer, [user("cus_1")])["status"] == "completed"
    for authorization in (
        basic(token="wrong"),
        basic(email="someone@else.test"),
        "Bearer wrong",
        "Basic !!!",
    ):
        with _client(api, authorization) as http:
            response = http.post(UPSERT, json={"users": [user("cus_2")]})
        assert response.status_code == 401
        assert response.json() == {"error": "Couldn't authenticate you"}
        assert TOKEN not in response.text
    api.expire_token()
    with _client(api) as http:
        assert http.post(UPSERT, json={"users": [user("cus_3")]}).status_code == 401
    assert set(api.records()) == {"cus_1"} and len(api.job_statuses()) == 1


def test_the_rate_limit_answers_429_with_retry_after() -> None:
    limit = RateLimit(max_requests=3, window_seconds=1.5)
    with (
        ZendeskEmulator(token=TOKEN, rate_limit=limit, job_delay=0.0) as api,
        _client(api) as client,
    ):
        responses = [client.post(UPSERT, json={"users": [user(f"c{n}")]}) for n in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert [r.headers["X-Rate-Limit-Remaining"] for r in responses[:3]] == ["2", "1", "0"]
        assert responses[0].headers["X-Rate-Limit"] == "3"
        limited = responses[-1]
        assert limited.headers["Content-Type"].startswith("text/plain")
        assert limited.text == "Number of allowed API requests per minute exceeded"
        assert limited.headers["Retry-After"] == "2"  # 1.5 s, rounded up to whole seconds
        api.wait_for_jobs()
        assert len(api.records()) == 3
        stats = api.stats()
    assert stats.limited == 1 and stats.peak_in_window == 4


def test_injected_faults_and_counters(api: ZendeskEmulator, client: httpx.Client) -> None:
    api.fail_next(status=429, retry_after=3)
    api.fail_next(status=503)
    limited = client.post(UPSERT, json={"users": [user("cus_1")]})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert client.post(UPSERT, json={"users": [user("cus_1")]}).status_code == 503
    upsert(client, [user("cus_1")])
    stats = api.stats()
    assert stats.by_endpoint["POST /api/v2/users/create_or_update_many"] == 3
    assert stats.by_endpoint["GET /api/v2/job_statuses/{id}"] >= 1
    assert stats.by_status[429] == 1 and stats.by_status[503] == 1


def test_result_index_bulk_import_and_user_tagging_are_switchable() -> None:
    """``result_index`` adds the index some clients expect; a fresh account answers bulk imports
    with 403 until Zendesk enables them, and ignores user tags while tagging is off."""
    settings = {"result_index": True, "user_tagging": False}
    with ZendeskEmulator(token=TOKEN, **settings) as api, _client(api) as client:
        [result] = upsert(client, [user("cus_1")])["results"]
        assert result["index"] == 0 and result["status"] == "Created"
        assert api.records()["cus_1"]["tags"] == []  # tags silently not applied
    with ZendeskEmulator(token=TOKEN, bulk_import=False) as api, _client(api) as client:
        refused = client.post(UPSERT, json={"users": [user("cus_1")]})
        assert refused.status_code == 403
        assert refused.json()["error"] == "Forbidden"
        assert "account owner" in refused.json()["description"]
        assert api.records() == {} and api.job_statuses() == []


def test_an_agent_added_tag_is_replaced_by_a_tags_list(
    api: ZendeskEmulator, client: httpx.Client
) -> None:
    upsert(client, [user("cus_1")])
    api.tag_user("cus_1", "escalated")
    assert api.records()["cus_1"]["tags"] == ["vip", "escalated"]
    upsert(client, [user("cus_1", tags=["vip"])])
    assert api.records()["cus_1"]["tags"] == ["vip"]  # the agent's tag is gone, as in Zendesk
