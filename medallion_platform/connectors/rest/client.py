"""An HTTP client that retries what is worth retrying and never leaks the credential.

The retry loop is the shared one (:mod:`medallion_platform.http.core`): 429 and 5xx
responses, timeouts, connection errors, a request past its deadline and a JSON body that does
not parse (truncated) are transient: retried with exponential backoff and full jitter,
honoring ``Retry-After`` (and ``Stripe-Should-Retry`` when the source declares it), within a
bounded number of attempts and total time. Any other 4xx, a redirect (not followed: the
credential would travel with it) and a 2xx whose content type is not JSON (a login or
maintenance page) fail at once with the status, the endpoint, the ``Location`` / content type
and the API's own text, with every secret masked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, SecretStr

from medallion_platform.connectors.rest.spec import AuthSpec, RetryPolicy
from medallion_platform.http.core import (
    HttpCore,
    RequestDeadline,
    is_json_content_type,
)

__all__ = [
    "Credentials",
    "NotJsonResponse",
    "RequestDeadline",
    "RestClient",
    "RestError",
    "RestHttpError",
    "RestRedirect",
    "RetriesExhausted",
    "is_json_content_type",
]


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


class RestClient(HttpCore):
    """GETs JSON from one base URL with the source's auth and retry policy.

    One request at a time (see :class:`RequestDeadline`): a sync pages sequentially.
    """

    name = "rest"

    def __init__(
        self,
        base_url: str,
        auth: AuthSpec,
        credentials: Credentials,
        retry: RetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``headers``: fixed ones the source declares (an API version pin)."""
        headers = dict(headers or {})
        basic = None
        if auth.type == "bearer" and credentials.token:
            headers["Authorization"] = f"Bearer {credentials.token.get_secret_value()}"
        elif auth.type == "api_key" and credentials.token:
            headers[auth.header] = credentials.token.get_secret_value()
        elif auth.type == "basic" and credentials.password:
            basic = httpx.BasicAuth(
                credentials.username or "", credentials.password.get_secret_value()
            )
        super().__init__(
            base_url,
            headers=headers,
            secrets=credentials.secrets(),
            retry=retry,
            auth=basic,
            rng=rng,
            sleep=sleep,
            strict_content_type=True,
        )

    @property
    def calls(self) -> int:
        return self.stats.api_calls

    @property
    def retries(self) -> int:
        return self.stats.retries

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
        answer = self.send("GET", url, params=params, endpoint=urlsplit(url).path or url)
        return answer.body, answer.response

    # -- the core's hooks -------------------------------------------------------------------------

    def _refuse(self, response: httpx.Response, endpoint: str, verdict: bool | None) -> None:
        status = response.status_code
        content_type = response.headers.get("Content-Type", "")
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            raise RestRedirect(status, endpoint, self.mask(location), content_type)
        if status < 300:
            excerpt = " ".join(response.text.split())[:200]
            raise NotJsonResponse(status, endpoint, content_type, self.mask(excerpt))
        message = self.api_message(response)
        if verdict is False:
            message += f" ({self.retry.should_retry_header}: false, not retried)"
        raise RestHttpError(status, endpoint, message)

    def _exhausted(self, endpoint: str, attempts: int, elapsed: float, failure: str) -> Exception:
        return RetriesExhausted(
            f"GET {endpoint}: gave up after {attempts} attempt(s) in {elapsed:.1f}s; "
            f"last failure: {failure}"
        )
