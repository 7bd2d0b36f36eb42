"""The client against misbehaving servers: dripped bytes, redirects, HTML instead of JSON.

The payments emulator drips, redirects and serves a maintenance page on demand; a small
stdlib server here drips the status line and headers themselves (before httpx has a
response) and redirects to a URL that carries the API key, to check it is masked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.rest import (
    Credentials,
    RestClient,
    RestSource,
    RetriesExhausted,
    sync_endpoint,
)
from medallion_platform.connectors.rest.client import NotJsonResponse, RestRedirect
from medallion_platform.connectors.rest.spec import AuthSpec, RetryPolicy
from medallion_platform.devkit.demo.payments_api import PaymentsApi, generate_payments

TOKEN = "sk_test_client_token_do_not_leak_77"
KEY = "key_client_do_not_leak_314159"
# A read timeout the drip never trips (a byte comes every 20 ms) and a short deadline.
DRIP_RETRY = RetryPolicy(
    max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=5, deadline_s=0.5
)


@pytest.fixture
def source(config: PlatformConfig) -> RestSource:
    return config.rest_sources[0].model_copy(update={"retry": DRIP_RETRY})


def _charges(source: RestSource):
    return next(e for e in source.endpoints if e.name == "charges")


def _client(api: PaymentsApi, source: RestSource) -> RestClient:
    return RestClient(api.base_url, source.auth, Credentials(token=TOKEN), source.retry)


def _charge_requests(api: PaymentsApi) -> list[int]:
    return [r.status for r in api.requests if r.path == "/v1/charges"]


def test_a_dripped_body_is_cut_at_the_deadline_and_retried(warehouse, source) -> None:
    """The first page's body comes a byte every 20 ms (about 20 minutes for the page): at
    the 0.5 s deadline the attempt is cut and retried; the retry gets the page."""
    with PaymentsApi(generate_payments(300), token=TOKEN) as api:
        api.faults.add("drip", path="/v1/charges", delay=0.02)
        client = _client(api, source)
        began = time.monotonic()
        report = sync_endpoint(warehouse, source, _charges(source), client)
        took = time.monotonic() - began
        assert len(_charge_requests(api)) == 4  # 3 pages, the first one twice
    assert report.records == 300 and report.retries == 1
    assert 0.5 <= took < 3


def test_a_server_that_keeps_dripping_exhausts_the_retries_saying_the_deadline_passed(
    warehouse, source
) -> None:
    with PaymentsApi(generate_payments(300), token=TOKEN) as api:
        api.faults.add("drip", path="/v1/charges", count=10, delay=0.02)
        began = time.monotonic()
        with pytest.raises(RetriesExhausted) as caught:
            sync_endpoint(warehouse, source, _charges(source), _client(api, source))
        took = time.monotonic() - began
    message = str(caught.value)
    assert message.startswith("GET /v1/charges: gave up after 2 attempt(s)")
    assert "deadline of 0.5s exceeded (connect + headers + body)" in message
    assert 1.0 <= took < 3  # two attempts of 0.5 s, not 2 x 20 minutes


def test_a_redirect_is_reported_at_once_with_its_location_and_content_type(
    warehouse, source
) -> None:
    """Before: retried 8 times as 'not valid JSON (truncated?)'. The two pages before it stay
    committed; the redirect is not followed (the token would go with it)."""
    with PaymentsApi(generate_payments(1_000), token=TOKEN) as api:
        api.faults.add("redirect", path="/v1/charges", after=2)
        with pytest.raises(RestRedirect) as caught:
            sync_endpoint(warehouse, source, _charges(source), _client(api, source))
        statuses = _charge_requests(api)
        location = "https://" + api.base_url.split("://")[1] + "/v1/charges?"
    message = str(caught.value)
    assert statuses == [200, 200, 301]  # not retried, not followed
    assert message.startswith(f"GET /v1/charges answered HTTP 301 redirecting to {location}")
    assert "(content type text/html)" in message and "redirects are not followed" in message
    assert TOKEN not in message
    with warehouse.connect() as conn:
        assert conn.execute("SELECT count(*) FROM bronze.payments_charges").fetchone() == (200,)


def test_an_html_page_with_200_is_reported_at_once_not_retried_as_truncated_json(
    warehouse, source
) -> None:
    with PaymentsApi(generate_payments(300), token=TOKEN) as api:
        api.faults.add("html", path="/v1/charges")
        with pytest.raises(NotJsonResponse) as caught:
            sync_endpoint(warehouse, source, _charges(source), _client(api, source))
        statuses = _charge_requests(api)
    assert statuses == [200]
    assert str(caught.value).startswith(
        "GET /v1/charges answered HTTP 200 with content type text/html; charset=utf-8, "
        "not JSON (not retried): <!DOCTYPE html><html><head><title>Down for maintenance"
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", f"https://sso.example.com/login?api_key={KEY}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        try:  # the status line and headers, a byte every 20 ms (about 1.5 s)
            for offset in range(len(head)):
                self.wfile.write(head[offset : offset + 1])
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:  # the client hung up
            self.close_connection = True


@pytest.fixture
def dripping() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_dripped_headers_are_cut_at_the_deadline_too(dripping) -> None:
    """Before headers there is no response to read in chunks: the deadline still holds."""
    retry = DRIP_RETRY.model_copy(update={"deadline_s": 0.3})
    client = RestClient(dripping, AuthSpec(type="none"), Credentials(), retry)
    began = time.monotonic()
    with pytest.raises(RetriesExhausted, match=r"deadline of 0\.3s exceeded"):
        client.get_json("/v1/items")
    assert time.monotonic() - began < 1.2  # 2 x 0.3 s, not 2 x 1.5 s
    assert client.calls == 2


def test_a_redirect_location_is_masked(dripping) -> None:
    auth = AuthSpec(type="api_key", token_env="ITEMS_KEY")
    client = RestClient(dripping, auth, Credentials(token=KEY), DRIP_RETRY)
    with pytest.raises(RestRedirect) as caught:
        client.get_json("/moved")
    assert caught.value.location == "https://sso.example.com/login?api_key=****"
    assert KEY not in str(caught.value) and "(content type (none))" in str(caught.value)
    assert client.calls == 1
