"""The shared emulator server: what each API emulator gains from running on it, over real HTTP.

The payments emulator and the destination emulators used to have a server each; these are the
faults and checks that now reach both (a payments answer dropped, a destination's answer cut
short or dripped, a fault that lets requests pass first, a host the socket cannot bind)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from medallion_platform.devkit.demo.destinations.webhook import WebhookEmulator
from medallion_platform.devkit.demo.http_emulator import Fault
from medallion_platform.devkit.demo.payments_api import PaymentsApi, generate_payments

TOKEN = "sk_test_shared_emulator_server_0001"
BATCH = {"object": "contact", "action": "upsert", "identity_field": "id", "records": []}


def _client(base_url: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.Client(base_url=base_url, headers=headers, trust_env=False, timeout=10)


@pytest.fixture
def hook() -> Iterator[WebhookEmulator]:
    with WebhookEmulator(token=TOKEN) as emulator:
        yield emulator


def test_the_payments_emulator_drops_and_fails_after_processing() -> None:
    with PaymentsApi(generate_payments(30), token=TOKEN) as api, _client(api.base_url) as http:
        api.drop_next(path="/v1/charges")
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/v1/charges")
        api.fail_next(status=503, after_processing=True, path="/v1/charges")
        failed = http.get("/v1/charges")
        assert failed.status_code == 503 and "<html>" in failed.text
        assert "Request-Id" in failed.headers  # Stripe's headers on the server's own faults too
        assert http.get("/v1/charges").status_code == 200
    assert [(r.status, r.fault) for r in api.requests] == [
        (0, "drop"),
        (503, "status_after"),
        (200, None),
    ]


def test_a_destination_emulator_truncates_and_drips_its_answers(hook: WebhookEmulator) -> None:
    with _client(hook.base_url) as http:
        whole = http.post("/hooks", json=BATCH)
        hook.inject(Fault("truncated", 1))
        cut = http.post("/hooks", json=BATCH)
        hook.inject(Fault("drip", 1, seconds=0.02))
        began = time.monotonic()
        dripped = http.post("/hooks", json=BATCH)
        took = time.monotonic() - began
    assert whole.status_code == cut.status_code == dripped.status_code == 200
    assert cut.content == whole.content[: len(whole.content) // 2]
    assert int(cut.headers["Content-Length"]) == len(cut.content)
    assert dripped.content == whole.content
    assert took >= 0.02 * (len(whole.content) - 1)
    assert [r.fault for r in hook.requests] == [None, "truncated", "drip"]


def test_a_fault_lets_its_after_requests_pass_first(hook: WebhookEmulator) -> None:
    hook.inject(Fault("status", 2, "/hooks", status=503, after=2))
    with _client(hook.base_url) as http:
        statuses = [http.post(path, json=BATCH).status_code for path in ["/other"] + ["/hooks"] * 5]
    assert statuses == [200, 200, 200, 503, 503, 200]
    with pytest.raises(ValueError, match="unknown fault kind"):
        hook.inject(Fault("revoke", 1))  # the payments emulator's, not the webhook's


@pytest.mark.parametrize("host", ["::1", "0.0.0.0", "example.com"])
def test_only_a_host_the_ipv4_socket_can_bind_on_loopback_is_accepted(host: str) -> None:
    with pytest.raises(ValueError, match="IPv4 loopback"):
        WebhookEmulator(token=TOKEN, host=host)
    with pytest.raises(ValueError, match="IPv4 loopback"):
        PaymentsApi(generate_payments(1), token=TOKEN, host=host)
