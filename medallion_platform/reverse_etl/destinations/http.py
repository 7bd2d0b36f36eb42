"""Plumbing the destination clients share: one paced, retrying, secret-safe HTTP call.

Every request waits for the :class:`~.ratelimit.Pacer` first. Then:

- 401: :class:`DestinationAuthError` at once (nothing of that call was applied);
- "slow down" (429; Salesforce's 403 ``REQUEST_LIMIT_EXCEEDED``): counted in
  ``stats.rate_limited``, the pacer holds every request for ``Retry-After`` (or a growing
  backoff when the API gives no hint), then the call is sent again, for at most
  ``rate_limit_patience_s`` in total; a hard quota (a daily limit) fails at once;
- 408, 5xx, a timeout, a dropped connection or a 2xx body that is not JSON: retried with
  exponential backoff and full jitter, at most ``max_attempts`` attempts. The calls the clients
  retry are idempotent (upserts by identity, archives and deletes by id);
- any other status: :class:`DestinationError` naming the destination, method, path (never the
  query string) and the API's own error text.

Every client method takes any number of records and sends them in calls of at most
``max_batch``, one after another (Zendesk pipelines its jobs); it returns one outcome per input,
in input order. An identity repeated in one list goes into a later call, so its writes apply in
order. If a call fails for good, the method raises: earlier calls of the same list were applied
and are simply sent again on the next run (every write is idempotent).

Credentials only travel in the ``Authorization`` header; every text that leaves a client (errors,
logs, outcomes) goes through :meth:`HttpDestination.mask` first.

Also here: how record values become JSON for a destination (:func:`prepare_fields`, checked
against the destination's ``FIELDS``), batching helpers and the ``from_env`` lookups.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from medallion_platform.reverse_etl.destinations.base import (
    DestinationAuthError,
    DestinationError,
    DestinationRecord,
    DestinationStats,
    FieldSpec,
    RecordOutcome,
)
from medallion_platform.reverse_etl.destinations.ratelimit import Pacer, RateLimit

logger = logging.getLogger("medallion_platform.reverse_etl.destinations")

TRANSIENT_STATUS = frozenset({408, 500, 502, 503, 504})
T = TypeVar("T")


class DestinationConfigError(DestinationError):
    """The destination is not configured (a missing environment variable, a bad URL)."""


class RetryPolicy(BaseModel):
    """How long a client keeps trying one call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=6, ge=1, description="Attempts on transient failures.")
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    rate_limit_patience_s: float = Field(
        default=900.0, ge=0, description="Total wait on 'slow down' answers before giving up."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Per-request read/write timeout.")
    connect_timeout_s: float = Field(default=10.0, gt=0)


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: Any  # parsed JSON; None for an empty body
    headers: httpx.Headers
    sent_at: float  # time.monotonic() when the answered attempt left (after any pacing)
    waited: float  # seconds the answered attempt waited for the pacer


class HttpDestination:
    """The shared half of a destination client: the HTTP client, pacing, retries, stats.

    Subclasses set ``name`` and ``max_batch`` and may override :meth:`_observe` (learn the rate
    limit from headers) and :meth:`_is_rate_limited` (recognise the API's "slow down" answer, or
    raise for a quota that waiting will not fix).
    """

    name = "destination"
    max_batch = 100

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        secrets: Iterable[str],
        pacer: Pacer,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = check_base_url(self.name, base_url)
        self.retry = retry or RetryPolicy()
        self.stats = DestinationStats()
        self.pacer = pacer
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._rng = rng or random.Random()
        self._stats_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Accept": "application/json",
                "User-Agent": "medallion-platform-reverse-etl",
                **headers,
            },
            timeout=httpx.Timeout(self.retry.timeout_s, connect=self.retry.connect_timeout_s),
            follow_redirects=False,  # a redirect must not carry the credential elsewhere
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def _upsert(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        raise NotImplementedError

    def _update_existing(
        self, records: list[DestinationRecord], exists: Callable[[str], bool]
    ) -> list[RecordOutcome]:
        """``update`` for every client: upsert the records the destination already has
        (``exists`` by identity, from the client's own lookup); the others are outcomes
        ``not found in <name>``, in input order, and nothing is created."""
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        present: list[int] = []
        for position, record in enumerate(records):
            if exists(record.identity):
                present.append(position)
            else:
                outcomes[position] = RecordOutcome(
                    identity=record.identity, ok=False, error=f"not found in {self.name}"
                )
        for position, outcome in zip(
            present, self._upsert([records[p] for p in present]), strict=True
        ):
            outcomes[position] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    # -- secrets ----------------------------------------------------------------------------------

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "****")
        return text

    # -- the call ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        accept: Iterable[int] = (200,),
    ) -> ApiResponse:
        """Send one call until it is answered with an accepted status (see the module doc)."""
        accepted = frozenset(accept)
        endpoint = f"{method} {path}"
        attempt = 0
        limited_answers = 0
        limited_wait = 0.0
        content = None if json_body is None else _dumps(json_body)
        headers = {"Content-Type": "application/json"} if content is not None else None
        while True:
            response: httpx.Response | None = None
            with self.pacer.slot() as waited:
                self._count(api_calls=1, waited_seconds=waited)
                sent_at = time.monotonic()
                try:
                    response = self._http.request(
                        method, path, params=params, content=content, headers=headers
                    )
                except httpx.TransportError as error:  # timeouts and connection errors
                    failure = f"{type(error).__name__}: {self.mask(str(error)) or 'no response'}"
                else:
                    limit, remaining = self._observe(response)
                    self.pacer.observe(limit, remaining, sent_at=sent_at)
            retry_after: float | None = None
            if response is not None:
                status = response.status_code
                if status == 401:
                    raise DestinationAuthError(
                        f"{self.name}: {endpoint} was refused with HTTP 401 "
                        f"({self._api_message(response)}): the credentials are wrong, expired or "
                        "revoked; nothing of this call was applied"
                    )
                if self._is_rate_limited(response, endpoint):
                    limited_answers += 1
                    delay = _retry_after(response.headers.get("Retry-After"))
                    if delay is None:
                        delay = self._rate_limit_backoff(limited_answers)
                    if limited_wait + delay > self.retry.rate_limit_patience_s:
                        self._count(rate_limited=1)
                        raise DestinationError(
                            f"{self.name}: {endpoint} still rate limited (HTTP {status}) after "
                            f"{limited_answers} answer(s) and {limited_wait:.0f}s of waiting; "
                            f"gave up (rate_limit_patience_s={self.retry.rate_limit_patience_s:g})"
                        )
                    limited_wait += delay
                    self._count(rate_limited=1, retries=1)
                    logger.info(
                        "%s: %s rate limited (HTTP %s); waiting %.2fs",
                        self.name,
                        endpoint,
                        status,
                        delay,
                    )
                    self.pacer.hold(delay)
                    continue
                if status in accepted:
                    try:
                        body = response.json() if response.content.strip() else None
                    except ValueError:
                        failure = f"HTTP {status} with a body that is not JSON (truncated?)"
                    else:
                        return ApiResponse(status, body, response.headers, sent_at, waited)
                elif status in TRANSIENT_STATUS:
                    failure = f"HTTP {status}: {self._api_message(response)}"
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                else:
                    raise DestinationError(
                        f"{self.name}: {endpoint} failed with HTTP {status}: "
                        f"{self._api_message(response)}"
                    )
            attempt += 1
            if attempt >= self.retry.max_attempts:
                raise DestinationError(
                    f"{self.name}: {endpoint} failed after {attempt} attempt(s); "
                    f"last failure: {failure}"
                )
            delay = self._backoff(attempt, retry_after)
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
            time.sleep(delay)

    # -- hooks ------------------------------------------------------------------------------------

    def _observe(self, response: httpx.Response) -> tuple[RateLimit | None, int | None]:
        """The rate limit a response's headers announce, and the requests left in its window
        (``None``: not said); called for every response."""
        return None, None

    def _is_rate_limited(self, response: httpx.Response, endpoint: str) -> bool:
        """Whether the API said "slow down"; raise :class:`DestinationError` for a quota that
        waiting within ``rate_limit_patience_s`` cannot fix (a daily limit)."""
        return response.status_code == 429

    # -- helpers ----------------------------------------------------------------------------------

    def _count(self, **increments: float) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry.backoff_max_s)
        ceiling = min(self.retry.backoff_max_s, self.retry.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    def _rate_limit_backoff(self, answers: int) -> float:
        """No ``Retry-After``: start at one request's share of the window, double each time,
        never more than a window (half to full of it, so retries spread but never come early)."""
        limit = self.pacer.limit
        window = limit.window_seconds if limit is not None else self.retry.backoff_max_s
        base = limit.window_seconds / limit.max_requests if limit else self.retry.backoff_base_s
        ceiling = min(window, self.retry.backoff_max_s, base * 2 ** (answers - 1))
        return self._rng.uniform(ceiling / 2, ceiling)

    def _api_message(self, response: httpx.Response) -> str:
        return self.mask(api_message(response))


# --------------------------------------------------------------------------------------------
# Error bodies, headers, URLs
# --------------------------------------------------------------------------------------------


def api_message(response: httpx.Response) -> str:
    """The API's own error text, whatever its shape: Salesforce's ``[{errorCode, message}]``,
    HubSpot's ``{category, message}``, Zendesk's ``{error, description}``, or plain text/HTML."""
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


def _retry_after(value: str | None) -> float | None:
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


def check_base_url(destination: str, url: str) -> str:
    """An ``https`` URL (plain ``http`` only to loopback, as for the emulators): the credential
    must never cross a network in clear text."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationConfigError(f"{destination}: base URL must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise DestinationConfigError(
            f"{destination}: base URL must use https (plain http is allowed to loopback only), "
            f"got {url!r}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise DestinationConfigError(
            f"{destination}: base URL must not carry a query, fragment or credentials"
        )
    return url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_env(env: Mapping[str, str], name: str, destination: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise DestinationConfigError(
            f"{destination}: environment variable {name} is not set ({what})"
        )
    return value


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class ValueRejected(ValueError):
    """A record value the destination's field cannot take; the record is not sent."""


def prepare_fields(fields: Mapping[str, Any], specs: Mapping[str, FieldSpec]) -> dict[str, Any]:
    """Record fields as JSON values, each checked against its field's declared type.

    ``None`` stays ``None`` (it clears the field). A value that cannot be sent (a number field
    holding ``"abc"``, NaN, a list in a string field) raises :class:`ValueRejected`: sent, it
    would make Salesforce refuse the whole call, or the body would not be valid JSON.
    """
    prepared: dict[str, Any] = {}
    for name, value in fields.items():
        spec = specs.get(name)
        try:
            prepared[name] = to_json(value) if spec is None else _as_type(spec.type, value)
        except ValueRejected as rejected:
            raise ValueRejected(f"field {name!r}: {rejected}") from None
    return prepared


def to_json(value: Any) -> Any:
    """A Python value (as a warehouse query returns it) as a JSON value."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float | decimal.Decimal):
        return _finite(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    raise ValueRejected(f"{type(value).__name__} values cannot be sent")


def _finite(value: float | decimal.Decimal) -> float | int:
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueRejected(f"{value} is not a finite number")
        return (
            int(value)
            if value == value.to_integral_value() and abs(value) < 2**53
            else float(value)
        )
    if not math.isfinite(value):
        raise ValueRejected(f"{value} is not a finite number")
    return value


def _as_type(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "number":
        if isinstance(value, bool):
            raise ValueRejected(f"expected a number, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float | decimal.Decimal):
            return _finite(value)
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return _finite(float(value))
        raise ValueRejected(f"expected a number, got {value!r}")
    if kind == "date":
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, str):
            try:
                if len(value) == 10:
                    return dt.date.fromisoformat(value).isoformat()
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()
            except ValueError:
                pass
        raise ValueRejected(f"expected a date (YYYY-MM-DD), got {value!r}")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueRejected(f"expected a boolean, got {value!r}")
    if kind == "string_list":
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return list(value)
        raise ValueRejected(f"expected a list of strings, got {value!r}")
    # string
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float | decimal.Decimal | dt.date):
        converted = to_json(value)
        return converted if isinstance(converted, str) else json.dumps(converted)
    raise ValueRejected(f"expected a string, got {type(value).__name__}")


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rounds(items: Sequence[T], key: Callable[[T], Hashable], size: int) -> list[list[int]]:
    """Positions of ``items`` grouped into calls of at most ``size`` in which no ``key``
    repeats (an API refuses or fails a batch naming one record twice); a repeated key goes to a
    later call, so its writes still apply in order."""
    calls: list[list[int]] = []
    pending = list(range(len(items)))
    while pending:
        seen: set[Hashable] = set()
        now: list[int] = []
        later: list[int] = []
        for position in pending:
            k = key(items[position])
            if k in seen:
                later.append(position)
            else:
                seen.add(k)
                now.append(position)
        calls.extend(list(part) for part in chunks(now, size))
        pending = later
    return calls


def not_sent(record: DestinationRecord, reason: str) -> RecordOutcome:
    return RecordOutcome(identity=record.identity, ok=False, error=f"not sent: {reason}")
