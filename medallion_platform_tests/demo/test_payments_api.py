"""The payments emulator is what the REST connector is tested against, so its promises are
checked over real HTTP: Stripe's list semantics, GitHub-style Link pages, auth and each fault."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from medallion_platform.devkit.demo.payments_api import (
    DEFAULT_START,
    TOKEN_ENV,
    PaymentsApi,
    PaymentsData,
    generate_payments,
    generate_payouts,
    main,
    mask_key,
)

TOKEN = "sk_test_51AcmeOutfittersDemoKey9876"
MASKED = "sk_test_****9876"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def big() -> PaymentsData:
    return generate_payments(10_000)


@pytest.fixture(scope="module")
def small() -> PaymentsData:
    return generate_payments(300, seed=3)


def _client(api: PaymentsApi, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=api.base_url, headers=headers, trust_env=False, timeout=10)


@pytest.fixture
def api(small: PaymentsData) -> Iterator[PaymentsApi]:
    with PaymentsApi(small, token=TOKEN) as server:
        yield server


@pytest.fixture
def client(api: PaymentsApi) -> Iterator[httpx.Client]:
    with _client(api) as http:
        yield http


def _newest_first(objects: list[dict[str, Any]]) -> list[str]:
    return [o["id"] for o in sorted(objects, key=lambda o: (o["created"], o["id"]), reverse=True)]


# -- data ------------------------------------------------------------------------------------


def test_generation_is_deterministic_and_seeded() -> None:
    assert generate_payments(500, seed=11) == generate_payments(500, seed=11)
    assert generate_payments(500, seed=11) != generate_payments(500, seed=12)
    assert generate_payouts(9, seed=4) == generate_payouts(9, seed=4)


def test_charges_have_the_stripe_shape(big: PaymentsData) -> None:
    charges = big.charges
    span_end = DEFAULT_START + 30 * 86_400
    assert len(charges) == 10_000
    assert len({c["id"] for c in charges}) == 10_000
    assert all(re.fullmatch(r"ch_[0-9A-Za-z]{24}", c["id"]) for c in charges)
    created = [c["created"] for c in charges]
    assert created == sorted(created)
    assert created[0] >= DEFAULT_START and created[-1] < span_end
    currencies = Counter(c["currency"] for c in charges)
    assert set(currencies) == {"usd", "eur", "xxx"}
    assert currencies["xxx"] == 10 and 100 < currencies["eur"] < 600
    statuses = Counter(c["status"] for c in charges)
    assert set(statuses) == {"succeeded", "failed", "pending"}
    assert 0.93 < statuses["succeeded"] / 10_000 < 0.97
    first = charges[0]
    assert first["object"] == "charge" and first["captured"] is True
    assert first["livemode"] is False and 1_500 <= first["amount"] <= 45_000
    assert re.fullmatch(r"cus_\d{6}", first["customer"])
    assert re.fullmatch(r"ord_\d{7}", first["metadata"]["order_id"])
    card = first["payment_method_details"]["card"]
    assert card["brand"] in {"visa", "mastercard", "amex"} and card["last4"] == "4242"
    assert all(c["paid"] == (c["status"] == "succeeded") for c in charges)
    assert max(int(c["customer"][4:]) for c in charges) <= 2_500


def test_refunds_agree_with_their_charges(big: PaymentsData) -> None:
    by_id = {c["id"]: c for c in big.charges}
    refunded: dict[str, int] = defaultdict(int)
    for refund in big.refunds:
        charge = by_id[refund["charge"]]
        assert re.fullmatch(r"re_[0-9A-Za-z]{24}", refund["id"])
        assert charge["status"] == "succeeded"
        assert refund["currency"] == charge["currency"]
        assert refund["created"] >= charge["created"]
        assert 0 < refund["amount"] <= charge["amount"]
        assert refund["reason"] in {"requested_by_customer", "duplicate", "fraudulent"}
        refunded[charge["id"]] += refund["amount"]
    for charge in big.charges:
        assert charge["amount_refunded"] == refunded.get(charge["id"], 0)
        assert charge["refunded"] == (charge["amount_refunded"] == charge["amount"])
    full = sum(c["refunded"] for c in big.charges)
    partial = sum(0 < c["amount_refunded"] < c["amount"] for c in big.charges)
    assert full > 100 and partial > 100
    assert 0.06 < len(refunded) / 10_000 < 0.10
    assert len(big.payouts) == 200


# -- Stripe lists ----------------------------------------------------------------------------


def test_walking_every_page_sees_every_charge_once_newest_first(big: PaymentsData) -> None:
    with PaymentsApi(big, token=TOKEN) as api, _client(api) as http:
        began = time.monotonic()
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 100}
        pages = 0
        while True:
            body = http.get("/v1/charges", params=params).raise_for_status().json()
            pages += 1
            assert body["object"] == "list" and body["url"] == "/v1/charges"
            seen += [c["id"] for c in body["data"]]
            if not body["has_more"]:
                break
            params["starting_after"] = body["data"][-1]["id"]
        elapsed = time.monotonic() - began
    assert pages == 100
    assert seen == _newest_first(big.charges)
    assert len(set(seen)) == 10_000
    assert elapsed < 3


def test_refunds_are_listed_newest_first(small: PaymentsData, client: httpx.Client) -> None:
    body = client.get("/v1/refunds", params={"limit": 100}).json()
    assert [r["id"] for r in body["data"]] == _newest_first(small.refunds)[:100]
    assert body["data"][0]["object"] == "refund" and body["url"] == "/v1/refunds"


def test_default_limit_is_ten_and_limit_bounds_are_enforced(client: httpx.Client) -> None:
    assert len(client.get("/v1/charges").json()["data"]) == 10
    assert len(client.get("/v1/charges", params={"limit": 100}).json()["data"]) == 100
    for bad in ("0", "101", "-3", "ten", ""):
        response = client.get("/v1/charges", params={"limit": bad})
        assert response.status_code == 400, bad
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and "limit" in error["message"]


def test_max_page_size_is_configurable(small: PaymentsData) -> None:
    with PaymentsApi(small, token=TOKEN, max_page_size=5) as api, _client(api) as http:
        assert len(http.get("/v1/charges").json()["data"]) == 5
        assert http.get("/v1/charges", params={"limit": 6}).status_code == 400


def test_unknown_cursor_and_unknown_parameter_are_refused(client: httpx.Client) -> None:
    response = client.get("/v1/charges", params={"starting_after": "ch_nope"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "No such charge: 'ch_nope'"
    response = client.get("/v1/refunds", params={"starting_after": "re_nope"})
    assert response.json()["error"]["message"] == "No such refund: 're_nope'"
    response = client.get("/v1/charges", params={"page": 2})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Received unknown parameter: page"


def test_ending_before_pages_backwards(small: PaymentsData, client: httpx.Client) -> None:
    order = _newest_first(small.charges)
    body = client.get("/v1/charges", params={"ending_before": order[25], "limit": 10}).json()
    assert [c["id"] for c in body["data"]] == order[15:25]
    assert body["has_more"] is True
    both = {"ending_before": order[25], "starting_after": order[5]}
    assert client.get("/v1/charges", params=both).status_code == 400


def test_created_filters_bound_the_window(small: PaymentsData, client: httpx.Client) -> None:
    created = sorted({c["created"] for c in small.charges})
    low, high = created[50], created[200]

    def ids(params: dict[str, Any]) -> set[str]:
        body = client.get("/v1/charges", params={"limit": 100, **params}).json()
        found = {c["id"] for c in body["data"]}
        while body["has_more"]:
            params = {**params, "starting_after": body["data"][-1]["id"]}
            body = client.get("/v1/charges", params={"limit": 100, **params}).json()
            found |= {c["id"] for c in body["data"]}
        return found

    def expected(keep: Any) -> set[str]:
        return {c["id"] for c in small.charges if keep(c["created"])}

    assert ids({"created[gte]": low}) == expected(lambda t: t >= low)
    assert ids({"created[gt]": low}) == expected(lambda t: t > low)
    assert ids({"created[lte]": high}) == expected(lambda t: t <= high)
    assert ids({"created[lt]": high}) == expected(lambda t: t < high)
    both = ids({"created[gte]": low, "created[lte]": high})
    assert both == expected(lambda t: low <= t <= high) and len(both) > 100
    # Brackets percent-encoded by hand, as some clients send them.
    raw = client.get(f"/v1/charges?limit=100&created%5Bgte%5D={created[-5]}").json()
    assert {c["id"] for c in raw["data"]} == expected(lambda t: t >= created[-5])
    assert client.get("/v1/charges", params={"created[gte]": "soon"}).status_code == 400
    assert ids({"created": low}) == expected(lambda t: t == low)


def test_retrieve_one_charge(small: PaymentsData, client: httpx.Client) -> None:
    charge = small.charges[7]
    assert client.get(f"/v1/charges/{charge['id']}").json() == charge
    assert client.get("/v1/charges/ch_missing").status_code == 404


def test_unknown_path_is_a_json_404(client: httpx.Client) -> None:
    response = client.get("/v1/customers")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Unrecognized request URL (GET: /v1/customers)."


# -- auth ------------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401_and_never_echoed(api: PaymentsApi) -> None:
    with _client(api, token=None) as anonymous:
        response = anonymous.get("/v1/charges")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    wrong = "sk_test_51WrongKeyFromAnotherAccount0042"
    with _client(api, token=wrong) as http:
        response = http.get("/v1/charges")
    assert response.status_code == 401
    message = response.json()["error"]["message"]
    assert message == "Invalid API Key provided: sk_test_****0042"
    assert wrong not in response.text and TOKEN not in response.text
    assert mask_key("short") == "****"


def test_revoked_token_is_refused_with_the_key_masked(api: PaymentsApi) -> None:
    with _client(api) as http:
        assert http.get("/v1/charges").status_code == 200
        api.revoke_token()
        response = http.get("/v1/charges")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == f"Invalid API Key provided: {MASKED}"
    assert TOKEN not in response.text


def test_revoke_fault_revokes_from_that_request_on(api: PaymentsApi, client: httpx.Client) -> None:
    api.faults.add("revoke", after=1)
    statuses = [client.get("/v1/charges").status_code for _ in range(4)]
    assert statuses == [200, 401, 401, 401]
    api.faults.clear()
    assert client.get("/v1/refunds").status_code == 401


# -- faults ----------------------------------------------------------------------------------


def test_429_carries_retry_after_as_given(api: PaymentsApi, client: httpx.Client) -> None:
    api.faults.add("429", retry_after=0.2)
    api.faults.add("429")
    first, second, third = (client.get("/v1/charges") for _ in range(3))
    assert first.status_code == 429 and first.headers["Retry-After"] == "0.2"
    assert first.json()["error"]["type"] == "rate_limit_error"
    assert first.json()["error"]["message"].startswith("Too many requests")
    assert second.status_code == 429 and second.headers["Retry-After"] == "1"
    assert third.status_code == 200


def test_server_errors_look_like_an_api_and_a_proxy(api: PaymentsApi, client: httpx.Client) -> None:
    for kind in ("500", "502", "503"):
        api.faults.add(kind)
    error, bad_gateway, unavailable = (client.get("/v1/charges") for _ in range(3))
    assert error.status_code == 500 and error.json()["error"]["type"] == "api_error"
    assert bad_gateway.status_code == 502 and "text/html" in bad_gateway.headers["Content-Type"]
    assert "502 Bad Gateway" in bad_gateway.text
    assert unavailable.status_code == 503 and "<html>" in unavailable.text
    assert client.get("/v1/charges").status_code == 200


def test_slow_responds_after_the_delay(api: PaymentsApi, client: httpx.Client) -> None:
    api.faults.add("slow", delay=0.3)
    began = time.monotonic()
    response = client.get("/v1/charges")
    assert time.monotonic() - began >= 0.3
    assert response.status_code == 200 and len(response.json()["data"]) == 10


def test_truncated_body_is_complete_but_not_json(api: PaymentsApi, client: httpx.Client) -> None:
    api.faults.add("truncated")
    response = client.get("/v1/charges")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content) > 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    assert client.get("/v1/charges").json()["object"] == "list"


def test_new_field_appears_from_that_request_on(api: PaymentsApi, client: httpx.Client) -> None:
    api.faults.add("new_field", path="/v1/charges", after=2)
    pages = [client.get("/v1/charges").json()["data"] for _ in range(4)]
    assert [all("risk_score" in c for c in page) for page in pages] == [False, False, True, True]
    assert all(isinstance(c["risk_score"], int) for c in pages[2])
    assert [c["risk_score"] for c in pages[2]] == [c["risk_score"] for c in pages[3]]
    refunds = client.get("/v1/refunds").json()["data"]
    assert not any("risk_score" in r for r in refunds)


def test_after_and_count_count_matching_requests_only(
    api: PaymentsApi, client: httpx.Client
) -> None:
    api.faults.add("500", path="/v1/charges", after=1, count=2)
    statuses = []
    for path in ("/v1/charges", "/v1/refunds", "/v1/charges", "/v1/charges", "/v1/charges"):
        statuses.append(client.get(path).status_code)
    assert statuses == [200, 200, 500, 500, 200]
    api.faults.add("503", count=5)
    assert client.get("/v1/payouts").status_code == 503
    api.faults.clear()
    assert len(api.faults) == 0
    assert client.get("/v1/payouts").status_code == 200
    with pytest.raises(ValueError):
        api.faults.add("418")  # type: ignore[arg-type]


# -- payouts ---------------------------------------------------------------------------------


def test_payouts_are_a_stripe_cursor_list_and_per_page_is_refused(
    small: PaymentsData, client: httpx.Client
) -> None:
    """As Stripe's: limit, starting_after, created filters; an unknown parameter is a 400."""
    refused = client.get("/v1/payouts?per_page=4")
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "type": "invalid_request_error",
        "message": "Received unknown parameter: per_page",
        "param": "per_page",
    }
    first = client.get("/v1/payouts?limit=4").json()
    assert first["object"] == "list" and first["has_more"] is True and len(first["data"]) == 4
    rest = client.get(f"/v1/payouts?limit=4&starting_after={first['data'][-1]['id']}").json()
    assert rest["has_more"] is False
    newest_first = [p["id"] for p in reversed(small.payouts)]
    assert [p["id"] for p in first["data"] + rest["data"]] == newest_first
    since = small.payouts[3]["created"]
    recent = client.get(f"/v1/payouts?created[gte]={since}").json()["data"]
    assert [p["id"] for p in recent] == newest_first[:3]


