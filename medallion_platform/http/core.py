"""The one retrying, paced, secret-safe HTTP call that sources and destinations share.

:class:`HttpCore` sends one request until it is answered with an accepted status:

- a transient failure (408, 429 when not waited out as a rate limit, 5xx, a timeout, a
  dropped connection, a request past its whole-request deadline, an accepted answer whose JSON
  does not parse) is retried with exponential backoff and full jitter, honouring
  ``Retry-After``, for at most ``max_attempts`` attempts and (when set) ``max_total_s``;
- a "slow down" answer (429; a subclass may recognise others, e.g. Salesforce's 403
  ``REQUEST_LIMIT_EXCEEDED``) is waited out when the policy has ``rate_limit_patience_s``:
  the pacer holds every request for ``Retry-After`` (or a growing backoff), for at most that
  long in total, without using up attempts;
- an API's own verdict header (``should_retry_header``, Stripe's ``Stripe-Should-Retry``)
  overrides the status: ``true`` retries (a 409 lock timeout), ``false`` fails at once;
- 401 gives the subclass one chance to renew its credentials (:meth:`HttpCore._reauthenticate`,
  an OAuth refresh) and the call is sent again;
- anything else is handed to :meth:`HttpCore._refuse`, which raises the subclass's error.

Every text that leaves (errors, logs) goes through :meth:`HttpCore.mask`. Chosen over tenacity
(not installed here, and dlt's use of it covers only the attempt loop): the loop's state is
more than attempts and a wait — a pacer shared by threads, a separate patience budget for rate
limits, a deadline timer around each attempt, a one-off credential refresh — and each would be
a callback threaded through tenacity's ``retry_state``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger("medallion_platform.http")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RetryPolicy(BaseModel):
    """How long a client keeps trying one call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=6, ge=1, description="Attempts on transient failures.")
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    max_total_s: float | None = Field(
        default=None, gt=0, description="Give up on transient failures after this long."
    )
    rate_limit_patience_s: float | None = Field(
        default=None,
        ge=0,
        description="Total wait on 'slow down' answers before giving up; unset: a 429 is an "
        "ordinary transient failure (counted as an attempt).",
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Per socket read/write.")
    connect_timeout_s: float | None = Field(default=None, gt=0)
    deadline_s: float | None = Field(
        default=None, gt=0, description="Whole request: connect + headers + body."
    )
    should_retry_header: str | None = Field(
        default=None,
        description="A header whose true/false overrides the status (Stripe-Should-Retry).",
    )


class CallStats(BaseModel):
    """Counters a run reports as metadata."""

    api_calls: int = 0
    retries: int = 0
    rate_limited: int = 0  # responses that said "slow down"
    waited_seconds: float = 0.0  # time spent waiting for the pacer


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any  # parsed JSON; None for an empty body
    response: httpx.Response
    sent_at: float  # time.monotonic() when the answered attempt left (after any pacing)
    waited: float  # seconds the answered attempt waited for the pacer

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers


class Pacing(Protocol):
    """What the core needs of a rate-limit pacer (see ``reverse_etl.destinations.ratelimit``)."""

    def slot(self) -> contextlib.AbstractContextManager[float]: ...

    def hold(self, seconds: float) -> None: ...

    @property
    def window(self) -> tuple[int, float] | None:
        """(requests, seconds) of the limit paced under, if any."""
        ...


class HttpFailure(RuntimeError):
    """Raised by the core itself when a subclass does not say otherwise."""


class RequestDeadline:
    """Ends a request that is still going at its deadline.

    httpx's timeouts bound each socket operation, so a server that sends a byte every second
    holds a request for as long as it likes. This tracks the sockets its client opens (httpx's
    ``trace`` extension) and, when a request's deadline passes, shuts them down from a timer
    thread: the blocked read returns at once and httpx raises. Used by a client that sends one
    request at a time, so its open sockets are that request's (and idle ones, simply reopened).
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


class HttpCore:
    """An httpx client with the retry loop above; subclasses raise their own errors.

    Hooks: :meth:`_observe` (every response: learn a rate limit), :meth:`_is_rate_limited`
    (recognise "slow down", or raise for a quota waiting will not fix), :meth:`_reauthenticate`
    (401: renew the credentials once), :meth:`_refuse` (a final answer: raise),
    :meth:`_exhausted` / :meth:`_impatient` (the error when retries or patience run out). The
    core's own versions raise ``failure`` (a subclass's error class) with the core's messages.
    """

    name = "http"
    # The error the core's own messages (refused, retries or patience exhausted) are raised as.
    failure: ClassVar[Callable[[str], Exception]] = HttpFailure

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        secrets: Iterable[str],
        retry: RetryPolicy,
        auth: httpx.Auth | None = None,
        pacer: Pacing | None = None,
        stats: CallStats | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = "medallion-platform",
        strict_content_type: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.pacer = pacer
        self.stats = stats if stats is not None else CallStats()
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._strict_content_type = strict_content_type
        self._stats_lock = threading.Lock()
        self._deadline = RequestDeadline() if retry.deadline_s is not None else None
        connect = retry.connect_timeout_s or min(retry.timeout_s, retry.deadline_s or math.inf)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Accept": "application/json", "User-Agent": user_agent, **headers},
            auth=auth,
            timeout=httpx.Timeout(retry.timeout_s, connect=connect),
            follow_redirects=False,  # a redirect must not carry the credential elsewhere
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- secrets ----------------------------------------------------------------------------------

    def add_secret(self, secret: str) -> None:
        """A credential obtained later (a refreshed token) is masked too."""
        if secret:
            self._secrets = sorted({*self._secrets, secret}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "****")
        return text

    # -- the call ---------------------------------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        accept: Iterable[int] = (200,),
        endpoint: str | None = None,
    ) -> Answer:
        """Send one call until it is answered with an accepted status (see the module doc).

        ``endpoint`` names the call in messages (default ``METHOD path``, never a query)."""
        accepted = frozenset(accept)
        endpoint = endpoint or f"{method} {httpx.URL(url).path or url}"
        content = None if json_body is None else dumps(json_body)
        sent_headers = dict(headers or {})
        if content is not None:
            sent_headers.setdefault("Content-Type", "application/json")
        started = time.monotonic()
        attempt = 0
        limited_answers = 0
        limited_wait = 0.0
        reauthenticated = False
        while True:
            response: httpx.Response | None = None
            retry_after: float | None = None
            slot = self.pacer.slot() if self.pacer is not None else contextlib.nullcontext(0.0)
            with slot as waited:
                self._count(api_calls=1, waited_seconds=waited)
                sent_at = time.monotonic()
                expired = threading.Event()
                try:
                    with self._limit() as expired:
                        response = self._http.request(
                            method,
                            url,
                            params=params,
                            content=content,
                            headers=sent_headers or None,
                            extensions=self._deadline.extensions if self._deadline else None,
                        )
                except httpx.TransportError as error:  # timeouts and connection errors
                    if expired.is_set():
                        failure = (
                            f"deadline of {self.retry.deadline_s:g}s exceeded "
                            "(connect + headers + body)"
                        )
                    else:
                        failure = (
                            f"{type(error).__name__}: {self.mask(str(error)) or 'no response'}"
                        )
                else:
                    self._observe(response, sent_at)
            if response is not None:
                status = response.status_code
                verdict = self._should_retry(response)
                if status == 401 and not reauthenticated and self._reauthenticate(response):
                    reauthenticated = True
                    continue
                if (
                    verdict is not False
                    and self.retry.rate_limit_patience_s is not None
                    and self._is_rate_limited(response, endpoint)
                ):
                    limited_answers += 1
                    delay = retry_after_seconds(response.headers.get("Retry-After"))
                    if delay is None:
                        delay = self._rate_limit_backoff(limited_answers)
                    if limited_wait + delay > self.retry.rate_limit_patience_s:
                        self._count(rate_limited=1)
                        raise self._impatient(endpoint, status, limited_answers, limited_wait)
                    limited_wait += delay
                    self._count(rate_limited=1, retries=1)
                    logger.info(
                        "%s: %s rate limited (HTTP %s); waiting %.2fs",
                        self.name,
                        endpoint,
                        status,
                        delay,
                    )
                    self._hold(delay)
                    continue
                if status in accepted:
                    content_type = response.headers.get("Content-Type", "")
                    if (
                        self._strict_content_type
                        and content_type
                        and response.content.strip()
                        and not is_json_content_type(content_type)
                    ):
                        self._refuse(response, endpoint, None)
                    try:
                        body = response.json() if response.content.strip() else None
                    except ValueError:
                        failure = f"HTTP {status} with a JSON body that does not parse (truncated?)"
                    else:
                        return Answer(status, body, response, sent_at, waited)
                elif verdict is True or (verdict is None and status in TRANSIENT_STATUS):
                    failure = f"HTTP {status}: {self.api_message(response)}"
                    if verdict is True:
                        failure += f" ({self.retry.should_retry_header}: true)"
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                else:
                    self._refuse(response, endpoint, verdict)
                    raise HttpFailure(  # _refuse must raise; this guards a subclass that forgot
                        self.mask(f"{endpoint} failed with HTTP {status}")
                    )
            attempt += 1
            delay = self._backoff(attempt, retry_after)
            elapsed = time.monotonic() - started
            total = self.retry.max_total_s
            if attempt >= self.retry.max_attempts or (
                total is not None and elapsed + delay > total
            ):
                raise self._exhausted(endpoint, attempt, elapsed, failure)
            self._count(retries=1)
            logger.warning(
                "%s: %s failed (%s); retry %d of %d in %.2fs",
                self.name,
                endpoint,
                failure,
                attempt,
                self.retry.max_attempts - 1,
                delay,
            )
            self._sleep(delay)

    @contextlib.contextmanager
    def _limit(self) -> Iterator[threading.Event]:
        if self._deadline is None or self.retry.deadline_s is None:
            yield threading.Event()
            return
        with self._deadline.limit(self.retry.deadline_s) as expired:
            yield expired

    def _should_retry(self, response: httpx.Response) -> bool | None:
        """The API's own verdict (``should_retry_header``), ``None`` when it gives none."""
        name = self.retry.should_retry_header
        value = (response.headers.get(name) or "").strip().lower() if name else ""
        return {"true": True, "false": False}.get(value)

    # -- hooks ------------------------------------------------------------------------------------

    def _observe(self, response: httpx.Response, sent_at: float) -> None:
        """Every response, while its request still holds its pacer slot."""

    def _is_rate_limited(self, response: httpx.Response, endpoint: str) -> bool:
        """Whether the API said "slow down"; may raise for a quota waiting will not fix."""
        return response.status_code == 429

    def _reauthenticate(self, response: httpx.Response) -> bool:
        """A 401: renew the credentials (an OAuth refresh) and say whether to send again."""
        return False

    def _refuse(self, response: httpx.Response, endpoint: str, verdict: bool | None) -> None:
        """A final answer (or, ``verdict`` False, one the API said not to retry): raise."""
        reason = f" ({self.retry.should_retry_header}: false)" if verdict is False else ""
        raise self.failure(
            f"{self.name}: {endpoint} failed with HTTP {response.status_code}{reason}: "
            f"{self.api_message(response)}"
        )

    def _exhausted(self, endpoint: str, attempts: int, elapsed: float, failure: str) -> Exception:
        return self.failure(
            f"{self.name}: {endpoint} failed after {attempts} attempt(s) in {elapsed:.1f}s; "
            f"last failure: {failure}"
        )

    def _impatient(self, endpoint: str, status: int, answers: int, waited: float) -> Exception:
        return self.failure(
            f"{self.name}: {endpoint} still rate limited (HTTP {status}) after {answers} "
            f"answer(s) and {waited:.0f}s of waiting; gave up "
            f"(rate_limit_patience_s={self.retry.rate_limit_patience_s:g})"
        )

    # -- helpers ----------------------------------------------------------------------------------

    def api_message(self, response: httpx.Response) -> str:
        return self.mask(api_message(response))

    def _count(self, **increments: float) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def _hold(self, seconds: float) -> None:
        if self.pacer is not None:
            self.pacer.hold(seconds)
        else:
            self._sleep(seconds)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry.max_total_s or self.retry.backoff_max_s)
        ceiling = min(self.retry.backoff_max_s, self.retry.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    def _rate_limit_backoff(self, answers: int) -> float:
        """No ``Retry-After``: start at one request's share of the window, double each time,
        never more than a window (half to full of it, so retries spread but never come early)."""
        window = self.pacer.window if self.pacer is not None else None
        if window is not None:
            requests, seconds = window
            span, base = seconds, seconds / requests
        else:
            span, base = self.retry.backoff_max_s, self.retry.backoff_base_s
        ceiling = min(span, self.retry.backoff_max_s, base * 2 ** (answers - 1))
        return self._rng.uniform(ceiling / 2, ceiling)


# --------------------------------------------------------------------------------------------
# Error bodies, headers
# --------------------------------------------------------------------------------------------


def api_message(response: httpx.Response) -> str:
    """The API's own error text, whatever its shape: Stripe's ``{error: {message}}``,
    Salesforce's ``[{errorCode, message}]``, HubSpot's ``{category, message}``, Zendesk's
    ``{error, description}``, or plain text / an HTML page's title."""
    try:
        body = response.json()
    except ValueError:
        text = response.text
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        if title:
            return title.group(1).strip()
        return text[:300].strip() or response.reason_phrase
    return describe_error(body) or response.reason_phrase


def describe_error(body: Any) -> str:
    """``CODE: message`` from one error object (or a list of them)."""
    if isinstance(body, list):
        return "; ".join(describe_error(item) for item in body if item)[:1000]
    if not isinstance(body, dict):
        return str(body)[:300]
    code = body.get("errorCode") or body.get("statusCode") or body.get("category")
    message = body.get("message") or body.get("description") or body.get("details")
    error = body.get("error")
    if isinstance(error, dict):
        return describe_error(error)
    if isinstance(error, str):
        code, message = (error, message) if message else (code, error)
    if code and message:
        return f"{code}: {message}"
    return str(message or code or json.dumps(body)[:300])


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def header_int(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def is_json_content_type(value: str) -> bool:
    """``application/json``, ``text/json`` or a ``+json`` type (``application/problem+json``)."""
    media = value.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
