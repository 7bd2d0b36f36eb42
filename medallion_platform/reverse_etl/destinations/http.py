"""Plumbing the destination clients share: one paced, retrying, secret-safe HTTP call.

The call is the shared core's (:mod:`medallion_platform.http.core`); here it is set for
destinations. Every request waits for the :class:`~.ratelimit.Pacer` first. Then:

- 401: one chance for the client to renew its credentials (Salesforce's OAuth refresh), else
  :class:`DestinationAuthError` at once (nothing of that call was applied);
- "slow down" (429; Salesforce's 403 ``REQUEST_LIMIT_EXCEEDED``): counted in
  ``stats.rate_limited``, the pacer holds every request for ``Retry-After`` (or a growing
  backoff when the API gives no hint), then the call is sent again, for at most
  ``rate_limit_patience_s`` in total; a hard quota (a daily limit) fails at once;
- 408, 5xx, a timeout, a dropped connection or a 2xx body that is not JSON: retried with
  exponential backoff and full jitter, at most ``max_attempts`` attempts. The calls the clients
  retry are idempotent (upserts by identity, archives and deletes by id);
- any other status: :class:`DestinationError` naming the destination, method, path (never the
  query string) and the API's own error text (``.status`` and ``.body`` keep the answer, so a
  client can split a batch the API refused as a whole).

Every client method takes any number of records and sends them in calls of at most
``max_batch``, one after another (Zendesk pipelines its jobs); it returns one outcome per input,
in input order. An identity repeated in one list goes into a later call, so its writes apply in
order. If a call fails for good, the method raises: earlier calls of the same list were applied
and are simply sent again on the next run (every write is idempotent).

Credentials only travel in the ``Authorization`` header; every text that leaves a client (errors,
logs, outcomes) goes through :meth:`HttpDestination.mask` first.

Also here: how record values become JSON for a destination (:func:`prepare_fields`, checked
against the destination's ``FIELDS``), batching helpers and the settings from the environment
(:func:`settings_from_env`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import logging
import math
import os
import random
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from medallion_platform.http.core import Answer, HttpCore, api_message, describe_error, header_int
from medallion_platform.http.core import RetryPolicy as CoreRetryPolicy
from medallion_platform.reverse_etl.destinations.base import (
    DestinationAuthError,
    DestinationError,
    DestinationInfo,
    DestinationRecord,
    DestinationStats,
    FieldSpec,
    RecordOutcome,
)
from medallion_platform.reverse_etl.destinations.ratelimit import Pacer, RateLimit

__all__ = [
    "ApiResponse",
    "DestinationConfigError",
    "HttpDestination",
    "RetryPolicy",
    "ValueRejected",
    "api_message",
    "chunks",
    "describe_error",
    "header_int",
    "not_sent",
    "prepare_fields",
    "rounds",
    "settings_from_env",
]

logger = logging.getLogger("medallion_platform.reverse_etl.destinations")

T = TypeVar("T")
ApiResponse = Answer


class DestinationConfigError(DestinationError):
    """The destination is not configured (a missing environment variable, a bad URL)."""


class RetryPolicy(CoreRetryPolicy):
    """How long a client keeps trying one call (the core's policy, destination defaults)."""

    rate_limit_patience_s: float | None = Field(
        default=900.0, ge=0, description="Total wait on 'slow down' answers before giving up."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Per-request read/write timeout.")
    connect_timeout_s: float | None = Field(default=10.0, gt=0)


class HttpDestination(HttpCore):
    """The shared half of a destination client: the HTTP client, pacing, retries, stats.

    Subclasses declare ``info`` (their :class:`~.base.DestinationInfo`: ``name`` and
    ``max_batch`` come from it) and may override :meth:`_announced_limit` (learn the rate limit
    from headers), :meth:`_is_rate_limited` (recognise the API's "slow down" answer, or raise
    for a quota that waiting will not fix) and :meth:`_reauthenticate`.
    """

    info: ClassVar[DestinationInfo]
    name = "destination"
    failure = DestinationError
    max_batch = 100
    stats: DestinationStats
    pacer: Pacer

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "info" in cls.__dict__:
            cls.name = cls.info.name
            cls.max_batch = cls.info.max_batch

    @classmethod
    def from_env(
        cls,
        env_prefix: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Self:
        """The client configured from the environment variables ``info.env`` names (with
        ``env_prefix``, e.g. ``SF_SANDBOX``, in place of the destination's: a second account);
        ``options`` go to the client. A required variable that is not set is a
        :class:`DestinationConfigError` naming it (never its value); so does an error of the
        client's own checks, with the prefixed names."""
        settings = settings_from_env(cls.info, environ, env_prefix)
        try:
            return cls(**settings, **options)
        except DestinationConfigError as exc:
            if env_prefix is None:
                raise
            message = str(exc)
            for setting in cls.info.env:
                prefixed = _env_name(cls.info, setting.name, env_prefix)
                message = re.sub(rf"\b{re.escape(setting.name)}\b", prefixed, message)
            raise DestinationConfigError(message) from None

    @classmethod
    def sync_arguments(
        cls, arguments: dict[str, Any], mapping: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The client arguments a sync gives (object, identity field, ``options``), adjusted
        to its ``mapping`` where the destination needs to (Zendesk: the tags it manages); a
        ``ValueError`` for a mapping the client cannot take as configured."""
        return arguments

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
        super().__init__(
            check_base_url(self.name, base_url),
            headers=headers,
            secrets=secrets,
            retry=retry or RetryPolicy(),
            pacer=pacer,
            stats=DestinationStats(),
            rng=rng,
            user_agent="medallion-platform-reverse-etl",
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    # -- the call ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        accept: Iterable[int] = (200,),
        headers: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        """Send one call until it is answered with an accepted status (see the module doc)."""
        return self.send(
            method,
            path,
            params=params,
            json_body=json_body,
            accept=accept,
            headers=headers,
            endpoint=f"{method} {path}",
        )

    # -- hooks ------------------------------------------------------------------------------------

    def _announced_limit(self, response: httpx.Response) -> tuple[RateLimit | None, int | None]:
        """The rate limit a response's headers announce, and the requests left in its window
        (``None``: not said); called for every response."""
        return None, None

    def _observe(self, response: httpx.Response, sent_at: float) -> None:
        limit, remaining = self._announced_limit(response)
        self.pacer.observe(limit, remaining, sent_at=sent_at)

    def _refuse(self, response: httpx.Response, endpoint: str, verdict: bool | None) -> None:
        status = response.status_code
        if status == 401:
            raise DestinationAuthError(
                f"{self.name}: {endpoint} was refused with HTTP 401 "
                f"({self.api_message(response)}): the credentials are wrong, expired or "
                "revoked; nothing of this call was applied"
            )
        raise DestinationError(
            f"{self.name}: {endpoint} failed with HTTP {status}: {self.api_message(response)}",
            status=status,
            body=_json_or_none(response),
        )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# URLs and the environment
# --------------------------------------------------------------------------------------------


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


def _env_name(info: DestinationInfo, name: str, env_prefix: str | None) -> str:
    """``name`` (``SALESFORCE_ACCESS_TOKEN``) under ``env_prefix`` (``SF_SANDBOX``) if given."""
    return name if env_prefix is None else env_prefix + name.removeprefix(info.env_prefix)


def settings_from_env(
    info: DestinationInfo, environ: Mapping[str, str] | None = None, env_prefix: str | None = None
) -> dict[str, str]:
    """The client arguments ``info.env`` fills, from ``environ`` (default: the process
    environment); optional variables that are not set are left out."""
    env = os.environ if environ is None else environ
    settings: dict[str, str] = {}
    for setting in info.env:
        name = _env_name(info, setting.name, env_prefix)
        value = env.get(name, "").strip()
        if value:
            settings[setting.option] = value
        elif setting.required:
            raise DestinationConfigError(
                f"{info.name}: environment variable {name} is not set ({setting.help})"
            )
    return settings


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