def test_a_refund_after_creation_changes_the_charge_and_is_listed_in_events(
    small: PaymentsData, api: PaymentsApi, client: httpx.Client
) -> None:
    charge = next(c for c in small.charges if c["status"] == "succeeded" and not c["refunded"])
    newest = client.get("/v1/events?limit=1").json()["data"][0]
    refund = api.refund_charge(charge["id"], charge["amount"], at=charge["created"] + 2 * 86_400)
    changed = client.get(f"/v1/charges/{charge['id']}").json()
    assert changed["refunded"] is True and changed["amount_refunded"] == charge["amount"]
    assert changed["created"] == charge["created"]  # a created filter never shows it again
    events = client.get(f"/v1/events?type=charge.*&created[gte]={newest['created']}").json()
    refunded = [e for e in events["data"] if e["type"] == "charge.refunded"]
    assert refunded[0]["data"]["object"] == changed  # newest first
    assert refunded[0]["created"] >= newest["created"]  # the log only grows forward
    refunds = client.get(f"/v1/refunds?limit=100&created[gte]={refund['created']}").json()["data"]
    assert refund["id"] in [r["id"] for r in refunds]
    assert all(e["type"].startswith("charge.") for e in events["data"])


def test_payouts_follow_link_headers_to_the_last_page_when_asked(small: PaymentsData) -> None:
    """The gentler GitHub-style payouts stay available, for the pager's tests."""
    with (
        PaymentsApi(small, token=TOKEN, payouts_pagination="link_header") as api,
        _client(api) as client,
    ):
        _walk_link_headers(small, client)


