"""Salesforce: upsert sObject records by external id with the sObject Collections API.

- upsert: ``PATCH /services/data/vXX.X/composite/sobjects/{sObject}/{externalIdField}`` with
  ``allOrNone: false``, at most 200 records a call; one ``{id, success, errors, created}`` result
  per record, in order.
- update (update-only): the identities are looked up first by SOQL,
  ``GET /services/data/vXX.X/query?q=SELECT Id, {field} FROM {sObject} WHERE {field} IN (...)``
  (a few hundred values a query, kept well under the URL limit; pages of up to 2,000 rows
  followed by ``nextRecordsUrl``), so a batch of 200 costs one request of the org's daily
  budget, not 200; identities not found are not sent, the found ones are upserted.
- remove: ``DELETE /services/data/vXX.X/composite/sobjects?ids=...&allOrNone=false``, at most
  200 ids a call; identities without their Salesforce id are looked up as above first. Already
  deleted (``ENTITY_IS_DELETED``) or unknown (``INVALID_CROSS_REFERENCE_KEY``) counts as gone.

An external id field not marked Unique can match several records: Salesforce then updates none
(300 Multiple Choices on the single-record resource, ``DUPLICATE_EXTERNAL_ID`` naming the
records in a collection). Either way it is that record's failure, naming the records, never a
guess; a lookup that finds several is treated the same. Duplicate rules (the standard Contact
rule alerts on a matching email) refuse a save with ``DUPLICATES_DETECTED``, a row failure with
the rule and the matching records, unless the sync sets ``duplicate_rule_header``
(``Sforce-Duplicate-Rule-Header: allowSave=true``: save despite an alert; a blocking rule still
blocks).

Auth: a static access token, or OAuth 2.0 (``oauth``): on 401 ``INVALID_SESSION_ID`` the client
asks the token endpoint for a new access token once (the refresh-token flow when a refresh token
is given, else the client-credentials flow) and sends the call again. Secrets come from the
environment only and are masked in every message.

Salesforce sends no 429: its "slow down" is 403 ``REQUEST_LIMIT_EXCEEDED`` (a concurrency or
rate limit, retried after a backoff) and, once the org's daily request budget is spent
(``Sforce-Limit-Info: api-usage=N/N``), a 403 that waiting will not fix, so it fails at once.
There is no per-window limit to learn, so requests are paced only when ``rate_limit`` is given.
401 ``INVALID_SESSION_ID`` that a refresh cannot cure raises :class:`DestinationAuthError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

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
    check_base_url,
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
        FieldSpec(name="Email", type="string"),
        FieldSpec(name="FirstName", type="string"),
        FieldSpec(name="LastName", type="string"),
    )
}
"""Standard Contact fields every org has (Email is Salesforce's ``email`` type: a string). An
org's custom fields (``__c``, the external id among them) are declared by the sync (``fields``
in ``syncs.yaml``) and given as ``fields``."""

_GONE = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})
MAX_QUERY_CHARS = 4000  # SOQL per lookup query: URL-encoded, well under the ~16 KB URL limit
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class DuplicateRuleHeader(BaseModel):
    """``Sforce-Duplicate-Rule-Header`` (API 52.0+): how duplicate rules treat the sync's saves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_save: bool = False  # save despite a duplicate rule's alert (a blocking rule blocks)
    include_record_details: bool = False
    run_as_current_user: bool = False

    def header(self) -> str:
        return "; ".join(
            f"{name}={str(value).lower()}"
            for name, value in (
                ("allowSave", self.allow_save),
                ("includeRecordDetails", self.include_record_details),
                ("runAsCurrentUser", self.run_as_current_user),
            )
        )


