"""HubSpot: contacts batch-upserted by a unique property (email by default), CRM v3.

- upsert: ``POST /crm/v3/objects/contacts/batch/upsert`` with
  ``{"inputs": [{"idProperty", "id", "properties", "objectWriteTraceId"}]}``, at most 100 inputs.
  Property values are sent as strings (numbers without exponent, dates ``YYYY-MM-DD``, ``None``
  as ``""``, which clears). 200 means all were written; ``new`` tells created from updated.
  One invalid or conflicting input makes HubSpot refuse the whole batch (400
  ``VALIDATION_ERROR`` "Property values were not valid", 409 ``CONFLICT`` "Contact already
  exists"), nothing written and no word of which input: the client splits the batch in halves
  and sends each again, down to single inputs, so the good inputs land in the same run and each
  bad one is an outcome with HubSpot's own message (about 2 log2(100) extra calls per bad
  input). Where multi-status is enabled, 207 lists the failed inputs in ``errors``
  (``context.objectWriteTraceId`` / ``context.id`` name them) and the rest were written.
- update (update-only): ``POST .../batch/read`` by ``idProperty`` finds the contacts that exist
  (the others are "not found in hubspot" and not sent), then only those are upserted.
- remove: ``POST .../batch/archive`` by HubSpot id (204; unknown ids are ignored by HubSpot); an
  identity without its id is found with ``batch/read`` first, and one HubSpot does not have is
  already gone.

Rate limit: the ten-secondly rolling window (100 requests / 10 s for a private app on
Free/Starter) is learned from the ``X-HubSpot-RateLimit-Max`` /
``-Interval-Milliseconds`` / ``-Remaining`` headers of every response, and the client paces
itself under it. A 429 all the same (another app on the same quota) is waited out and retried;
the daily limit (``policyName: DAILY``) fails at once.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Mapping, Sequence
from typing import Any

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
    chunks,
    describe_error,
    header_int,
    not_sent,
    prepare_fields,
    rounds,
)
from medallion_platform.reverse_etl.destinations.ratelimit import Pacer, RateLimit

MAX_INPUTS = 100
DEFAULT_RATE_LIMIT = RateLimit(max_requests=100, window_seconds=10)  # until headers say more
OBJECTS = "/crm/v3/objects/contacts"
FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec(name="email", type="string"),
        FieldSpec(name="firstname", type="string"),
        FieldSpec(name="lastname", type="string"),
        FieldSpec(name="phone", type="string"),
    )
}
"""HubSpot's own contact properties a sync may write. A portal's custom properties are
declared by the sync (``fields`` in ``syncs.yaml``) and given as ``fields``."""


class HubSpotDestination(HttpDestination):
    """Contacts upserted by ``id_property`` (a unique property: ``email``, ``acme_customer_id``)."""

    info = DestinationInfo(
        name="hubspot",
        objects=("contacts",),
        identity_fields=("email",),  # a portal's own unique properties: identity: true
        fields=FIELDS,
        max_batch=MAX_INPUTS,
        env=(
            EnvSetting(
                name="HUBSPOT_BASE_URL",
                option="base_url",
                help="e.g. https://api.hubapi.com",
                address=True,
            ),
            EnvSetting(
                name="HUBSPOT_ACCESS_TOKEN",
                option="access_token",
                help="a private app's token",
                secret=True,
            ),
        ),
        lowercase_identity=("email",),
        identity_option="id_property",
    )

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        id_property: str = "email",
        fields: Mapping[str, FieldSpec] | None = None,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``rate_limit=None`` starts at HubSpot's 100 / 10 s and follows the limit the API
        announces; a given ``rate_limit`` is kept as is (e.g. to leave room for other apps)."""
        if not access_token:
            raise DestinationConfigError("hubspot: access_token is empty")
        self.id_property = id_property
        self.fields = {**FIELDS, **(fields or {})}
        self.split_calls = 0  # batches split to isolate inputs HubSpot refused the batch for
        super().__init__(
            base_url,
            headers={"Authorization": f"Bearer {access_token}"},
            secrets=[access_token],
            pacer=Pacer(rate_limit or DEFAULT_RATE_LIMIT, learn=rate_limit is None),
            retry=retry,
        )

    # -- Destination ----------------------------------------------------------------------------

    def upsert(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        return self._upsert(records)

    def update(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        found = self._find([record.identity for record in records])
        return self._update_existing(records, lambda identity: self._key(identity) in found)

    def remove(self, records: list[tuple[str, str | None]]) -> list[RecordOutcome]:
        missing = [identity for identity, contact_id in records if not contact_id]
        found = self._find(missing) if missing else {}
        ids = [contact_id or found.get(self._key(identity)) for identity, contact_id in records]
        unique_ids = list(dict.fromkeys(contact_id for contact_id in ids if contact_id))
        for call in chunks(unique_ids, self.max_batch):
            self._call(
                "POST",
                f"{OBJECTS}/batch/archive",
                json_body={"inputs": [{"id": contact_id} for contact_id in call]},
                accept=(204, 200),
            )
        return [
            RecordOutcome(identity=identity, ok=True, destination_id=contact_id)
            for (identity, _), contact_id in zip(records, ids, strict=True)
        ]

    def missing_fields(self, names: Sequence[str]) -> list[str]:
        """The properties of ``names`` the portal does not have (``GET
        /crm/v3/properties/contacts``; needs the ``crm.schemas.contacts.read`` scope)."""
        body = self._call("GET", "/crm/v3/properties/contacts").body
        results = body.get("results") if isinstance(body, dict) else None
        known = {str(p.get("name")) for p in results or [] if isinstance(p, dict)}
        return [name for name in names if name not in known]

    # -- the calls --------------------------------------------------------------------------------

    def _upsert(self, records: Sequence[DestinationRecord]) -> list[RecordOutcome]:
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        properties: dict[int, dict[str, str]] = {}
        for position, record in enumerate(records):
            if not record.identity.strip():
                outcomes[position] = not_sent(record, "the identity is empty")
                continue
            try:
                values = prepare_fields(record.fields, self.fields)
                properties[position] = {
                    name: _as_property(value)
                    for name, value in values.items()
                    if name != self.id_property
                }
            except ValueRejected as rejected:
                outcomes[position] = not_sent(record, str(rejected))
        sendable = list(properties)
        for call in rounds(sendable, lambda p: self._key(records[p].identity), self.max_batch):
            pending = [[sendable[i] for i in call]]
            while pending:
                positions = pending.pop()
                rejected = self._send_upsert(records, positions, properties, outcomes)
                if rejected is None:
                    continue
                if len(positions) == 1:
                    outcomes[positions[0]] = RecordOutcome(
                        identity=records[positions[0]].identity, ok=False, error=rejected
                    )
                    continue
                half = len(positions) // 2
                self.split_calls += 1
                pending += [positions[half:], positions[:half]]  # first half first
        return [outcome for outcome in outcomes if outcome is not None]

    def _send_upsert(
        self,
        records: Sequence[DestinationRecord],
        positions: list[int],
        properties: Mapping[int, dict[str, str]],
        outcomes: list[RecordOutcome | None],
    ) -> str | None:
        """One ``batch/upsert`` call; its outcomes go into ``outcomes``. A batch HubSpot refused
        as a whole because of its inputs (400 invalid property values, 409 conflict: nothing
        was written, the body does not say which input) returns HubSpot's error instead, for the
        caller to split the batch and find the inputs at fault."""
        inputs = [
            {
                "idProperty": self.id_property,
                "id": records[p].identity,
                "properties": properties[p],
                "objectWriteTraceId": str(i),
            }
            for i, p in enumerate(positions)
        ]
        try:
            response = self._call(
                "POST",
                f"{OBJECTS}/batch/upsert",
                json_body={"inputs": inputs},
                accept=(200, 207),
            )
        except DestinationError as error:
            if not _rejected_for_inputs(error):
                raise
            return self.mask(_error_text(error.body))
        for position, outcome in zip(
            positions, self._upsert_outcomes(records, positions, response.body), strict=True
        ):
            outcomes[position] = outcome
        return None

    def _upsert_outcomes(
        self, records: Sequence[DestinationRecord], positions: list[int], body: Any
    ) -> list[RecordOutcome]:
        """Match results and errors to inputs: by ``objectWriteTraceId`` (our input number),
        else by the id property's value."""
        body = body if isinstance(body, dict) else {}
        by_key = {self._key(records[p].identity): i for i, p in enumerate(positions)}
        matched: dict[int, RecordOutcome] = {}

        def index_of(trace: Any, key: Any) -> int | None:
            if isinstance(trace, str) and trace.isdigit() and int(trace) < len(positions):
                return int(trace)
            return by_key.get(self._key(key)) if isinstance(key, str) else None

        for result in body.get("results") or []:
            props = result.get("properties") or {}
            i = index_of(result.get("objectWriteTraceId"), props.get(self.id_property))
            if i is not None:
                matched[i] = RecordOutcome(
                    identity=records[positions[i]].identity,
                    ok=True,
                    destination_id=str(result.get("id")) if result.get("id") else None,
                    created=result.get("new"),
                )
        for error in body.get("errors") or []:
            context = error.get("context") or {}
            traces = context.get("objectWriteTraceId") or []
            keys = context.get("id") or []
            for n in range(max(len(traces), len(keys))):
                i = index_of(
                    traces[n] if n < len(traces) else None, keys[n] if n < len(keys) else None
                )
                if i is not None and i not in matched:
                    matched[i] = RecordOutcome(
                        identity=records[positions[i]].identity,
                        ok=False,
                        error=self.mask(_error_text(error)),
                    )
        return [
            matched.get(i)
            or RecordOutcome(
                identity=records[p].identity,
                ok=False,
                error="hubspot returned no result for this input",
            )
            for i, p in enumerate(positions)
        ]

    def _find(self, identities: Sequence[str]) -> dict[str, str]:
        """HubSpot ids of the contacts that exist, by normalised id-property value."""
        keys = list(dict.fromkeys(i for i in identities if i.strip()))
        unique: dict[str, str] = {}
        for identity in keys:  # one input per normalised value (HubSpot refuses duplicates)
            unique.setdefault(self._key(identity), identity)
        found: dict[str, str] = {}
        for call in chunks(list(unique.values()), self.max_batch):
            response = self._call(
                "POST",
                f"{OBJECTS}/batch/read",
                json_body={
                    "idProperty": self.id_property,
                    "inputs": [{"id": identity} for identity in call],
                    "properties": [self.id_property],
                },
                accept=(200, 207),
            )
            body = response.body if isinstance(response.body, dict) else {}
            for result in body.get("results") or []:
                value = (result.get("properties") or {}).get(self.id_property)
                if isinstance(value, str) and result.get("id"):
                    found[self._key(value)] = str(result["id"])
            for error in body.get("errors") or []:
                if error.get("category") != "OBJECT_NOT_FOUND":
                    raise DestinationError(
                        f"hubspot: POST {OBJECTS}/batch/read: {self.mask(_error_text(error))}"
                    )
        return found

    def _key(self, identity: str) -> str:
        """HubSpot keeps emails lower-cased and trimmed; other unique values match as given."""
        return identity.strip().lower() if self.id_property == "email" else identity

    # -- hooks ----------------------------------------------------------------------------------

    def _announced_limit(self, response: httpx.Response) -> tuple[RateLimit | None, int | None]:
        headers = response.headers
        most = header_int(headers, "X-HubSpot-RateLimit-Max")
        interval_ms = header_int(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
        learned = (
            RateLimit(max_requests=most, window_seconds=interval_ms / 1000)
            if most and most > 0 and interval_ms and interval_ms > 0
            else None
        )
        remaining = header_int(headers, "X-HubSpot-RateLimit-Remaining") if learned else None
        return learned, remaining

    def _is_rate_limited(self, response: httpx.Response, endpoint: str) -> bool:
        if response.status_code != 429:
            return False
        try:
            body = response.json()
        except ValueError:
            body = {}
        if isinstance(body, dict) and body.get("policyName") == "DAILY":
            self._count(rate_limited=1)
            raise DestinationError(
                f"hubspot: {endpoint} refused with HTTP 429: the daily request limit is "
                "reached; calls resume after it resets (midnight in the account's time zone)"
            )
        return True


def _as_property(value: Any) -> str:
    """A JSON value as HubSpot's string property value (``None`` clears: ``""``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = format(decimal.Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return ";".join(str(item) for item in value)  # multi-select enumeration
    return json.dumps(value)


def _rejected_for_inputs(error: DestinationError) -> bool:
    """HubSpot refused a whole batch because of what some input holds: 409 ``CONFLICT`` (a
    unique value another contact has) or 400 "Property values were not valid". Other 400s (too
    many inputs, an idProperty that is not unique) are about the call, and splitting would not
    help."""
    body = error.body if isinstance(error.body, dict) else {}
    if error.status == 409:
        return True
    message = str(body.get("message") or "")
    return (
        error.status == 400
        and body.get("category") == "VALIDATION_ERROR"
        and message.startswith("Property values were not valid")
    )


def _error_text(error: Mapping[str, Any]) -> str:
    """HubSpot's error for one input: ``CATEGORY: message`` (plus each property's reason)."""
    reasons = [item.get("message") for item in error.get("errors") or [] if isinstance(item, dict)]
    text = describe_error({"category": error.get("category"), "message": error.get("message")})
    details = "; ".join(str(reason) for reason in reasons if reason)
    return f"{text} ({details})" if details and details not in text else text