def _walk_link_headers(small: PaymentsData, client: httpx.Client) -> None:
    assert len(small.payouts) == 6
    url: str | None = "/v1/payouts?per_page=4"
    seen: list[str] = []
    responses = []
    while url is not None:
        response = client.get(url).raise_for_status()
        responses.append(response)
        body = response.json()
        assert isinstance(body, list) and body[0]["object"] == "payout"
        seen += [p["id"] for p in body]
        url = response.links.get("next", {}).get("url")
    assert seen == [p["id"] for p in small.payouts]
    assert len(responses) == 2
    first, last = responses
    assert first.links["next"]["url"].endswith("/v1/payouts?page=2&per_page=4")
    assert first.links["last"]["url"].endswith("/v1/payouts?page=2&per_page=4")
    assert "next" not in last.links and "prev" in last.links
    single = client.get("/v1/payouts")
    assert len(single.json()) == 6 and "Link" not in single.headers


# -- the world changing during a sync --------------------------------------------------------


def test_added_charges_appear_at_the_head_without_disturbing_a_walk(
    small: PaymentsData, api: PaymentsApi, client: httpx.Client
) -> None:
    later = DEFAULT_START + 40 * 86_400
    fresh = generate_payments(3, seed=99, start=later, span_seconds=600).charges
    first = client.get("/v1/charges", params={"limit": 100}).json()
    api.add_charges(fresh)
    seen = [c["id"] for c in first["data"]]
    body = first
    while body["has_more"]:
        params = {"limit": 100, "starting_after": body["data"][-1]["id"]}
        body = client.get("/v1/charges", params=params).json()
        seen += [c["id"] for c in body["data"]]
    assert seen == _newest_first(small.charges)
    head = client.get("/v1/charges", params={"limit": 3}).json()["data"]
    assert [c["id"] for c in head] == _newest_first(fresh)
    with pytest.raises(ValueError, match="duplicate"):
        api.add_charges(fresh[:1])


