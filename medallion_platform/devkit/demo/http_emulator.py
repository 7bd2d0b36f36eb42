"""The HTTP server every API emulator of the harness runs on (the payments API and each
reverse-ETL destination's emulator).

Connectors and syncs are tested against these servers, so what they share is what a client
leans on: a loopback HTTP/1.1 server (keep-alive) on a background thread, routes by method and
path pattern, bearer/basic auth checked in constant time, an exact sliding-window rate limiter
(``time.monotonic``) that also remembers the busiest window it saw, a request log, and faults
injected on demand: an error status before or after the request was processed, a slow answer,
a dropped connection before or after processing, a truncated or dripped body, and the faults an
emulator defines for its own API (:meth:`EmulatorServer._injected`, permanent ones such as a
revoked token through :meth:`EmulatorServer._permanent_fault`). Each emulator supplies its
routes and its API's error bodies; :func:`serve_until_signal` runs one as a process.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal, Self, get_args
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from medallion_platform.devkit.process import Service

Headers = tuple[tuple[str, str], ...]
MAX_BODY_BYTES = 8 * 1024 * 1024
UNMATCHED = "unmatched"

# --------------------------------------------------------------------------------------------
# Requests and responses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request; header names are lower-cased, the last repeated query key wins.
    ``target`` is the request line's target as sent (path and query, still percent-encoded)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    target: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Response:
    """What the handler writes; ``content_type=None`` sends no body headers (204).
    ``drip_s`` > 0 sends the body one byte at a time, that far apart (a stalling server)."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: Headers = ()
    drip_s: float = 0.0

    def with_headers(self, extra: Headers) -> Response:
        return replace(self, headers=(*self.headers, *extra)) if extra else self


def json_response(status: int, payload: Any, headers: Headers = ()) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers)


def text_response(status: int, text: str, headers: Headers = ()) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8", headers)


def empty_response(status: int = 204, headers: Headers = ()) -> Response:
    return Response(status, b"", None, headers)


def proxy_error_page(
    status: int, *, signature: str | None = None, headers: Headers = ()
) -> Response:
    """The HTML an edge proxy answers with (502/504): clients must not assume a JSON error.
    ``signature`` is the proxy's name in the page's footer, as nginx writes it."""
    phrase = HTTPStatus(status).phrase
    footer = f"<hr><center>{signature}</center>\r\n" if signature else ""
    page = (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n{footer}</body>\r\n</html>\r\n"
    )
    return Response(status, page.encode(), "text/html", headers)


class ApiError(Exception):
    """Raised by a route to answer with a ready-made error response (whole request refused)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(request: Request, on_error: Callable[[str], Response]) -> Any:
    """The body as JSON (NaN/Infinity refused, as real APIs do) or ``ApiError(on_error(why))``."""
    try:
        return json.loads(request.body.decode("utf-8"), parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise ApiError(
            on_error(f"{error.msg} at [line:{error.lineno}, column:{error.colno}]")
        ) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(on_error(str(error))) from None


# --------------------------------------------------------------------------------------------
# Auth
# --------------------------------------------------------------------------------------------


def bearer_token(request: Request) -> str | None:
    scheme, _, value = (request.header("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = (request.header("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def same_secret(presented: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak how much of a token matched."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


# --------------------------------------------------------------------------------------------
# Rate limiting
# --------------------------------------------------------------------------------------------


class RateLimit(BaseModel):
    """At most ``max_requests`` admitted within any ``window_seconds`` (a sliding window)."""

    model_config = ConfigDict(frozen=True)

    max_requests: int = Field(gt=0)
    window_seconds: float = Field(gt=0)


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    limit: int
    remaining: int  # slots left in the window after this request
    retry_after: float  # seconds until a slot frees; 0 when allowed


class SlidingWindowLimiter:
    """An exact sliding window over ``time.monotonic``, no buckets or approximations.

    A request is admitted when fewer than ``max_requests`` requests were admitted in the trailing
    ``window_seconds``; refused requests do not use up capacity, so a client that waits out
    ``retry_after`` gets in. Every arrival (admitted or not) also feeds ``peak``: the most requests
    that arrived within any one window, which is how a test asserts a client stayed under the limit.
    """

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._limit = limit
        self._admitted: deque[float] = deque()
        self._arrivals: deque[float] = deque()
        self._peak = 0
        self.refused = 0

    @property
    def limit(self) -> RateLimit:
        return self._limit

    @property
    def peak(self) -> int:
        with self._lock:
            return self._peak

    def configure(self, limit: RateLimit) -> None:
        """A new limit from now on; the busiest-window record restarts with it."""
        with self._lock:
            self._limit = limit
            self._peak = 0
            self._arrivals.clear()

    def admit(self) -> Admission:
        with self._lock:
            now = self._clock()
            window, limit = self._limit.window_seconds, self._limit.max_requests
            self._arrivals.append(now)
            while self._arrivals and self._arrivals[0] <= now - window:
                self._arrivals.popleft()
            self._peak = max(self._peak, len(self._arrivals))
            while self._admitted and self._admitted[0] <= now - window:
                self._admitted.popleft()
            if len(self._admitted) < limit:
                self._admitted.append(now)
                return Admission(True, limit, limit - len(self._admitted), 0.0)
            self.refused += 1
            return Admission(False, limit, 0, self._admitted[0] + window - now)


# --------------------------------------------------------------------------------------------
# Request log and faults
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as answered; ``status`` is 0 when the connection was dropped on purpose."""

    method: str
    path: str
    endpoint: str
    status: int
    time: float  # wall clock, when it arrived
    fault: str | None = None  # the injected fault that shaped the answer
    limited: bool = False  # refused by a rate or usage limit
    query: Mapping[str, str] = field(default_factory=dict)
    permanent: tuple[str, ...] = ()  # permanent faults this request set off

    @property
    def faults(self) -> tuple[str, ...]:
        """Every fault this request set off: the permanent ones, then the one that shaped it."""
        return (*self.permanent, self.fault) if self.fault is not None else self.permanent


