"""A REST source and its endpoints, as declared in ``config/rest_sources.yaml``.

Modelled on dlt's REST API source: the endpoint says how to page, where the records are,
what identifies them and which field is the incremental cursor; no code per API.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medallion_platform.connectors.bronze import LINEAGE_COLUMNS
from medallion_platform.http.core import RetryPolicy as CoreRetryPolicy
from medallion_platform.warehouse.identifiers import validate_identifier

_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV.match(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


class AuthSpec(BaseModel):
    """Where the credentials come from: names of environment variables, never values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["bearer", "basic", "api_key", "none"] = "bearer"
    token_env: str | None = Field(default=None, description="Bearer token or API key.")
    username_env: str | None = None
    password_env: str | None = None
    header: str = Field(default="X-API-Key", description="Header that carries an API key.")

    @field_validator("token_env", "username_env", "password_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        return _env_name(value)

    @model_validator(mode="after")
    def _complete(self) -> AuthSpec:
        if self.type in ("bearer", "api_key") and not self.token_env:
            raise ValueError(f"auth type {self.type} needs token_env")
        if self.type == "basic" and not (self.username_env and self.password_env):
            raise ValueError("auth type basic needs username_env and password_env")
        return self


class PaginationSpec(BaseModel):
    """How to get the next page, and when to stop (dlt's paginators' rules).

    - ``cursor``: send ``cursor_param`` = the body's ``cursor_path`` value, or else the last
      record's ``cursor_record_field`` (Stripe's ``starting_after``); go on while there is a
      cursor (an empty page has none). A declared ``has_more_path`` must be in every page and
      ``false`` ends the walk; nothing is assumed when it is not declared.
    - ``next_url``: follow the URL at ``next_url_path`` in the body while there is one.
    - ``link_header``: follow ``Link: <…>; rel="next"`` (GitHub style) while there is one.
    - ``page_number``: ``page_param`` = ``start_page``, +1, … until an empty page, or until
      ``total_path`` (the number of pages) is reached.
    - ``offset``: ``offset_param`` = 0, + the records received, … until an empty page, or until
      ``total_path`` (the number of records) is reached.

    Next URLs are resolved against the URL of the request that returned them. A short page
    never ends a walk: APIs cap page sizes below what was asked. For ``page_number`` and
    ``offset``, ``has_more_path`` may be declared too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["cursor", "next_url", "link_header", "page_number", "offset"]
    cursor_param: str = "starting_after"
    cursor_record_field: str | None = "id"
    cursor_path: str | None = None
    has_more_path: str | None = Field(
        default=None, description="Dotted path to a boolean 'more pages' flag; required if set."
    )
    next_url_path: str = "next"
    page_param: str = "page"
    offset_param: str = "offset"
    start_page: int = 1
    total_path: str | None = Field(
        default=None,
        description="Dotted path to the total: pages (page_number) or records (offset).",
    )

    @model_validator(mode="after")
    def _applies(self) -> PaginationSpec:
        ranged = self.type in ("page_number", "offset")
        if self.total_path and not ranged:
            raise ValueError(f"total_path applies to page_number and offset, not {self.type}")
        if self.has_more_path and self.type in ("next_url", "link_header"):
            raise ValueError(f"has_more_path does not apply to {self.type}: the link is the rule")
        if self.type == "cursor" and not (self.cursor_path or self.cursor_record_field):
            raise ValueError("cursor pagination needs cursor_path or cursor_record_field")
        return self


class IncrementalSpec(BaseModel):
    """Only records whose ``cursor_field`` is at or after the committed high-water mark
    (minus ``lookback_seconds``, for late arrivals) are requested, via ``param``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cursor_field: str = "created"
    param: str = "created[gte]"
    lookback_seconds: int = Field(default=0, ge=0)
    initial_value: int = Field(default=0, description="First run starts here (epoch seconds).")


REST_LINEAGE = {"_raw": "JSON"}
"""A REST bronze table's own column: each record's JSON (see :mod:`.rows`)."""
_BRONZE_OWN_COLUMNS = frozenset({*LINEAGE_COLUMNS, *REST_LINEAGE})
"""What a REST bronze table has besides a change-log stamp."""


class ChangesSpec(BaseModel):
    """Where changes to records already read are listed (Stripe's ``/v1/events``).

    A list filtered on ``created`` never shows a record again once it is older than the
    lookback: a charge refunded or captured two days later would keep its first version. The
    change log lists such changes; each entry holds the record's new version at
    ``record_field``. It is walked after the endpoint (same pagination), from the newest
    change seen (``cursor_field``, sent as ``param``); the record lands in the endpoint's
    bronze table stamped with the change's time in ``version_field``, so a contract can order
    versions by it (``latest_by``) whatever order pages arrive in. A first sync reads every
    record's current version, so its change log starts at the newest change then.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="The change log, e.g. /v1/events.")
    params: dict[str, str] = Field(default_factory=dict, description="e.g. type: charge.*")
    record_path: str = "data"
    record_field: str = Field(default="data.object", description="The record in a change.")
    cursor_field: str = "created"
    param: str = "created[gte]"
    lookback_seconds: int = Field(default=0, ge=0)
    version_field: str = Field(
        default="_changed_at",
        description="The bronze column (text) each landed change is stamped with its time in.",
    )

    @field_validator("version_field")
    @classmethod
    def _version_field(cls, value: str) -> str:
        if value in _BRONZE_OWN_COLUMNS:
            raise ValueError(f"version_field {value!r} is a column bronze already has")
        return validate_identifier(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or "://" in value:
            raise ValueError(f"path {value!r} must be a path on the source's base URL")
        return value


class RetryPolicy(CoreRetryPolicy):
    """Exponential backoff with full jitter on 429 / 5xx / timeouts, bounded in total.

    ``timeout_s`` bounds each socket operation (httpx's timeout), so a server that sends a
    byte now and then passes it forever; ``deadline_s`` bounds the whole request (connect,
    headers and body) and a request past it is a transient failure like a timeout.
    ``should_retry_header`` names the API's own verdict (``Stripe-Should-Retry``): ``true``
    retries whatever the status, ``false`` fails at once.
    """

    max_attempts: int = Field(default=8, ge=1)
    max_total_s: float | None = Field(default=300.0, gt=0, description="Give up after this long.")
    timeout_s: float = Field(default=30.0, gt=0, description="Per socket read/write/connect.")
    deadline_s: float | None = Field(
        default=120.0, gt=0, description="Whole request: connect + headers + body."
    )


class SyncBudget(BaseModel):
    """How much one sync may read before it stops, commits and leaves the rest to the next run.

    A runaway API (a cursor that never ends, a backfill far larger than expected) then costs
    at most this much per run; the stop is clean: the pages read are committed with the
    position to resume from, and the run's metadata says the budget was reached.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pages: int = Field(default=10_000, ge=1, description="Pages per sync.")
    max_seconds: float = Field(
        default=600.0, gt=0, description="Seconds per sync; checked after each page."
    )


class RestEndpoint(BaseModel):
    """One list endpoint; its records land in ``bronze.<source>_<name>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    path: str
    record_path: str = Field(
        default="data", description="Dotted path to the record list; empty for a bare array."
    )
    primary_key: str = "id"
    pagination: PaginationSpec
    page_size: int = Field(default=100, ge=1)
    page_size_param: str = "limit"
    pages_per_commit: int = Field(
        default=50,
        ge=1,
        description="Pages per warehouse transaction: fewer commits, coarser resume points. "
        "Each commit costs about 25 ms of warehouse bookkeeping (batch id, sync state, COMMIT): "
        "at 10 pages of 100 records that was a sixth of a sync's CPU; a crash re-reads at most "
        "this many pages (never lands one twice). The next commit's pages are fetched while "
        "one commits, so a sync holds up to twice this many pages in memory.",
    )
    params: dict[str, str] = Field(default_factory=dict)
    budget: SyncBudget | None = Field(
        default=None, description="Overrides the source's budget, field by field."
    )
    incremental: IncrementalSpec | None = None
    changes: ChangesSpec | None = Field(
        default=None, description="A change log that re-lists records changed after creation."
    )
    contract: str | None = Field(default=None, description="Silver contract for its records.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or "://" in value:
            raise ValueError(f"path {value!r} must be a path on the source's base URL")
        return value

    def changes_feed(self) -> RestEndpoint | None:
        """The change log walked as an endpoint of its own (same pagination and page size)."""
        changes = self.changes
        if changes is None:
            return None
        return self.model_copy(
            update={
                "path": changes.path,
                "record_path": changes.record_path,
                "params": dict(changes.params),
                "incremental": IncrementalSpec(
                    cursor_field=changes.cursor_field,
                    param=changes.param,
                    lookback_seconds=changes.lookback_seconds,
                ),
                "changes": None,
                "budget": None,
            }
        )


class RestSource(BaseModel):
    """A REST API (one base URL, one credential) and the endpoints read from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    base_url_env: str = Field(description="Environment variable holding the base URL.")
    auth: AuthSpec = Field(default_factory=AuthSpec)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Fixed request headers, e.g. an API version pin (Stripe-Version).",
    )
    budget: SyncBudget = Field(default_factory=SyncBudget, description="Per endpoint sync.")
    endpoints: list[RestEndpoint] = Field(min_length=1)
    schedule: str = Field(default="*/15 * * * *", description="Cron of the source's job.")
    freshness_minutes: float = Field(default=60, gt=0)
    owner: str = "team:data-platform"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("base_url_env")
    @classmethod
    def _env(cls, value: str) -> str:
        return _env_name(value) or value

    def bronze_table(self, endpoint: RestEndpoint) -> str:
        return validate_identifier(f"{self.name}_{endpoint.name}")

    def budget_for(self, endpoint: RestEndpoint) -> SyncBudget:
        """The source's budget with what the endpoint declares itself on top."""
        if endpoint.budget is None:
            return self.budget
        return self.budget.model_copy(update=endpoint.budget.model_dump(exclude_unset=True))