def test_requests_are_recorded_with_their_status(api: PaymentsApi, client: httpx.Client) -> None:
    api.faults.add("429")
    client.get("/v1/charges", params={"limit": 5, "created[gte]": 1})
    client.get("/v1/charges", params={"limit": 5})
    client.get("/v1/nowhere")
    assert [(r.path, r.status) for r in api.requests] == [
        ("/v1/charges", 429),
        ("/v1/charges", 200),
        ("/v1/nowhere", 404),
    ]
    assert api.requests[0].query == {"limit": "5", "created[gte]": "1"}
    assert api.requests[0].faults == ("429",) and api.requests[1].faults == ()
    assert api.requests[0].method == "GET" and api.requests[0].time <= time.time()


def test_only_loopback_hosts_are_accepted(small: PaymentsData) -> None:
    with pytest.raises(ValueError, match="loopback"):
        PaymentsApi(small, token=TOKEN, host="0.0.0.0")


# -- as a process ----------------------------------------------------------------------------


def test_module_runs_as_a_process_and_stops_on_sigterm() -> None:
    env = {**os.environ, TOKEN_ENV: TOKEN, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "medallion_platform.devkit.demo.payments_api", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--charges", "50", "--seed", "5"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=30), "the emulator printed no URL"
        base_url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base_url, headers=headers, trust_env=False) as http:
            body = http.get("/v1/charges", params={"limit": 100}).json()
        assert [c["id"] for c in body["data"]] == _newest_first(
            generate_payments(50, seed=5).charges
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None and process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_module_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--port", "0"])
    assert exited.value.code == 2 and TOKEN_ENV in capsys.readouterr().err


def test_payments_for_orders_agree_with_the_orders() -> None:
    """The demo charges the app database's orders: one charge each, for the order's total,
    with refunds where the order's story implies them."""
    from medallion_platform.devkit.demo.payments_api import OrderToCharge, payments_for_orders

    statuses = ["delivered", "placed", "cancelled", "returned", "paid", "shipped"] * 400
    orders = [
        OrderToCharge(
            order_id=f"ord_{n:07d}",
            customer_id=f"cus_{n % 97:06d}",
            currency="EUR" if n % 10 == 0 else "USD",
            total_cents=1_000 + n,
            placed_at=DEFAULT_START + 600 * n,
            status=status,
        )
        for n, status in enumerate(statuses, start=1)
    ]
    data = payments_for_orders(orders, seed=3)
    assert data == payments_for_orders(orders, seed=3)  # deterministic
    by_order = {c["metadata"]["order_id"]: c for c in data.charges}
    assert len(data.charges) == len(by_order) == len(orders)
    refunded: dict[str, int] = {}
    for refund in data.refunds:
        refunded[refund["charge"]] = refunded.get(refund["charge"], 0) + refund["amount"]
    invalid = 0
    for order in orders:
        charge = by_order[order.order_id]
        invalid += charge["currency"] == "xxx"
        assert charge["currency"] in (order.currency.lower(), "xxx")
        assert (charge["amount"], charge["customer"]) == (order.total_cents, order.customer_id)
        assert charge["created"] > order.placed_at
        refund = refunded.get(charge["id"], 0)
        assert charge["amount_refunded"] == refund <= charge["amount"]
        if order.status == "placed":
            assert charge["status"] == "pending" and refund == 0
        elif order.status == "returned":
            assert charge["status"] == "succeeded" and refund == order.total_cents
        elif order.status == "cancelled":
            assert (charge["status"], refund) in (("failed", 0), ("succeeded", order.total_cents))
        else:
            assert charge["status"] == "succeeded"
    assert invalid == len(orders) // 1000  # the quarantine example, as generate_payments has
    partial = [c for c in data.charges if 0 < c["amount_refunded"] < c["amount"]]
    assert 0 < len(partial) < len(orders) * 0.1
