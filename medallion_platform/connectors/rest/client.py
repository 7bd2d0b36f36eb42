"""An HTTP client that retries what is worth retrying and never leaks the credential.

429 and 5xx responses, timeouts, connection errors, a request past its deadline and a JSON
body that does not parse (truncated) are transient: retried with exponential backoff and full
jitter, honoring ``Retry-After``, within a bounded number of attempts and total time. Any
other 4xx, a redirect (not followed: the credential would travel with it) and a 2xx whose
content type is not JSON (a login or maintenance page) fail at once with the status, the
endpoint, the ``Location`` / content type and the API's own text, with every secret masked.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, SecretStr

from medallion_platform.connectors.rest.spec import AuthSpec, RetryPolicy

TRANSIENT_STATUS = {429, 500, 502, 503, 504}


class Credentials(BaseModel):
    """Secret values, read from the environment by the caller; ``repr`` shows no value."""

    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None

    def secrets(self) -> list[str]:
        values = [s.get_secret_value() for s in (self.token, self.password) if s is not None]
        return [v for v in values if v]


class RestError(RuntimeError):
    """A REST call failed for good; the message is safe to log (secrets masked)."""


class RestHttpError(RestError):
    """The API answered, and retrying would get the same answer."""

    def __init__(
        self, status: int, endpoint: str, api_message: str, *, message: str | None = None
    ) -> None:
        super().__init__(message or f"GET {endpoint} failed with HTTP {status}: {api_message}")
        self.status = status
        self.endpoint = endpoint


class RestRedirect(RestHttpError):
    """A 3xx: the API moved. Not followed, because the credential would go with it."""

    def __init__(self, status: int, endpoint: str, location: str, content_type: str) -> None:
        super().__init__(
            status,
            endpoint,
            location,
            message=f"GET {endpoint} answered HTTP {status} redirecting to {location or '(none)'} "
            f"(content type {content_type or '(none)'}): redirects are not followed, the "
            "credential would travel with them; point the base URL (or the endpoint's path) "
            "at the new location",
        )
        self.location = location
        self.content_type = content_type


class NotJsonResponse(RestHttpError):
    """A 2xx whose content type is not JSON: an HTML login, error or maintenance page."""

    def __init__(self, status: int, endpoint: str, content_type: str, excerpt: str) -> None:
        super().__init__(
            status,
            endpoint,
            excerpt,
            message=f"GET {endpoint} answered HTTP {status} with content type {content_type}, "
            f"not JSON (not retried): {excerpt}",
        )
        self.content_type = content_type


class RetriesExhausted(RestError):
    """Transient failures went on past the retry policy's attempts or total time."""


class RequestDeadline:
    """Ends a request that is still going at its deadline.

    httpx's timeouts bound each socket operation, so a server that sends a byte every second
    holds a request for as long as it likes. This tracks the sockets its client opens (httpx's
    ``trace`` extension) and, when a request's deadline passes, shuts them down from a timer
    thread: the blocked read returns at once and httpx raises. The client sends one request at
    a time, so its open sockets are that request's (and idle ones, which it simply reopens).
    """

    _OPENED = ("connection.connect_tcp.complete", "connection.start_tls.complete")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.extensions = {"trace": self._trace}

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event in self._OPENED:
            sock = info["return_value"].get_extra_info("socket")
            with self._lock:
                self._sockets = [s for s in self._sockets if s.fileno() != -1]
                if sock is not None:
                    self._sockets.append(sock)

    @contextlib.contextmanager
    def limit(self, seconds: float) -> Iterator[threading.Event]:
        """Within the block, a request past ``seconds`` is cut; the event says it was."""
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            with self._lock:
                sockets = list(self._sockets)
            for sock in sockets:
                with contextlib.suppress(OSError):  # already closed
                    # The plain socket's shutdown, also for TLS: it wakes the blocked read
                    # without touching the SSL object the reading thread is using.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            yield expired
        finally:
            timer.cancel()


