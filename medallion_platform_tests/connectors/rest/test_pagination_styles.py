"""Every declared pagination style and auth type, against a small real HTTP server.

The payments emulator covers cursor (Stripe) and Link-header (GitHub) pagination with a
bearer token; this server covers next-URL-in-body, page-number and offset pagination with
basic auth and an API-key header, which is what makes the connector generic.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from medallion_platform.connectors.rest import Credentials, RestClient, RestSource, sync_endpoint

ITEMS = [{"id": f"it_{i:04d}", "n": i, "updated": 1_700_000_000 + i} for i in range(1, 251)]
USER, PASSWORD, KEY = "acme", "pw_do_not_leak_123", "key_do_not_leak_456"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path.startswith("/basic/"):
            expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                return self._send(401, {"message": "Bad credentials"})
        elif self.headers.get("X-Api-Key") != KEY:
            return self._send(403, {"error": "forbidden"})
        since = int(query.get("updated_since", 0))
        items = [i for i in ITEMS if i["updated"] >= since]
        size = int(query.get("page_size", 50))
        if url.path.endswith("/next_url"):
            start = int(query.get("after", 0))
            page = items[start : start + size]
            nxt = None
            if start + size < len(items):
                host = self.headers["Host"]
                nxt = f"http://{host}{url.path}?after={start + size}&page_size={size}"
                nxt += f"&updated_since={since}"
            return self._send(200, {"results": page, "links": {"next": nxt}})
        if url.path.endswith("/page_number"):
            page_no = int(query.get("page", 1))
            return self._send(200, {"items": items[(page_no - 1) * size : page_no * size]})
        if url.path.endswith("/offset"):
            offset = int(query.get("offset", 0))
            return self._send(200, {"items": items[offset : offset + size]})
        return self._send(404, {"error": "not found"})


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _source(auth: dict, endpoint: dict) -> RestSource:
    return RestSource.model_validate(
        {
            "name": "generic",
            "description": "A test API.",
            "base_url_env": "GENERIC_API_URL",
            "auth": auth,
            "retry": {"max_attempts": 2, "backoff_base_s": 0.01, "max_total_s": 5},
            "endpoints": [
                {"name": "items", "description": "Items.", "primary_key": "id", **endpoint}
            ],
        }
    )


BASIC = {"type": "basic", "username_env": "GENERIC_USER", "password_env": "GENERIC_PASSWORD"}
API_KEY = {"type": "api_key", "token_env": "GENERIC_KEY", "header": "X-Api-Key"}
CASES = {
    "next_url": (
        API_KEY,
        {"path": "/key/next_url", "record_path": "results",
         "pagination": {"type": "next_url", "next_url_path": "links.next"}},
    ),
    "page_number": (
        BASIC,
        {"path": "/basic/page_number", "record_path": "items",
         "pagination": {"type": "page_number", "page_param": "page"}},
    ),
    "offset": (
        API_KEY,
        {"path": "/key/offset", "record_path": "items",
         "pagination": {"type": "offset", "offset_param": "offset"}},
    ),
}  # fmt: skip


@pytest.mark.parametrize("style", sorted(CASES))
def test_each_pagination_style_reads_every_record_once(server, warehouse, style) -> None:
    auth, endpoint = CASES[style]
    source = _source(
        auth,
        {
            **endpoint,
            "page_size": 40,
            "page_size_param": "page_size",
            "pages_per_commit": 2,
            "incremental": {"cursor_field": "updated", "param": "updated_since"},
        },
    )
    credentials = Credentials(token=KEY, username=USER, password=PASSWORD)
    client = RestClient(server, source.auth, credentials, source.retry)
    report = sync_endpoint(warehouse, source, source.endpoints[0], client)
    # Page numbers and offsets end on an empty page (a short page is no end: APIs cap sizes).
    assert report.records == 250 and report.pages == (7 if style == "next_url" else 8)
    assert report.high_water_mark == ITEMS[-1]["updated"]
    with warehouse.connect() as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT _raw->>'id'), min((_raw->>'n')::INT), "
            "max((_raw->>'n')::INT) FROM bronze.generic_items"
        ).fetchone() == (250, 250, 1, 250)


@pytest.mark.parametrize(
    ("auth", "credentials", "status"),
    [
        (BASIC, Credentials(username=USER, password="wrong_password_123"), 401),
        (API_KEY, Credentials(token="wrong_key_9876543"), 403),
    ],
)
def test_wrong_credentials_fail_at_once_naming_status_and_api_message(
    server, warehouse, auth, credentials, status
) -> None:
    endpoint = CASES["page_number" if auth is BASIC else "offset"][1]
    source = _source(auth, endpoint)
    client = RestClient(server, source.auth, credentials, source.retry)
    with pytest.raises(Exception, match=f"HTTP {status}") as caught:
        sync_endpoint(warehouse, source, source.endpoints[0], client)
    assert client.calls == 1
    for secret in credentials.secrets():
        assert secret not in str(caught.value)