class SalesforceOptions(BaseModel):
    """``options`` of a Salesforce sync."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duplicate_rule_header: DuplicateRuleHeader | None = Field(
        default=None,
        description="Sent as Sforce-Duplicate-Rule-Header; allow_save: true saves records a "
        "duplicate rule only alerts on. Unset: such records fail with DUPLICATES_DETECTED.",
    )


class OAuthSettings(BaseModel):
    """A connected app's credentials for ``{token_url}`` (``/services/oauth2/token``): the
    refresh-token flow when ``refresh_token`` is set, else the client-credentials flow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_url: str
    client_id: str
    client_secret: str
    refresh_token: str | None = None

    @property
    def grant(self) -> str:
        return "refresh_token" if self.refresh_token else "client_credentials"

    def __repr__(self) -> str:  # never the secrets
        return f"OAuthSettings(token_url={self.token_url!r}, grant={self.grant!r})"

    __str__ = __repr__


class SalesforceDestination(HttpDestination):
    """Contacts (or any sObject) upserted by an external id field."""

    info = DestinationInfo(
        name="salesforce",
        objects=("Contact",),
        identity_fields=(),  # an org's external id fields: declared with identity: true
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
                help="an OAuth access token; may be unset with SALESFORCE_CLIENT_ID",
                secret=True,
                required=False,
            ),
            # A connected app: the access token is refreshed with these on 401.
            EnvSetting(
                name="SALESFORCE_CLIENT_ID",
                option="client_id",
                help="the connected app's consumer key",
                required=False,
            ),
            EnvSetting(
                name="SALESFORCE_CLIENT_SECRET",
                option="client_secret",
                help="the connected app's consumer secret",
                secret=True,
                required=False,
            ),
            EnvSetting(
                name="SALESFORCE_REFRESH_TOKEN",
                option="refresh_token",
                help="a refresh token (refresh-token flow); unset: client-credentials flow",
                secret=True,
                required=False,
            ),
            EnvSetting(
                name="SALESFORCE_TOKEN_URL",
                option="token_url",
                help="the token endpoint; default <instance>/services/oauth2/token",
                required=False,
            ),
        ),
        object_option="sobject",
        identity_option="external_id_field",
        options=SalesforceOptions,
    )

    def __init__(
        self,
        instance_url: str,
        access_token: str = "",
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        token_url: str | None = None,
        sobject: str = "Contact",
        external_id_field: str = "Acme_Customer_Id__c",
        api_version: str = "62.0",
        fields: Mapping[str, FieldSpec] | None = None,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy | None = None,
        oauth: OAuthSettings | None = None,
        duplicate_rule_header: DuplicateRuleHeader | Mapping[str, bool] | None = None,
    ) -> None:
        """``access_token`` may be empty when a connected app is given (``oauth``, or
        ``client_id`` and ``client_secret`` as the environment gives them): the first call
        then gets one."""
        if oauth is None and client_id:
            if not client_secret:
                raise DestinationConfigError(
                    "salesforce: SALESFORCE_CLIENT_ID is set but SALESFORCE_CLIENT_SECRET is not "
                    "(the connected app's consumer secret)"
                )
            oauth = OAuthSettings(
                token_url=token_url or f"{instance_url.strip().rstrip('/')}/services/oauth2/token",
                client_id=client_id,
                client_secret=client_secret,
                refresh_token=refresh_token or None,
            )
        if not access_token and oauth is None:
            raise DestinationConfigError(
                "salesforce: set SALESFORCE_ACCESS_TOKEN (an OAuth access token), or "
                "SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET (a connected app)"
            )
        if oauth is not None:
            check_base_url(self.name, oauth.token_url)
        self.oauth = oauth
        self.token_refreshes = 0
        self.duplicate_rule_header = (
            DuplicateRuleHeader.model_validate(duplicate_rule_header)
            if isinstance(duplicate_rule_header, Mapping)
            else duplicate_rule_header
        )
        for label, value in (("sobject", sobject), ("external_id_field", external_id_field)):
            if not _NAME.fullmatch(value):
                raise DestinationConfigError(f"salesforce: {label} {value!r} is not an API name")
        if not re.fullmatch(r"\d{2,3}\.\d", api_version):
            raise DestinationConfigError(f"salesforce: api_version {api_version!r} is not N.N")
        self.sobject = sobject
        self.external_id_field = external_id_field
        self.fields = {**FIELDS, **(fields or {})}
        self._api = f"/services/data/v{api_version}"
        secret_values = [access_token]
        if oauth is not None:
            secret_values += [oauth.client_secret, oauth.refresh_token or ""]
        super().__init__(
            instance_url,
            headers={"Authorization": f"Bearer {access_token or 'none-yet'}"},
            secrets=secret_values,
            pacer=Pacer(rate_limit),
            retry=retry,
        )

    # -- Destination ----------------------------------------------------------------------------

    def upsert(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        return self._upsert(records)

    def update(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        found = self._lookup([record.identity for record in records])
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        single: list[int] = []
        for position, record in enumerate(records):
            ids = found.get(record.identity.lower(), [])
            if len(ids) > 1:
                outcomes[position] = self._ambiguous(record.identity, ids)
            else:
                single.append(position)
        updated = self._update_existing(
            [records[p] for p in single], lambda identity: bool(found.get(identity.lower()))
        )
        for position, outcome in zip(single, updated, strict=True):
            outcomes[position] = outcome
        return _complete(outcomes)

    def remove(self, records: list[tuple[str, str | None]]) -> list[RecordOutcome]:
        missing = [identity for identity, record_id in records if not record_id]
        found = self._lookup(missing) if missing else {}
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        ids: list[str | None] = []
        for position, (identity, record_id) in enumerate(records):
            matches = [record_id] if record_id else found.get(identity.lower(), [])
            if len(matches) > 1:  # never delete on a guess
                outcomes[position] = self._ambiguous(identity, matches)
            ids.append(matches[0] if len(matches) == 1 else None)
        to_delete: list[int] = []
        for position, ((identity, _), record_id) in enumerate(zip(records, ids, strict=True)):
            if outcomes[position] is not None:
                continue
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

    def missing_fields(self, names: Sequence[str]) -> list[str]:
        """The fields of ``names`` the sObject does not have, or the integration user cannot
        see (field-level security hides them from ``GET .../sobjects/{sObject}/describe``)."""
        body = self._call("GET", f"{self._api}/sobjects/{self.sobject}/describe").body
        fields = body.get("fields") if isinstance(body, dict) else None
        known = {str(f.get("name")).lower() for f in fields or [] if isinstance(f, dict)}
        return [name for name in names if name.lower() not in known]

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
        headers = (
            {"Sforce-Duplicate-Rule-Header": self.duplicate_rule_header.header()}
            if self.duplicate_rule_header is not None
            else None
        )
        for call in rounds(sendable, lambda p: records[p].identity.lower(), self.max_batch):
            positions = [sendable[i] for i in call]
            response = self._call(
                "PATCH",
                path,
                json_body={"allOrNone": False, "records": [bodies[p] for p in positions]},
                headers=headers,
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

    def _lookup(self, identities: Sequence[str]) -> dict[str, list[str]]:
        """Salesforce ids by (lower-cased) external id, by SOQL ``IN`` queries (one request per
        few hundred identities, every page followed); absent: not in Salesforce."""
        values = list({i.lower(): i for i in identities if i.strip()}.values())
        field = self.external_id_field
        found: dict[str, list[str]] = {}
        head = f"SELECT Id, {field} FROM {self.sobject} WHERE {field} IN ("
        for chunk in _soql_chunks(values, MAX_QUERY_CHARS - len(head)):
            response = self._call("GET", f"{self._api}/query", params={"q": f"{head}{chunk})"})
            while True:
                body = response.body if isinstance(response.body, dict) else {}
                for row in body.get("records") or []:
                    key, record_id = row.get(field), row.get("Id")
                    if isinstance(key, str) and isinstance(record_id, str):
                        found.setdefault(key.lower(), []).append(record_id)
                next_url = body.get("nextRecordsUrl")
                if body.get("done", True) or not isinstance(next_url, str):
                    break
                response = self._call("GET", next_url)
        return found

    def _ambiguous(self, identity: str, ids: Sequence[str]) -> RecordOutcome:
        return RecordOutcome(
            identity=identity,
            ok=False,
            error=(
                f"{self.external_id_field} {identity!r} matches {len(ids)} {self.sobject} "
                f"records ({', '.join(ids)}): Salesforce answers 300 Multiple Choices and "
                "changes none of them; merge the duplicates or make the external id unique"
            ),
        )

    def _save_errors(self, result: Mapping[str, Any]) -> str:
        """Salesforce's errors for one record; a duplicate rule's adds the rule and matches."""
        errors = result.get("errors") or []
        text = describe_error(errors) or "failed without an error"
        for error in errors if isinstance(errors, list) else []:
            duplicate = error.get("duplicateResult") if isinstance(error, dict) else None
            if isinstance(duplicate, dict):
                matched = [
                    str((match.get("record") or {}).get("Id"))
                    for group in duplicate.get("matchResults") or []
                    for match in group.get("matchRecords") or []
                ]
                text += (
                    f" (duplicate rule {duplicate.get('duplicateRule')} matched "
                    f"{', '.join(matched) or 'records'}; allowSave="
                    f"{str(duplicate.get('allowSave')).lower()})"
                )
        return self.mask(text)

    # -- OAuth ----------------------------------------------------------------------------------

    def _reauthenticate(self, response: httpx.Response) -> bool:
        """401 ``INVALID_SESSION_ID``: a new access token from the token endpoint, once per call."""
        if self.oauth is None:
            return False
        self.refresh_access_token()
        return True

    def refresh_access_token(self) -> None:
        """Ask ``oauth.token_url`` for a new access token; the form carries the secrets, never a
        URL or a message. A refusal is :class:`DestinationAuthError` naming the flow."""
        oauth = self.oauth
        assert oauth is not None
        form = {"grant_type": oauth.grant, "client_id": oauth.client_id}
        form["client_secret"] = oauth.client_secret
        if oauth.refresh_token:
            form["refresh_token"] = oauth.refresh_token
        try:
            with httpx.Client(timeout=self.retry.timeout_s, follow_redirects=False) as http:
                answer = http.post(
                    oauth.token_url, data=form, headers={"Accept": "application/json"}
                )
        except httpx.TransportError as error:
            raise DestinationError(
                f"salesforce: the OAuth token endpoint did not answer ({type(error).__name__})"
            ) from None
        try:
            body = answer.json()
        except ValueError:
            body = {}
        token = body.get("access_token") if isinstance(body, dict) else None
        if answer.status_code != 200 or not isinstance(token, str) or not token:
            reason = (
                f"{body.get('error')}: {body.get('error_description')}"
                if isinstance(body, dict) and body.get("error")
                else f"HTTP {answer.status_code}"
            )
            raise DestinationAuthError(
                self.mask(
                    f"salesforce: the {oauth.grant} OAuth flow was refused ({reason}): the "
                    "connected app's credentials or refresh token are wrong, revoked or expired"
                )
            )
        self.add_secret(token)
        self._http.headers["Authorization"] = f"Bearer {token}"
        self.token_refreshes += 1

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


def _soql_string(value: str) -> str:
    """A SOQL string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _soql_chunks(values: Sequence[str], max_chars: int) -> list[str]:
    """``values`` as comma-separated SOQL literals, cut so each list stays under ``max_chars``."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for value in values:
        literal = _soql_string(value)
        if current and size + len(literal) + 1 > max_chars:
            chunks.append(",".join(current))
            current, size = [], 0
        current.append(literal)
        size += len(literal) + 1
    if current:
        chunks.append(",".join(current))
    return chunks


def _complete(outcomes: list[RecordOutcome | None]) -> list[RecordOutcome]:
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]