class RequestLog:
    """Every request in arrival order; appended before the response is written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


class EmulatorStats(BaseModel):
    """Counters a test asserts on after a sync."""

    requests: int
    by_endpoint: dict[str, int]
    by_status: dict[int, int]
    limited: int  # refused by a rate or usage limit (429s, Salesforce's 403s)
    peak_in_window: int  # most requests that arrived within one rate-limit window (0: no limit)
    peak_in_flight: int  # most requests being served at once


# The faults the server itself knows; an emulator adds its API's own (``fault_kinds``).
FaultKind = Literal[
    "status",  # answer ``status`` (the API's error body) without processing the request
    "status_after",  # process it (a write is committed), then answer ``status`` anyway
    "slow",  # wait ``seconds`` before anything else
    "drop",  # close the connection without answering or processing
    "drop_after",  # process it, then close the connection without answering
    "truncated",  # the first half of the body, still labelled with its full type
    "drip",  # the body one byte every ``seconds``
]
SERVER_FAULTS: frozenset[str] = frozenset(get_args(FaultKind))


@dataclass
class Fault:
    """One queued fault: it lets ``after`` of the requests under ``path`` pass, then fires on the
    next ``count`` of them (a permanent one fires once, whatever ``count`` says). ``headers`` go
    out with each answer it shapes."""

    kind: str
    count: int
    path: str = "/"
    status: int = 500
    retry_after: float | None = None
    seconds: float = 0.0
    after: int = 0
    headers: Headers = ()


class FaultPlan:
    """Faults queued by a test, consumed by the requests whose path starts with their ``path``.

    Every fault counts the matching requests independently (its ``after``). At most one fault
    shapes a request's answer: the earliest queued that is due (the others wait for the next
    request). Faults of a ``permanent`` kind change the server for good (a revoked token): they
    fire alongside, once each.
    """

    def __init__(
        self, kinds: Collection[str] = SERVER_FAULTS, permanent: Collection[str] = ()
    ) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._kinds = frozenset(kinds) | frozenset(permanent)
        self._permanent = frozenset(permanent)

    def add(self, fault: Fault) -> None:
        if fault.kind not in self._kinds:
            raise ValueError(
                f"unknown fault kind {fault.kind!r}; expected one of {sorted(self._kinds)}"
            )
        if fault.count < 1 or fault.seconds < 0 or fault.after < 0:
            raise ValueError("count must be >= 1; after and seconds must be >= 0")
        if not fault.path.startswith("/"):
            raise ValueError(f"path must start with '/', got {fault.path!r}")
        if fault.retry_after is not None and fault.retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        with self._lock:
            self._faults.append(fault)

    def draw(self, path: str) -> tuple[Fault | None, tuple[Fault, ...]]:
        """Consume what one request to ``path`` sets off: (the fault shaping its answer, the
        permanent faults that fire with it)."""
        shaping: Fault | None = None
        permanent: list[Fault] = []
        with self._lock:
            keep: list[Fault] = []
            for fault in self._faults:
                if not path.startswith(fault.path):
                    keep.append(fault)
                elif fault.after > 0:
                    fault.after -= 1
                    keep.append(fault)
                elif fault.kind in self._permanent:
                    permanent.append(fault)
                elif shaping is None:
                    shaping = replace(fault, count=1)
                    fault.count -= 1
                    if fault.count > 0:
                        keep.append(fault)
                else:
                    keep.append(fault)
            self._faults = keep
        return shaping, tuple(permanent)

    def take(self, path: str) -> Fault | None:
        """The fault shaping the answer to one request to ``path`` (a plan without permanent
        kinds: see :meth:`draw`)."""
        return self.draw(path)[0]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

Handler = Callable[[Request, "re.Match[str]"], Response]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str  # the name counted in stats, e.g. "POST /crm/v3/objects/contacts/batch/upsert"
    handler: Handler = field(compare=False)


def is_loopback(host: str) -> bool:
    """IPv4 loopback (the server socket is IPv4): ``localhost`` or ``127.x.y.z``."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


