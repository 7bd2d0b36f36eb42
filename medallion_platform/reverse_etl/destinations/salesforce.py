"""Salesforce: upsert sObject records by external id with the sObject Collections API.

- upsert: ``PATCH /services/data/vXX.X/composite/sobjects/{sObject}/{externalIdField}`` with
  ``allOrNone: false``, at most 200 records a call; one ``{id, success, errors, created}`` result
  per record, in order.
- update (update-only): each identity is looked up first with
  ``GET /services/data/vXX.X/sobjects/{sObject}/{externalIdField}/{value}`` (404: not in
  Salesforce, so not sent); the found ones are upserted. One call per record: SOQL
  (``/query``), which would find 200 a call, is not offered by the emulator the client is tested
  against.
- remove: ``DELETE /services/data/vXX.X/composite/sobjects?ids=...&allOrNone=false``, at most
  200 ids a call; an identity without its Salesforce id is looked up as above first. Already
  deleted (``ENTITY_IS_DELETED``) or unknown (``INVALID_CROSS_REFERENCE_KEY``) counts as gone.

Salesforce sends no 429: its "slow down" is 403 ``REQUEST_LIMIT_EXCEEDED`` (a concurrency or
rate limit, retried after a backoff) and, once the org's daily request budget is spent
(``Sforce-Limit-Info: api-usage=N/N``), a 403 that waiting will not fix, so it fails at once.
There is no per-window limit to learn, so requests are paced only when ``rate_limit`` is given.
401 ``INVALID_SESSION_ID`` raises :class:`DestinationAuthError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from medallion_platform.reverse_etl.destinations.base import (
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
    describe_error,
    not_sent,
    prepare_fields,
    rounds,
)
from medallion_platform.reverse_etl.destinations.ratelimit import Pacer, RateLimit

MAX_RECORDS = 200
FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec(name="Acme_Customer_Id__c", type="string"),
        FieldSpec(name="Email", type="string"),
        FieldSpec(name="FirstName", type="string"),
        FieldSpec(name="LastName", type="string"),
        FieldSpec(name="LTV__c", type="number"),
        FieldSpec(name="Churn_Risk__c", type="number"),
        FieldSpec(name="Segment__c", type="string"),
        FieldSpec(name="Last_Order_Date__c", type="date"),
    )
}
"""The demo Contact's writable fields (Email is Salesforce's ``email`` type: a string)."""

_GONE = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class SalesforceDestination(HttpDestination):
    """Contacts (or any sObject) upserted by an external id field."""

    info = DestinationInfo(
        name="salesforce",
        objects=("Contact",),
        identity_fields=("Acme_Customer_Id__c",),  # external id fields (upsert by them)
        fields=FIELDS,
        max_batch=MAX_RECORDS,
        env=(
            EnvSetting(
                name="SALESFORCE_INSTANCE_URL",
                option="instance_url",
                help="the org's instance URL",
                address=True,
            ),
            EnvSetting(
                name="SALESFORCE_ACCESS_TOKEN",
                option="access_token",
                help="an OAuth access token",
                secret=True,
            ),
        ),
        object_option="sobject",
        identity_option="external_id_field",
    )

    def __init__(
        self,
        instance_url: str,
        access_token: str,
        *,
        sobject: str = "Contact",
        external_id_field: str = "Acme_Customer_Id__c",
        api_version: str = "62.0",
        fields: Mapping[str, FieldSpec] | None = None,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not access_token:
            raise DestinationConfigError("salesforce: access_token is empty")
        for label, value in (("sobject", sobject), ("external_id_field", external_id_field)):
            if not _NAME.fullmatch(value):
                raise DestinationConfigError(f"salesforce: {label} {value!r} is not an API name")
        if not re.fullmatch(r"\d{2,3}\.\d", api_version):
            raise DestinationConfigError(f"salesforce: api_version {api_version!r} is not N.N")
        self.sobject = sobject
        self.external_id_field = external_id_field
        self.fields = dict(FIELDS if fields is None else fields)
        self._api = f"/services/data/v{api_version}"
        super().__init__(
            instance_url,
            headers={"Authorization": f"Bearer {access_token}"},
            secrets=[access_token],
            pacer=Pacer(rate_limit),
            retry=retry,
        )

    # -- Destination ----------------------------------------------------------------------------

    def upsert(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        return self._upsert(records)

    def update(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        found = self._lookup([record.identity for record in records])
        return self._update_existing(
            records, lambda identity: found.get(identity.lower()) is not None
        )

    def remove(self, records: list[tuple[str, str | None]]) -> list[RecordOutcome]:
        missing = [identity for identity, record_id in records if not record_id]
        found = self._lookup(missing) if missing else {}
        ids = [record_id or found.get(identity.lower()) for identity, record_id in records]
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        to_delete: list[int] = []
        for position, ((identity, _), record_id) in enumerate(zip(records, ids, strict=True)):
            if record_id is None:  # not in Salesforce any more
                outcomes[position] = RecordOutcome(identity=identity, ok=True)
            else:
                to_delete.append(position)
        for call in rounds(to_delete, lambda p: (ids[p] or "")[:15], self.max_batch):
            positions = [to_delete[i] for i in call]
            batch_ids = [ids[p] or "" for p in positions]
            response = self._call(
                "DELETE",
                f"{self._api}/composite/sobjects",
                params={"ids": ",".join(batch_ids), "allOrNone": "false"},
            )
            results = _results(response.body, len(positions), "DELETE /composite/sobjects")
            for position, record_id, result in zip(positions, batch_ids, results, strict=True):
                codes = {error.get("statusCode") for error in result.get("errors") or []}
                gone = bool(result.get("success")) or (bool(codes) and codes <= _GONE)
                outcomes[position] = RecordOutcome(
                    identity=records[position][0],
                    ok=gone,
                    destination_id=result.get("id") or record_id,
                    error=None if gone else self._save_errors(result),
                )
        return _complete(outcomes)

    # -- the calls --------------------------------------------------------------------------------

    def _upsert(self, records: Sequence[DestinationRecord]) -> list[RecordOutcome]:
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
            values = {k: v for k, v in values.items() if k.lower() != "id"}
            values[self.external_id_field] = record.identity
            bodies[position] = {"attributes": {"type": self.sobject}, **values}
        sendable = list(bodies)
        path = f"{self._api}/composite/sobjects/{self.sobject}/{self.external_id_field}"
        for call in rounds(sendable, lambda p: records[p].identity.lower(), self.max_batch):
            positions = [sendable[i] for i in call]
            response = self._call(
                "PATCH",
                path,
                json_body={"allOrNone": False, "records": [bodies[p] for p in positions]},
            )
            results = _results(response.body, len(positions), f"PATCH {path}")
            for position, result in zip(positions, results, strict=True):
                ok = bool(result.get("success"))
                outcomes[position] = RecordOutcome(
                    identity=records[position].identity,
                    ok=ok,
                    destination_id=result.get("id"),
                    created=result.get("created") if ok else None,
                    error=None if ok else self._save_errors(result),
                )
        return _complete(outcomes)

    def _lookup(self, identities: Sequence[str]) -> dict[str, str | None]:
        """Salesforce ids by (lower-cased) external id; ``None`` for those not found."""
        found: dict[str, str | None] = {}
        for identity in identities:
            key = identity.lower()
            if key in found:
                continue
            if not identity.strip():
                found[key] = None
                continue
            response = self._call(
                "GET",
                f"{self._api}/sobjects/{self.sobject}/{self.external_id_field}/"
                + quote(identity, safe=""),
                params={"fields": "Id"},
                accept=(200, 404),
            )
            body = response.body if isinstance(response.body, dict) else {}
            found[key] = body.get("Id") if response.status == 200 else None
        return found

    def _save_errors(self, result: Mapping[str, Any]) -> str:
        return self.mask(describe_error(result.get("errors") or []) or "failed without an error")

    # -- hooks ----------------------------------------------------------------------------------

    def _is_rate_limited(self, response: httpx.Response, endpoint: str) -> bool:
        if response.status_code != 403 or "REQUEST_LIMIT_EXCEEDED" not in response.text:
            return False
        usage = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if usage and int(usage.group(1)) >= int(usage.group(2)):
            self._count(rate_limited=1)
            raise DestinationError(
                f"salesforce: {endpoint} refused with HTTP 403 REQUEST_LIMIT_EXCEEDED: the "
                f"org's API request budget is spent ({usage.group(0)}); calls resume when it "
                "resets"
            )
        return True


def _results(body: Any, expected: int, endpoint: str) -> list[dict[str, Any]]:
    if not isinstance(body, list) or len(body) != expected:
        got = len(body) if isinstance(body, list) else type(body).__name__
        raise DestinationError(
            f"salesforce: {endpoint} answered {got} results for {expected} records"
        )
    return [item if isinstance(item, dict) else {} for item in body]


def _complete(outcomes: list[RecordOutcome | None]) -> list[RecordOutcome]:
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]
