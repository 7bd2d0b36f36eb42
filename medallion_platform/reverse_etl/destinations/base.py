"""What the sync engine needs from a destination, whatever API is behind it.

A client sends one batch at a time (at most ``max_batch`` records), waits out the API's rate
limits itself (never exceeding them), retries transient failures, and reports every record's
outcome. It raises :class:`DestinationAuthError` when the credentials are refused (nothing of
that call was applied) and :class:`DestinationError` when a whole call failed for good; a
rejected record is an outcome (``ok=False`` with the destination's error), not an exception.
Credentials never appear in messages, logs or outcomes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medallion_platform.http.core import CallStats


class DestinationRecord(BaseModel):
    """One record to write: its identity (external id or email) and its mapped fields."""

    identity: str
    fields: dict[str, Any]


class RecordOutcome(BaseModel):
    """What the destination did with one record (or one removal)."""

    identity: str
    ok: bool
    destination_id: str | None = None  # the destination's own id, needed later for removals
    created: bool | None = None  # upserts: created (True) or updated (False), when known
    error: str | None = None  # the destination's error, as it gave it


class DestinationStats(CallStats):
    """Counters a run reports as metadata (``rate_limited``: 429s, REQUEST_LIMIT_EXCEEDED)."""


class DestinationError(RuntimeError):
    """A call failed for good (after retries); none of its records may be marked synced.

    ``status`` and ``body`` keep the API's answer when there was one (a whole batch refused
    with 400/409 is split by the client to find the inputs at fault)."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class DestinationAuthError(DestinationError):
    """The destination refused the credentials (expired or wrong token)."""


class DestinationSetupError(DestinationError):
    """The destination account refuses what the sync needs until someone changes a setting
    (Zendesk's bulk user import not enabled, user tagging off): every batch would fail the same
    way, so the run stops at once and the message says what to ask for."""


class Destination(Protocol):
    """A SaaS API the engine syncs to (see the module docstring for the contract)."""

    name: str  # "salesforce", "hubspot", "zendesk"
    max_batch: int
    stats: DestinationStats

    def upsert(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        """Create or update by identity (idempotent: a repeat never duplicates)."""
        ...

    def update(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        """Update records that exist; an identity the destination does not have is an outcome
        with ``ok=False`` and ``error="not found in <destination>"`` (nothing is created)."""
        ...

    def remove(self, records: list[tuple[str, str | None]]) -> list[RecordOutcome]:
        """Delete or archive ``(identity, destination_id)`` records (mirror mode); a missing
        ``destination_id`` is looked up by identity first. Already gone counts as ok."""
        ...

    def missing_fields(self, names: Sequence[str]) -> list[str]:
        """Which of the destination fields ``names`` the account does not have (describe /
        properties / user_fields APIs): a sync checks them before it sends anything."""
        ...

    def close(self) -> None: ...


class FieldSpec(BaseModel):
    """A destination field a mapping may write, and the type the API expects for it."""

    name: str
    type: str = Field(description="string | number | date | boolean | string_list")


# --------------------------------------------------------------------------------------------
# What a destination says about itself (its client's ``info``; the registry collects them)
# --------------------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


class EnvSetting(BaseModel):
    """One environment variable a destination client is configured from (the name, never a
    value): the client argument it fills, whether it is a secret, what to put in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The variable, <DESTINATION>_..., e.g. HUBSPOT_ACCESS_TOKEN.")
    option: str = Field(description="The client's constructor argument it fills.")
    help: str = Field(description="What to put in it, for the error when it is not set.")
    secret: bool = False
    required: bool = True
    address: bool = Field(
        default=False, description="The API's base URL (an emulator's in the demo)."
    )

    @model_validator(mode="after")
    def _name(self) -> EnvSetting:
        if not _ENV_NAME.fullmatch(self.name):
            raise ValueError(f"environment variable name {self.name!r} is not UPPER_CASE")
        return self


class NoOptions(BaseModel):
    """A destination whose syncs take no ``options``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DestinationInfo(BaseModel):
    """A destination described by its own client module: what a sync is checked against (its
    objects, the fields that identify a record, its writable fields, its batch limit, its sync
    ``options``), the environment its client is configured from, and how a sync's object and
    identity field reach the client. The registry, the sync validation, the Dagster resource,
    ``medallion services`` and the emulators all derive from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="As syncs.yaml names it; also the emulator module's name.")
    objects: tuple[str, ...] = Field(min_length=1)
    identity_fields: tuple[str, ...] = Field(
        default=(),
        description="Fields every account can match records by; an org's own are "
        "declared by its syncs (identity: true).",
    )
    fields: Mapping[str, FieldSpec]
    max_batch: int = Field(gt=0, description="Records per API call at most.")
    env: tuple[EnvSetting, ...] = Field(min_length=1)
    # Identity fields the destination matches case-insensitively and stores lower-cased: the
    # identity is lower-cased before the diff, so "A@x.com" -> "a@x.com" is no change.
    lowercase_identity: tuple[str, ...] = ()
    object_option: str | None = Field(
        default=None, description="The client argument that takes the sync's object."
    )
    identity_option: str | None = Field(
        default=None, description="The client argument that takes the sync's identity field."
    )
    options: type[BaseModel] = Field(
        default=NoOptions, description="The model of a sync's options; its fields go to the client."
    )

    @model_validator(mode="after")
    def _consistent(self) -> DestinationInfo:
        prefix = self.env_prefix + "_"
        names = [setting.name for setting in self.env]
        wrong = [name for name in names if not name.startswith(prefix)]
        if wrong:
            raise ValueError(f"{self.name}: environment variables {wrong} must start with {prefix}")
        if len(set(names)) != len(names) or len({s.option for s in self.env}) != len(self.env):
            raise ValueError(f"{self.name}: an environment variable or option is repeated")
        if sum(setting.address for setting in self.env) != 1:
            raise ValueError(f"{self.name}: exactly one environment variable is the address")
        unknown = [
            f for f in (*self.identity_fields, *self.lowercase_identity) if f not in self.fields
        ]
        if unknown:
            raise ValueError(f"{self.name}: identity fields {unknown} are not in fields")
        return self

    @property
    def env_prefix(self) -> str:
        return self.name.upper()

    @property
    def url_env(self) -> str:
        return next(setting.name for setting in self.env if setting.address)

    @property
    def credential_env(self) -> tuple[str, ...]:
        """Every variable but the address: what to renew when credentials are refused."""
        return tuple(setting.name for setting in self.env if not setting.address)

    @property
    def secret_env(self) -> tuple[str, ...]:
        return tuple(setting.name for setting in self.env if setting.secret)

    def client_options(
        self, *, object: str, identity_field: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The client arguments a sync gives: its object and identity field (where the client
        takes them) and its validated ``options``."""
        given: dict[str, Any] = dict(self.options.model_validate(dict(options)))
        if self.object_option is not None:
            given[self.object_option] = object
        if self.identity_option is not None:
            given[self.identity_option] = identity_field
        return given
