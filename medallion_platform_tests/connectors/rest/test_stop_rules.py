"""Each paginator's stop rule, and the repeat guard, against a small real HTTP server.

The server lives under ``/api`` (so a next link joined to the base URL instead of the request
URL goes astray), caps every page at 25 records whatever was asked (as real APIs do), and can
misbehave the way the operator saw: a cursor, next link or page that comes back again.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from medallion_platform.connectors.rest import Credentials, RestClient, RestSource, sync_endpoint
from medallion_platform.connectors.rest.pager import PaginationError, RepeatedPageError
from medallion_platform.connectors.rest.sync import load_state, state_key

ITEMS = [{"id": f"it_{i:04d}", "n": i} for i in range(250)]
CAP = 25  # the server's page size, whatever the client asks for
STUCK_FROM = 2  # misbehaving routes repeat themselves from this offset on ...
STUCK_FOR = 30  # ... this many times, then behave (so a client with no guard terminates)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()  # headers and body are separate writes: without this, ~40 ms a request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stuck(self) -> bool:
        """Whether this misbehaving route repeats itself once more."""
        with self.server.lock:
            self.server.stuck += 1
            return self.server.stuck <= STUCK_FOR

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = url.path.removeprefix("/api/v1/")
        with self.server.lock:
            self.server.paths.append(self.path)
        if not url.path.startswith("/api/v1/"):
            return self._send(404, {"error": f"no such path {url.path}"})
        size = min(int(q.get("limit", CAP)), CAP)
        if route in ("cursor", "cursor_stuck", "cursor_has_more"):
            start = int(q.get("cursor") or 0)
            if route == "cursor_stuck" and start >= STUCK_FROM * CAP and self._stuck():
                start = (STUCK_FROM - 1) * CAP  # the previous page and cursor again
            end = start + size
            body: dict = {"items": ITEMS[start:end], "next_cursor": None}
            if end < len(ITEMS):
                body["next_cursor"] = str(end)
            if route == "cursor_stuck":
                body["has_more"] = end < len(ITEMS)
            if route == "cursor_has_more" and start == 0:
                body["has_more"] = True  # only on the first page: the rest forget it
            return self._send(200, body)
        if route in ("page_number", "page_number_stuck"):
            page = int(q.get("page", 1))
            if route == "page_number_stuck" and page > STUCK_FROM and self._stuck():
                page = STUCK_FROM  # the page parameter ignored
            items = ITEMS[(page - 1) * size : page * size]
            return self._send(200, {"items": items, "total_pages": -(-len(ITEMS) // size)})
        if route in ("offset", "offset_stuck"):
            offset = int(q.get("offset", 0))
            if route == "offset_stuck" and offset >= STUCK_FROM * CAP and self._stuck():
                offset = (STUCK_FROM - 1) * CAP
            return self._send(200, {"items": ITEMS[offset : offset + size], "total": len(ITEMS)})
        if route in ("next_url", "next_url_stuck", "link_header", "link_header_stuck"):
            start = int(q.get("after", 0))
            # Pages 100..124 are filtered out (permissions, deletions): an empty page that still
            # has a next link, as some APIs serve.
            items = [] if start == 100 else ITEMS[start : start + size]
            after = start + size
            if route.endswith("_stuck") and start >= STUCK_FROM * CAP and self._stuck():
                after = start  # a link to this very page
            link = None
            if after < len(ITEMS):  # relative to the request URL, as RFC 3986 allows
                link = f"{route}?after={after}" if route.startswith("next") else f"?after={after}"
            if route.startswith("next"):
                return self._send(200, {"results": items, "links": {"next": link}})
            return self._send(200, items, {"Link": f'<{link}>; rel="next"'} if link else None)
        return self._send(404, {"error": f"no such route {route}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.stuck = 0


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _source(endpoint: dict, **source: object) -> RestSource:
    return RestSource.model_validate(
        {
            "name": "stops",
            "description": "A test API.",
            "base_url_env": "STOPS_API_URL",
            "auth": {"type": "none"},
            "retry": {"max_attempts": 2, "backoff_base_s": 0.01, "max_total_s": 5},
            **source,
            "endpoints": [
                {
                    "name": "items",
                    "description": "Items.",
                    "page_size": 40,  # more than the server's cap of 25
                    "pages_per_commit": 2,
                    **endpoint,
                }
            ],
        }
    )


def _run(server: _Server, warehouse, endpoint: dict, **source: object):
    spec = _source(endpoint, **source)
    base = f"http://127.0.0.1:{server.server_address[1]}/api"
    client = RestClient(base, spec.auth, Credentials(), spec.retry)
    return spec, sync_endpoint(warehouse, spec, spec.endpoints[0], client)


def _bronze(warehouse) -> tuple[int, int, int | None]:
    with warehouse.connect() as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT _raw->>'id'), max((_raw->>'n')::INT) "
            "FROM bronze.stops_items"
        ).fetchone()


def test_a_cursor_walk_goes_on_while_there_is_a_cursor(server, warehouse) -> None:
    """No ``has_more`` in the body and none declared: the old default (``has_more``) read its
    absence as false and stopped after page 1 with 25 of 250 records."""
    _, report = _run(
        server,
        warehouse,
        {
            "path": "/v1/cursor",
            "record_path": "items",
            "pagination": {
                "type": "cursor",
                "cursor_path": "next_cursor",
                "cursor_param": "cursor",
            },
        },
    )
    assert report.records == 250 and report.complete
    assert _bronze(warehouse) == (250, 250, 249)
    assert len(server.paths) == 10  # the last page has no cursor: no extra request


def test_a_declared_has_more_missing_from_a_page_is_an_error_not_the_end(server, warehouse) -> None:
    """Page 1 says ``has_more: true``, page 2 says nothing: stopping there would be silent."""
    with pytest.raises(PaginationError, match=r"/v1/cursor_has_more: has_more_path 'has_more'"):
        _run(
            server,
            warehouse,
            {
                "path": "/v1/cursor_has_more",
                "record_path": "items",
                "pagination": {
                    "type": "cursor",
                    "cursor_path": "next_cursor",
                    "cursor_param": "cursor",
                    "has_more_path": "has_more",
                },
            },
        )
    assert _bronze(warehouse)[0] == 25  # page 1, committed; page 2 was not


RANGES = {
    "page_number": ({"type": "page_number", "page_param": "page"}, "total_pages"),
    "offset": ({"type": "offset", "offset_param": "offset"}, "total"),
}


@pytest.mark.parametrize("style", sorted(RANGES))
def test_page_numbers_and_offsets_read_past_short_pages_to_an_empty_one(
    server, warehouse, style
) -> None:
    """40 asked, 25 served: the old rule (a short page is the last) read 25 of 250."""
    pagination, _ = RANGES[style]
    _, report = _run(
        server,
        warehouse,
        {"path": f"/v1/{style}", "record_path": "items", "pagination": pagination},
    )
    assert report.records == 250 and report.pages == 11  # 10 full pages, then an empty one
    assert _bronze(warehouse) == (250, 250, 249)


@pytest.mark.parametrize("style", sorted(RANGES))
def test_page_numbers_and_offsets_stop_at_a_declared_total(server, warehouse, style) -> None:
    pagination, total_path = RANGES[style]
    _, report = _run(
        server,
        warehouse,
        {
            "path": f"/v1/{style}",
            "record_path": "items",
            "pagination": {**pagination, "total_path": total_path},
        },
    )
    assert report.records == 250 and report.pages == 10  # no request for an empty page
    assert len(server.paths) == 10
    assert _bronze(warehouse) == (250, 250, 249)


LINKS = {
    "next_url": ({"type": "next_url", "next_url_path": "links.next"}, "results"),
    "link_header": ({"type": "link_header"}, ""),
}


@pytest.mark.parametrize("style", sorted(LINKS))
def test_next_links_resolve_against_the_request_url_and_go_on_past_an_empty_page(
    server, warehouse, style
) -> None:
    """Relative links (``next_url?after=25``, ``?after=25``) mean the request's resource: joined
    to the base URL they miss ``/v1/``. A filtered-out empty page with a next link is not the
    end (the old rule stopped there, 100 of 250 records)."""
    pagination, record_path = LINKS[style]
    _, report = _run(
        server,
        warehouse,
        {"path": f"/v1/{style}", "record_path": record_path, "pagination": pagination},
    )
    filtered = [i for i in ITEMS if not 100 <= i["n"] < 125]
    assert report.records == len(filtered) and report.complete
    assert _bronze(warehouse) == (len(filtered), len(filtered), 249)
    assert all(p.startswith(f"/api/v1/{style}") for p in server.paths)


STUCK = {
    "cursor": (
        {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor",
         "has_more_path": "has_more"},
        "items",
        "cursor=50",
    ),
    "page_number": ({"type": "page_number"}, "items", "page=3"),
    "offset": ({"type": "offset"}, "items", "offset=50"),
    "next_url": ({"type": "next_url", "next_url_path": "links.next"}, "results", "after=50"),
    "link_header": ({"type": "link_header"}, "", "after=50"),
}  # fmt: skip


@pytest.mark.parametrize("style", sorted(STUCK))
def test_a_repeated_cursor_link_or_page_is_an_error_and_nothing_is_read_twice(
    server, warehouse, style
) -> None:
    """From the third request on, the API repeats itself (the previous cursor and page, a link
    to the same page, a page parameter it ignores). Without the guard, every repeat was appended
    (30 duplicate pages here; 29,700 requests in the operator's case)."""
    pagination, record_path, cursor = STUCK[style]
    with pytest.raises(RepeatedPageError) as caught:
        _run(
            server,
            warehouse,
            {"path": f"/v1/{style}_stuck", "record_path": record_path, "pagination": pagination},
        )
    error = caught.value
    assert error.endpoint == f"/v1/{style}_stuck" and cursor in error.cursor
    assert f"GET /v1/{style}_stuck: page" in str(error) and cursor in str(error)
    assert len(server.paths) == 3  # stopped at the first repeat
    rows, distinct, _ = _bronze(warehouse)
    assert rows == distinct == 2 * CAP  # the two pages before it, once each


def test_a_repeated_page_stops_again_on_the_next_run_without_appending_it(
    server, warehouse
) -> None:
    """The resume point is the repeated page's request and the last committed page's
    fingerprint goes with it: the rerun asks once, recognizes the page and appends nothing."""
    endpoint = {
        "path": "/v1/offset_stuck",
        "record_path": "items",
        "pagination": {"type": "offset"},
    }
    with pytest.raises(RepeatedPageError):
        _run(server, warehouse, endpoint)
    with pytest.raises(
        RepeatedPageError, match="25 records of the last page an earlier run committed"
    ):
        _run(server, warehouse, endpoint)
    assert server.paths[3:] == ["/api/v1/offset_stuck?limit=40&offset=50"]  # one request
    source = _source(endpoint)
    with warehouse.connect() as conn:
        state = load_state(conn, state_key(source, source.endpoints[0]))
    assert state.in_progress is not None and state.in_progress.resume == {"offset": 50}
    assert _bronze(warehouse)[:2] == (2 * CAP, 2 * CAP)
