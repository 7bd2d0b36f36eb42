"""What the sync engine needs from a destination, whatever API is behind it.

A client sends one batch at a time (at most ``max_batch`` records), waits out the API's rate
limits itself (never exceeding them), retries transient failures, and reports every record's
outcome. It raises :class:`DestinationAuthError` when the credentials are refused (nothing of
that call was applied) and :class:`DestinationError` when a whole call failed for good; a
rejected record is an outcome (``ok=False`` with the destination's error), not an exception.
Credentials never appear in messages, logs or outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, Field

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
