"""An HTTP client that retries what is worth retrying and never leaks the credential.

429 and 5xx responses, timeouts, connection errors and unparsable bodies are transient:
retried with exponential backoff and full jitter, honoring ``Retry-After``, within a bounded
number of attempts and total time. Any other 4xx fails at once with the status, the endpoint
and the API's own error text, with every secret value masked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
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
    def __init__(self, status: int, endpoint: str, api_message: str) -> None:
        super().__init__(f"GET {endpoint} failed with HTTP {status}: {api_message}")
        self.status = status
        self.endpoint = endpoint


class RetriesExhausted(RestError):
    """Transient failures went on past the retry policy's attempts or total time."""


class RestClient:
    """GETs JSON from one base URL with the source's auth and retry policy."""

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
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, auth=basic, timeout=retry.timeout_s
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
            raise RestError(f"refusing to follow a next-page URL to another origin: {url}")

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
                response = self._http.get(url, params=params)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                reason = f"{type(exc).__name__}: {self.mask(str(exc)) or 'no response'}"
            else:
                status = response.status_code
                if status in TRANSIENT_STATUS:
                    reason = f"HTTP {status}"
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                elif status >= 400:
                    raise RestHttpError(status, endpoint, self.mask(_api_message(response)))
                else:
                    try:
                        return response.json(), response
                    except ValueError:
                        reason = f"HTTP {status} with a body that is not valid JSON (truncated?)"
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
