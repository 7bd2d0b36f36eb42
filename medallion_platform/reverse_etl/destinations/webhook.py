"""A generic webhook: records POSTed as JSON batches to one URL, with a bearer token.

For a receiver of your own (an internal service, an iPaaS, a serverless function): every call
is ``POST {WEBHOOK_URL}{options.path}`` with ``Authorization: Bearer {WEBHOOK_TOKEN}`` and::

    {"object": "customers", "action": "upsert" | "update" | "delete",
     "identity_field": "customer_id",
     "records": [{"customer_id": "C00001", "email": "...", ...}, ...]}

at most 500 records a call, each identity once (a repeated one goes into a later call). The
receiver answers 2xx, optionally with ``{"results": [{"index": i, "ok": false, "error": "..."}]}``
naming the records it rejected (the others were applied); ``update`` means "only if you have
it", and a receiver that does not have it answers ``ok: false`` for it. Every action must be
idempotent: a batch whose answer was lost is sent again.

Failures: 408, 429 (waited out for ``Retry-After``), 5xx and dropped connections are retried
by the shared HTTP core; 401/403 raise :class:`~.base.DestinationAuthError`; any other 4xx
rejects the batch's records (each an outcome ``ok=False`` with the receiver's message, sent
again at the next run), since the receiver read and refused exactly those records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medallion_platform.reverse_etl.destinations.base import (
    DestinationAuthError,
    DestinationError,
    DestinationInfo,
    DestinationRecord,
    EnvSetting,
    FieldSpec,
    RecordOutcome,
)
from medallion_platform.reverse_etl.destinations.http import (
    DestinationConfigError,
    HttpDestination,
    RetryPolicy,
    ValueRejected,
    not_sent,
    prepare_fields,
    rounds,
)
from medallion_platform.reverse_etl.destinations.ratelimit import Pacer, RateLimit

MAX_RECORDS = 500
FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec(name="customer_id", type="string"),
        FieldSpec(name="email", type="string"),
        FieldSpec(name="first_name", type="string"),
        FieldSpec(name="last_name", type="string"),
        FieldSpec(name="segment", type="string"),
        FieldSpec(name="lifetime_value", type="number"),
        FieldSpec(name="churn_risk", type="number"),
        FieldSpec(name="last_order_date", type="date"),
        FieldSpec(name="tags", type="string_list"),
    )
}
"""The customer record a receiver gets (names as the warehouse has them)."""


class WebhookOptions(BaseModel):
    """``options`` of a webhook sync."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(
        default="", description="Appended to WEBHOOK_URL: one receiver, an endpoint per sync."
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if value and (not value.startswith("/") or any(c in value for c in "?#")):
            raise ValueError(f"path {value!r}: start with / and give no query or fragment")
        return value


class WebhookDestination(HttpDestination):
    """Records POSTed in JSON batches to a receiver of your own (see the module docstring)."""

    info = DestinationInfo(
        name="webhook",
        objects=("customers",),
        identity_fields=("customer_id",),
        fields=FIELDS,
        max_batch=MAX_RECORDS,
        env=(
            EnvSetting(
                name="WEBHOOK_URL",
                option="url",
                help="where batches are POSTed, e.g. https://hooks.example.com/acme",
                address=True,
            ),
            EnvSetting(
                name="WEBHOOK_TOKEN",
                option="token",
                help="the bearer token the receiver expects",
                secret=True,
            ),
        ),
        object_option="object_name",
        identity_option="identity_field",
        options=WebhookOptions,
    )

    def __init__(
        self,
        url: str,
        token: str,
        *,
        object_name: str = "customers",
        identity_field: str = "customer_id",
        path: str = "",
        fields: Mapping[str, FieldSpec] | None = None,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not token:
            raise DestinationConfigError("webhook: token is empty")
        self.object_name = object_name
        self.identity_field = identity_field
        self.path = WebhookOptions(path=path).path
        self.fields = {**FIELDS, **(fields or {})}  # a sync may declare more
        super().__init__(
            url,
            headers={"Authorization": f"Bearer {token}"},
            secrets=[token],
            pacer=Pacer(rate_limit),
            retry=retry,
        )

    # -- Destination ----------------------------------------------------------------------------

    def upsert(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        return self._send("upsert", records)

    def update(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        return self._send("update", records)

    def remove(self, records: list[tuple[str, str | None]]) -> list[RecordOutcome]:
        gone = [DestinationRecord(identity=identity, fields={}) for identity, _ in records]
        return self._send("delete", gone)

    # -- the calls --------------------------------------------------------------------------------

    def _send(self, action: str, records: Sequence[DestinationRecord]) -> list[RecordOutcome]:
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        bodies: dict[int, dict[str, Any]] = {}
        for position, record in enumerate(records):
            if not record.identity.strip():
                outcomes[position] = not_sent(record, "the identity is empty")
                continue
            try:
                values = prepare_fields(record.fields, self.fields)
            except ValueRejected as rejected:
                outcomes[position] = not_sent(record, str(rejected))
                continue
            bodies[position] = {**values, self.identity_field: record.identity}
        sendable = list(bodies)
        for call in rounds(sendable, lambda p: records[p].identity, self.max_batch):
            positions = [sendable[i] for i in call]
            for position, outcome in zip(
                positions, self._post(action, records, positions, bodies), strict=True
            ):
                outcomes[position] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _post(
        self,
        action: str,
        records: Sequence[DestinationRecord],
        positions: list[int],
        bodies: Mapping[int, dict[str, Any]],
    ) -> list[RecordOutcome]:
        body = {
            "object": self.object_name,
            "action": action,
            "identity_field": self.identity_field,
            "records": [bodies[p] for p in positions],
        }
        try:
            answer = self._call(
                "POST", self.path or "/", json_body=body, accept=(200, 201, 202, 204)
            )
        except DestinationAuthError:
            raise
        except DestinationError as refused:
            if refused.status is None or not 400 <= refused.status < 500:
                raise  # retries ran out: the whole call failed, nothing is known
            return [
                RecordOutcome(identity=records[p].identity, ok=False, error=str(refused))
                for p in positions
            ]
        results = answer.body.get("results") if isinstance(answer.body, dict) else None
        if results is None:  # no per-record results: the receiver applied the whole batch
            return [RecordOutcome(identity=records[p].identity, ok=True) for p in positions]
        by_index = {
            result.get("index"): result
            for result in results
            if isinstance(result, dict) and isinstance(result.get("index"), int)
        }
        outcomes = []
        for i, position in enumerate(positions):
            result = by_index.get(i)
            identity = records[position].identity
            if result is None:
                outcomes.append(
                    RecordOutcome(
                        identity=identity, ok=False, error="webhook returned no result for it"
                    )
                )
            elif result.get("ok") is False:
                error = self.mask(str(result.get("error") or "rejected by the receiver"))
                outcomes.append(RecordOutcome(identity=identity, ok=False, error=error))
            else:
                created = result.get("created")
                outcomes.append(
                    RecordOutcome(
                        identity=identity,
                        ok=True,
                        destination_id=str(result["id"]) if result.get("id") else None,
                        created=created if isinstance(created, bool) else None,
                    )
                )
        return outcomes

    # -- hooks ----------------------------------------------------------------------------------

    def _refuse(self, response: httpx.Response, endpoint: str, verdict: bool | None) -> None:
        if response.status_code == 403:
            raise DestinationAuthError(
                f"webhook: {endpoint} was refused with HTTP 403 ({self.api_message(response)}): "
                "the token is not allowed to post here; nothing of this call was applied"
            )
        super()._refuse(response, endpoint, verdict)