class EmulatorServer(Service):
    """The lifecycle and request pipeline every API emulator shares.

    Per request: resolve the route (for counting), draw the queued faults, authenticate, admit
    against the limits, then run the route; the request is logged with its outcome. Subclasses
    provide ``_routes`` and the API-specific bodies (``_authenticate``, ``_limited``, ...), and
    may define faults of their own (``fault_kinds``, ``_injected``, ``permanent_faults``).
    """

    name = "emulator"
    server_software: ClassVar[str] = "destination-emulator/1"  # the ``Server`` header
    fault_kinds: ClassVar[frozenset[str]] = SERVER_FAULTS
    permanent_faults: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self, *, token: str, host: str = "127.0.0.1", port: int = 0, rate_limit: RateLimit | None
    ) -> None:
        if not token:
            raise ValueError("token must be a non-empty string")
        if not is_loopback(host):
            raise ValueError(f"the emulator binds to IPv4 loopback only, got host {host!r}")
        self._host = host
        self._port = port
        self._token = token
        self._token_expired = False
        self._lock = threading.Lock()
        self._limiter = SlidingWindowLimiter(rate_limit) if rate_limit is not None else None
        self._faults = FaultPlan(self.fault_kinds, self.permanent_faults)
        self._log = RequestLog()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes_table: list[Route] = self._routes()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``; known once started (``port=0`` picks a free one)."""
        if self._server is None:
            raise RuntimeError(f"the {self.name} emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        """Bind and serve on a daemon thread; the socket listens before this returns."""
        if self._server is not None:
            raise RuntimeError(f"the {self.name} emulator was already started")
        self._server = _Server((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut kept-alive connections, so no client is answered afterwards."""
        server, thread = self._server, self._thread
        if server is None or thread is None or not thread.is_alive():
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)

    # -- what a test controls ------------------------------------------------------------------

    def expire_token(self) -> None:
        """From now on the token is refused with 401, as after it expired or was revoked."""
        with self._lock:
            self._token_expired = True

    def set_token(self, token: str) -> None:
        """Accept ``token`` (a refreshed or rotated one) from now on."""
        if not token:
            raise ValueError("token must be a non-empty string")
        with self._lock:
            self._token, self._token_expired = token, False

    def set_rate_limit(self, limit: RateLimit | None) -> None:
        """Enforce ``limit`` from now on (``None``: none); the busiest-window record restarts."""
        with self._lock:
            if limit is None:
                self._limiter = None
            elif self._limiter is None:
                self._limiter = SlidingWindowLimiter(limit)
            else:
                self._limiter.configure(limit)

    @property
    def rate_limit(self) -> RateLimit | None:
        limiter = self._limiter
        return limiter.limit if limiter is not None else None

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        path: str = "/",
        retry_after: float | None = None,
        after_processing: bool = False,
    ) -> None:
        """The next ``count`` requests under ``path`` get ``status`` (the API's own error body)
        without being processed; 429 is the API's rate-limit answer, 502/504 a proxy's HTML.
        With ``after_processing`` the write is committed first and the error answered anyway
        (a gateway or the API failing after the work was done: the client cannot tell)."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status, got {status}")
        kind: FaultKind = "status_after" if after_processing else "status"
        self.inject(Fault(kind, count, path, status=status, retry_after=retry_after))

    def slow_next(self, count: int = 1, *, seconds: float, path: str = "/") -> None:
        """The next ``count`` requests under ``path`` are answered after ``seconds``."""
        self.inject(Fault("slow", count, path, seconds=seconds))

    def drop_next(self, count: int = 1, *, after_processing: bool = False, path: str = "/") -> None:
        """Close the connection without answering; with ``after_processing`` the write is
        committed first (the lost-response case that tests a sync's idempotency)."""
        self.inject(Fault("drop_after" if after_processing else "drop", count, path))

    def inject(self, fault: Fault) -> None:
        """Queue any fault of ``fault_kinds`` (a truncated or dripped body, one of the API's
        own, one that lets ``after`` requests pass first)."""
        self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    def clear_log(self) -> None:
        """Forget the requests so far (``stats()`` counts from here on)."""
        self._log.clear()

    # -- what a test inspects ------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        return self._log.records()

    def stats(self) -> EmulatorStats:
        records = self._log.records()
        limiter = self._limiter
        with self._lock:
            peak_in_flight = self._peak_in_flight
        return EmulatorStats(
            requests=len(records),
            by_endpoint=dict(Counter(record.endpoint for record in records)),
            by_status=dict(Counter(record.status for record in records)),
            limited=sum(record.limited for record in records),
            peak_in_window=limiter.peak if limiter is not None else 0,
            peak_in_flight=peak_in_flight,
        )

    # -- for subclasses ------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        raise NotImplementedError

    def _authenticate(self, request: Request) -> Response | None:
        """``None`` when the request carries the live credentials, else the API's 401."""
        raise NotImplementedError

    def _limited(self, admission: Admission) -> Response:
        """The API's answer to a request over the rate limit."""
        raise NotImplementedError

    def _fault(self, status: int, retry_after: float | None) -> Response:
        """The API's answer for an injected error ``status``."""
        raise NotImplementedError

    def _not_found(self, request: Request, allowed: list[str]) -> Response:
        """No route: ``allowed`` lists the methods the path supports (empty: unknown path)."""
        raise NotImplementedError

    def _internal_error(self) -> Response:
        raise NotImplementedError

    def _injected(self, request: Request, fault: Fault) -> Response | None:
        """The answer a fault gives instead of processing the request (``None``: process it).
        An emulator adds its API's own kinds here."""
        if fault.kind == "status":
            return self._fault(fault.status, fault.retry_after)
        return None

    def _permanent_fault(self, fault: Fault) -> None:
        """A fault of a ``permanent_faults`` kind fired: change the server for good."""
        raise NotImplementedError

    def _headers(self, request: Request) -> Headers:
        """Headers the API sends with every answer (request ids, versions)."""
        return ()

    def _admit(self, request: Request, route: Route | None) -> tuple[Response | None, Headers]:
        """Apply the rate limit; returns (refusal or None, headers for the response)."""
        limiter = self._limiter
        if limiter is None:
            return None, ()
        admission = limiter.admit()
        return (None if admission.allowed else self._limited(admission)), self._limit_headers(
            admission
        )

    def _limit_headers(self, admission: Admission) -> Headers:
        return ()

    def _token_state(self) -> tuple[str, bool]:
        with self._lock:
            return self._token, self._token_expired

    def _in_flight_count(self) -> int:
        with self._lock:
            return self._in_flight

    # -- the pipeline --------------------------------------------------------------------------

    def _resolve(self, request: Request) -> tuple[Route | None, re.Match[str] | None, list[str]]:
        allowed: list[str] = []
        for route in self._routes_table:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method == request.method:
                return route, match, []
            allowed.append(route.method)
        return None, None, allowed

    def handle(self, request: Request) -> Response | None:
        """Answer one request (``None``: drop the connection) and log it."""
        received = time.time()
        route, match, allowed = self._resolve(request)
        fault, permanent = self._faults.draw(request.path)
        for fired in permanent:
            self._permanent_fault(fired)
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        limited = False
        try:
            response, limited = self._respond_to(request, route, match, allowed, fault)
        finally:
            with self._lock:
                self._in_flight -= 1
        if response is not None:
            extra = self._headers(request)
            response = response.with_headers(extra + fault.headers if fault else extra)
        self._log.append(
            RequestRecord(
                method=request.method,
                path=request.path,
                endpoint=route.endpoint if route is not None else UNMATCHED,
                status=response.status if response is not None else 0,
                time=received,
                fault=fault.kind if fault is not None else None,
                limited=limited,
                query=request.query,
                permanent=tuple(fired.kind for fired in permanent),
            )
        )
        return response

    def _respond_to(
        self,
        request: Request,
        route: Route | None,
        match: re.Match[str] | None,
        allowed: list[str],
        fault: Fault | None,
    ) -> tuple[Response | None, bool]:
        """(the answer or ``None`` to drop the connection, whether a limit refused it)."""
        if fault is not None:
            if fault.kind == "slow":
                time.sleep(fault.seconds)
            if fault.kind == "drop":
                return None, False
            injected = self._injected(request, fault)
            if injected is not None:
                return injected, False
        refusal = self._authenticate(request)
        if refusal is not None:
            return _reshaped(refusal, fault), False
        refusal, limit_headers = self._admit(request, route)
        if refusal is not None:
            return refusal.with_headers(limit_headers), True
        response = self._route(request, route, match, allowed)
        if fault is not None and fault.kind == "drop_after":
            return None, False
        if fault is not None and fault.kind == "status_after":
            return self._fault(fault.status, fault.retry_after), False
        return _reshaped(response, fault).with_headers(limit_headers), False

    def _route(
        self,
        request: Request,
        route: Route | None,
        match: re.Match[str] | None,
        allowed: list[str],
    ) -> Response:
        if route is None or match is None:
            return self._not_found(request, allowed)
        try:
            return route.handler(request, match)
        except ApiError as error:
            return error.response
        except Exception:
            traceback.print_exc()
            return self._internal_error()


def _reshaped(response: Response, fault: Fault | None) -> Response:
    """The answer as a ``truncated`` or ``drip`` fault delivers it."""
    if fault is not None and fault.kind == "truncated":
        return replace(response, body=response.body[: len(response.body) // 2])
    if fault is not None and fault.kind == "drip":
        return replace(response, drip_s=max(fault.seconds, 0.001))
    return response


class _Server(ThreadingHTTPServer):
    """Knows its emulator and its open connections, so ``stop`` can cut kept-alive clients."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up is routine here (timeouts, stop); anything else is a bug."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real API clients use
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server_version = self.server.emulator.server_software
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every kept-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def _serve(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._write(text_response(411, "Length Required"))
            self.close_connection = True
            return
        raw_length = self.headers.get("Content-Length") or "0"
        if not raw_length.isdigit() or int(raw_length) > MAX_BODY_BYTES:
            self._write(text_response(413, "Request Entity Too Large"))
            self.close_connection = True
            return
        body = self.rfile.read(int(raw_length))
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=unquote(split.path),
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            target=self.path,
        )
        response = self.server.emulator.handle(request)
        if response is None:
            self.close_connection = True
            return
        self._write(response)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        if response.content_type is not None:
            self.send_header("Content-Type", response.content_type)
        if response.status not in (204, 304):
            self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if response.status in (204, 304):
            return
        if not response.drip_s:
            self.wfile.write(response.body)
            return
        for offset in range(len(response.body)):  # a client that gives up ends this (EPIPE)
            self.wfile.write(response.body[offset : offset + 1])
            self.wfile.flush()
            time.sleep(response.drip_s)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a sync issues hundreds of requests; the emulator's request log records them."""


# --------------------------------------------------------------------------------------------
# As a process
# --------------------------------------------------------------------------------------------


def serve_until_signal(emulator: EmulatorServer) -> None:
    """Serve until SIGTERM/SIGINT, printing the base URL once listening.

    The signals are blocked and then awaited with ``sigwait`` (POSIX; main thread), so no handler
    runs at an arbitrary point and a signal arriving during start-up is not lost.
    """
    signals = {signal.SIGINT, signal.SIGTERM}
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        # The server threads inherit the blocked mask, so the signal is left for sigwait.
        with emulator:
            print(emulator.base_url, flush=True)
            signal.sigwait(signals)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