class RestClient:
    """GETs JSON from one base URL with the source's auth and retry policy.

    One request at a time (see :class:`RequestDeadline`): a sync pages sequentially.
    """

    def __init__(
        self,
        base_url: str,
        auth: AuthSpec,
        credentials: Credentials,
        retry: RetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._secrets = credentials.secrets()
        self._sleep = sleep
        self._rng = rng or random.Random()
        headers = {"Accept": "application/json", "User-Agent": "medallion-platform"}
        basic = None
        if auth.type == "bearer" and credentials.token:
            headers["Authorization"] = f"Bearer {credentials.token.get_secret_value()}"
        elif auth.type == "api_key" and credentials.token:
            headers[auth.header] = credentials.token.get_secret_value()
        elif auth.type == "basic" and credentials.password:
            basic = httpx.BasicAuth(
                credentials.username or "", credentials.password.get_secret_value()
            )
        self._deadline = RequestDeadline()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            auth=basic,
            timeout=httpx.Timeout(retry.timeout_s, connect=min(retry.timeout_s, retry.deadline_s)),
            follow_redirects=False,  # a redirect must not carry the credential elsewhere
        )
        self.calls = 0
        self.retries = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "****")
        return text

    def check_same_origin(self, url: str) -> None:
        """A next-page URL must stay on the base URL's origin: the credential goes with it."""
        base, other = urlsplit(self.base_url), urlsplit(url)
        if other.netloc and (other.scheme, other.netloc) != (base.scheme, base.netloc):
            raise RestError(
                f"refusing to follow a next-page URL to another origin: {self.mask(url)}"
            )

    def get_json(
        self, url: str, params: Mapping[str, Any] | None = None
    ) -> tuple[Any, httpx.Response]:
        """GET ``url`` (a path, or a same-origin URL) and return its parsed JSON body."""
        self.check_same_origin(url)
        endpoint = urlsplit(url).path or url
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self.calls += 1
            retry_after: float | None = None
            try:
                with self._deadline.limit(self.retry.deadline_s) as expired:
                    response = self._http.get(
                        url, params=params, extensions=self._deadline.extensions
                    )
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if expired.is_set():
                    reason = (
                        f"deadline of {self.retry.deadline_s:g}s exceeded "
                        "(connect + headers + body)"
                    )
                else:
                    reason = f"{type(exc).__name__}: {self.mask(str(exc)) or 'no response'}"
            else:
                status = response.status_code
                content_type = response.headers.get("Content-Type", "")
                if status in TRANSIENT_STATUS:
                    reason = f"HTTP {status}"
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                elif 300 <= status < 400:
                    location = response.headers.get("Location", "")
                    raise RestRedirect(status, endpoint, self.mask(location), content_type)
                elif status >= 400:
                    raise RestHttpError(status, endpoint, self.mask(_api_message(response)))
                elif content_type and not is_json_content_type(content_type):
                    excerpt = " ".join(_api_message(response).split())[:200]
                    raise NotJsonResponse(status, endpoint, content_type, self.mask(excerpt))
                else:
                    try:
                        return response.json(), response
                    except ValueError:
                        reason = f"HTTP {status} with a JSON body that does not parse (truncated?)"
            delay = self._backoff(attempt, retry_after)
            elapsed = time.monotonic() - started
            if attempt >= self.retry.max_attempts or elapsed + delay > self.retry.max_total_s:
                raise RetriesExhausted(
                    f"GET {endpoint}: gave up after {attempt} attempt(s) in {elapsed:.1f}s; "
                    f"last failure: {reason}"
                )
            self.retries += 1
            self._sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry.max_total_s)
        ceiling = min(self.retry.backoff_max_s, self.retry.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)


def is_json_content_type(value: str) -> bool:
    """``application/json``, ``text/json`` or a ``+json`` type (``application/problem+json``)."""
    media = value.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _api_message(response: httpx.Response) -> str:
    """The API's own error text (Stripe's ``error.message``, else the start of the body)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
    return str(body)[:300]
