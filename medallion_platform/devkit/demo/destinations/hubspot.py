"""A local emulator of HubSpot's CRM v3 contacts batch API, for reverse-ETL syncs.

What a sync to HubSpot leans on, in HubSpot's shapes: batch upsert by a unique property
(``POST /crm/v3/objects/contacts/batch/upsert``, at most 100 inputs, ``new`` telling created from
updated), one invalid or conflicting input failing the whole batch (400 ``VALIDATION_ERROR``
or 409 ``CONFLICT``, nothing written: what HubSpot answers unless multi-status is enabled for
the account; ``multi_status=True`` gives 207 with per-input ``errors``), batch read by
``idProperty`` (to find ids), batch archive (204), property values stored as strings, the
``{"status": "error", "category": ...}`` error body, and the ten-secondly rolling rate limit
(429 ``RATE_LIMIT`` with the ``X-HubSpot-RateLimit-*`` headers, sent on every response).

As a process (the token comes from the environment so it never shows in ``ps``)::

    HUBSPOT_ACCESS_TOKEN=... python -m medallion_platform.devkit.demo.destinations hubspot
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medallion_platform.devkit.demo.destinations.common import (
    EmulatorInfo,
    IndexFn,
    RecordStore,
    StoreTransaction,
    is_email,
    rate_limit_from_args,
    utc_timestamp,
)
from medallion_platform.devkit.demo.http_emulator import (
    Admission,
    ApiError,
    EmulatorServer,
    Headers,
    RateLimit,
    Request,
    Response,
    Route,
    bearer_token,
    empty_response,
    json_response,
    parse_json,
    proxy_error_page,
    same_secret,
)

MAX_INPUTS = 100
DEFAULT_RATE_LIMIT = RateLimit(max_requests=100, window_seconds=10)  # private apps, Free/Starter
FIRST_CONTACT_ID = 51_000_000_001

PropertyType = Literal["string", "number", "date", "enumeration", "datetime"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_OBJECTS = r"/crm/v3/objects/(?:contacts|0-1)"
_DEFAULT_READ = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
_ALWAYS_READ = ("createdate", "hs_object_id", "lastmodifieddate")


class HubSpotProperty(BaseModel):
    """A contact property definition: its type, whether values are unique, whether writable."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: PropertyType
    unique: bool = False  # hasUniqueValue: usable as idProperty
    read_only: bool = False
    options: tuple[str, ...] = ()  # the allowed values of an enumeration


CONTACT_PROPERTIES: tuple[HubSpotProperty, ...] = (
    HubSpotProperty(name="email", type="string", unique=True),
    HubSpotProperty(name="firstname", type="string"),
    HubSpotProperty(name="lastname", type="string"),
    HubSpotProperty(name="phone", type="string"),
    HubSpotProperty(name="acme_customer_id", type="string", unique=True),
    HubSpotProperty(name="lifetime_value", type="number"),
    HubSpotProperty(name="churn_risk", type="number"),
    HubSpotProperty(name="acme_segment", type="string"),
    HubSpotProperty(name="last_order_date", type="date"),
    HubSpotProperty(name="hs_object_id", type="number", read_only=True),
    HubSpotProperty(name="createdate", type="datetime", read_only=True),
    HubSpotProperty(name="lastmodifieddate", type="datetime", read_only=True),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _UpsertInput(_Strict):
    id: str = Field(min_length=1)
    id_property: str | None = Field(default=None, alias="idProperty")
    properties: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    object_write_trace_id: str | None = Field(default=None, alias="objectWriteTraceId")


class _UpsertBody(_Strict):
    inputs: list[_UpsertInput]


class _IdInput(_Strict):
    id: str = Field(min_length=1)


class _ReadBody(_Strict):
    inputs: list[_IdInput]
    id_property: str | None = Field(default=None, alias="idProperty")
    properties: list[str] = Field(default_factory=list)


class _ArchiveBody(_Strict):
    inputs: list[_IdInput]


def _error_body(message: str, category: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "error", "message": message}
    body["correlationId"] = str(uuid.uuid4())
    if category is not None:
        body["category"] = category
    body.update(extra)
    return body


def _hs_error(
    status: int, message: str, category: str | None = "VALIDATION_ERROR", **extra: Any
) -> Response:
    return json_response(status, _error_body(message, category, **extra))


def _credentials_not_found() -> Response:
    return _hs_error(
        401,
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
        "you can find more details at "
        "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        "INVALID_AUTHENTICATION",
    )


def _normalise(property_name: str, value: str) -> str:
    """HubSpot keeps email addresses lower-cased; other unique values are matched as given."""
    return value.strip().lower() if property_name == "email" else value


def _index_on(property_name: str) -> IndexFn:
    def index(record: Mapping[str, Any]) -> str | None:
        value = record["properties"].get(property_name)
        return _normalise(property_name, value) if value else None

    return index


def _as_text(value: str | int | float | bool | None) -> str:
    """Property values are strings in HubSpot; JSON numbers are written without an exponent."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def _invalid(name: str, value: str, code: str, message: str) -> dict[str, Any]:
    """One entry of HubSpot's "Property values were not valid" list."""
    return {
        "isValid": False,
        "message": message,
        "error": code,
        "name": name,
        "localizedErrorMessage": message,
        "propertyValue": value,
    }


def _validate(
    definition: HubSpotProperty | None, name: str, raw: str | int | float | bool | None
) -> tuple[str, dict[str, Any] | None]:
    """(the value as HubSpot stores it, or the validation failure); "" clears a property."""
    value = _as_text(raw)
    if definition is None:
        return value, _invalid(
            name, value, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
        )
    if definition.read_only:
        message = f'"{name}" is a read only property; its value cannot be set.'
        return value, _invalid(name, value, "READ_ONLY_VALUE", message)
    if value == "":
        return value, None
    if name == "email":
        if not is_email(value.strip()):
            message = f"Email address {value} is invalid"
            return value, _invalid(name, value, "INVALID_EMAIL", message)
        return value.strip().lower(), None
    if definition.type == "number" and not _NUMBER.fullmatch(value):
        return value, _invalid(name, value, "INVALID_INTEGER", f"{value} was not a valid number.")
    if definition.type == "date":
        return _validate_date(name, value)
    if definition.type == "enumeration" and value not in definition.options:
        message = f"{value} was not one of the allowed options: [{', '.join(definition.options)}]"
        return value, _invalid(name, value, "INVALID_OPTION", message)
    return value, None


def _validate_date(name: str, value: str) -> tuple[str, dict[str, Any] | None]:
    """A date property takes ``YYYY-MM-DD`` or epoch milliseconds at midnight UTC."""
    if value.isdigit():
        stamp = dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
        if stamp.time() != dt.time(0):
            clock = f"{stamp.hour}:{stamp.minute}:{stamp.second}.{stamp.microsecond // 1000}"
            message = f"{value} is at {clock} UTC, not midnight!"
            return value, _invalid(name, value, "INVALID_DATE", message)
        return stamp.date().isoformat(), None
    try:
        if len(value) != 10:
            raise ValueError(value)
        return dt.date.fromisoformat(value).isoformat(), None
    except ValueError:
        return value, _invalid(name, value, "INVALID_DATE", f"{value} is not a valid date")


class HubSpotEmulator(EmulatorServer):
    """Serves the contacts batch upsert/read/archive endpoints on loopback.

    ``records()`` shows the contacts keyed by email; ``archived()`` the archived ones by id.
    By default (HubSpot's behaviour for batch upsert) one invalid input fails the whole batch
    with 400 ``VALIDATION_ERROR`` and one conflicting input (a unique value another contact
    holds) with 409 ``CONFLICT``; nothing of the batch is written and the body does not say which
    input it was. With ``multi_status`` (documented only where enabled) the invalid and
    conflicting inputs come back as 207 ``errors`` and the valid ones are written.
    """

    name = "hubspot"

    def __init__(
        self,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        properties: Sequence[HubSpotProperty] = CONTACT_PROPERTIES,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        daily_limit: int | None = None,
        multi_status: bool = False,
    ) -> None:
        if daily_limit is not None and daily_limit < 0:
            raise ValueError(f"daily_limit must be >= 0, got {daily_limit}")
        self._properties = {definition.name: definition for definition in properties}
        unique = [definition.name for definition in properties if definition.unique]
        self._contacts = RecordStore({name: _index_on(name) for name in unique})
        self._archived = RecordStore()
        self._ids = itertools.count(FIRST_CONTACT_ID)
        self._daily_limit = daily_limit
        self._daily_used = 0
        self.multi_status = multi_status
        super().__init__(token=token, host=host, port=port, rate_limit=rate_limit)

    # -- what a test inspects ------------------------------------------------------------------

    def records(self) -> dict[str, dict[str, Any]]:
        """Live contacts keyed by (lower-cased) email, by id when a contact has none."""
        return {
            record["properties"].get("email") or key: record
            for key, record in self._contacts.snapshot().items()
        }

    def archived(self) -> dict[str, dict[str, Any]]:
        """Archived contacts by id."""
        return self._archived.snapshot()

    # -- the API's answers ---------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                re.compile(rf"{_OBJECTS}/batch/upsert"),
                "POST /crm/v3/objects/contacts/batch/upsert",
                self._upsert,
            ),
            Route(
                "POST",
                re.compile(rf"{_OBJECTS}/batch/read"),
                "POST /crm/v3/objects/contacts/batch/read",
                self._read,
            ),
            Route(
                "POST",
                re.compile(rf"{_OBJECTS}/batch/archive"),
                "POST /crm/v3/objects/contacts/batch/archive",
                self._archive,
            ),
            Route(
                "GET",
                re.compile(r"/crm/v3/properties/(?:contacts|0-1)/?"),
                "GET /crm/v3/properties/contacts",
                self._properties_list,
            ),
            Route(
                "GET",
                re.compile(rf"{_OBJECTS}/(?P<id>[^/]+)"),
                "GET /crm/v3/objects/contacts/{contactId}",
                self._get_one,
            ),
        ]

    def _authenticate(self, request: Request) -> Response | None:
        token, expired = self._token_state()
        presented = bearer_token(request)
        if expired and same_secret(presented, token):
            return _hs_error(
                401,
                "The OAuth token used to make this call expired 0 second(s) ago.",
                "EXPIRED_AUTHENTICATION",
            )
        if not same_secret(presented, token) or expired:
            return _credentials_not_found()
        return None

    def _admit(self, request: Request, route: Route | None) -> tuple[Response | None, Headers]:
        refusal, headers = super()._admit(request, route)
        if refusal is not None or self._daily_limit is None:
            return refusal, (*headers, *self._daily_headers())
        with self._lock:
            if self._daily_used >= self._daily_limit:
                refusal = json_response(
                    429,
                    _error_body(
                        "You have reached your daily limit.",
                        None,
                        errorType="RATE_LIMIT",
                        policyName="DAILY",
                        groupName="publicapi:private-app",
                    ),
                )
            else:
                self._daily_used += 1
        return refusal, (*headers, *self._daily_headers())

    def _daily_headers(self) -> Headers:
        if self._daily_limit is None:
            return ()
        with self._lock:
            remaining = max(0, self._daily_limit - self._daily_used)
        return (
            ("X-HubSpot-RateLimit-Daily", str(self._daily_limit)),
            ("X-HubSpot-RateLimit-Daily-Remaining", str(remaining)),
        )

    def _limit_headers(self, admission: Admission) -> Headers:
        limit = self.rate_limit
        interval = round(limit.window_seconds * 1000) if limit is not None else 0
        return (
            ("X-HubSpot-RateLimit-Max", str(admission.limit)),
            ("X-HubSpot-RateLimit-Remaining", str(admission.remaining)),
            ("X-HubSpot-RateLimit-Interval-Milliseconds", str(interval)),
        )

    def _limited(self, admission: Admission) -> Response:
        return json_response(
            429,
            _error_body(
                "You have reached your ten_secondly_rolling limit.",
                None,
                errorType="RATE_LIMIT",
                policyName="TEN_SECONDLY_ROLLING",
                groupName="publicapi:private-app",
            ),
        )

    def _fault(self, status: int, retry_after: float | None) -> Response:
        headers = () if retry_after is None else (("Retry-After", f"{retry_after:g}"),)
        if status in (502, 504):
            return proxy_error_page(status)
        if status == 429:
            return self._limited(Admission(False, 0, 0, 0.0)).with_headers(headers)
        if status == 401:
            return _credentials_not_found()
        if status == 403:
            message = "This app hasn't been granted all required scopes to make this call."
            return json_response(403, _error_body(message, "MISSING_SCOPES"), headers)
        if status < 500:
            return json_response(status, _error_body("Bad request", "VALIDATION_ERROR"), headers)
        message = "internal error" if status == 500 else "Service Unavailable"
        return json_response(status, _error_body(message, None), headers)

    def _not_found(self, request: Request, allowed: list[str]) -> Response:
        if allowed:
            return _hs_error(405, f"Method {request.method} not allowed", None)
        return _hs_error(404, f"Unable to route {request.method} {request.path}", None)

    def _internal_error(self) -> Response:
        return self._fault(500, None)

    def _body(self, request: Request, model: type[_Strict]) -> Any:
        payload = parse_json(request, lambda why: _hs_error(400, f"Invalid input JSON: {why}"))
        try:
            body = model.model_validate(payload)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            message = f"Invalid input JSON: {first['msg']} at {where}"
            raise ApiError(_hs_error(400, message)) from None
        if len(body.inputs) > MAX_INPUTS:
            raise ApiError(
                _hs_error(
                    400,
                    f"The maximum number of inputs supported in a batch is {MAX_INPUTS}. Please "
                    "reduce the number of items and try again",
                )
            )
        return body

    def _unique_or_400(self, id_property: str | None) -> str:
        if id_property is None:
            raise ApiError(_hs_error(400, "Batch upsert requires an idProperty on every input"))
        definition = self._properties.get(id_property)
        if definition is None:
            raise ApiError(_hs_error(400, f'Property "{id_property}" does not exist'))
        if not definition.unique:
            message = "Unable to perform update/upsert by non-unique 0-1 property"
            raise ApiError(_hs_error(400, message))
        return id_property

    # -- upsert --------------------------------------------------------------------------------

    def _upsert(self, request: Request, match: re.Match[str]) -> Response:
        started = utc_timestamp()
        body: _UpsertBody = self._body(request, _UpsertBody)
        keys = [
            (self._unique_or_400(item.id_property), _normalise(item.id_property or "", item.id))
            for item in body.inputs
        ]
        _refuse_duplicates([key for _, key in keys])
        checked = [self._check(item) for item in body.inputs]
        if not self.multi_status and any(failures for _, failures in checked):
            failures = next(failures for _, failures in checked if failures)
            return json_response(400, self._invalid_body(failures))
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        with self._contacts.transaction() as txn:
            for item, (id_property, key), (values, failures) in zip(
                body.inputs, keys, checked, strict=True
            ):
                if failures:
                    errors.append(self._input_error(item, self._invalid_body(failures)))
                    continue
                existing = txn.lookup(id_property, key)
                values = {**values, id_property: key}
                conflict = self._conflict(txn, values, existing)
                if conflict is not None and not self.multi_status:
                    txn.rollback()  # the whole batch fails; nothing of it is written
                    return json_response(409, _error_body(conflict["message"], "CONFLICT"))
                if conflict is not None:
                    errors.append(conflict | {"context": self._context(item)})
                    continue
                now = utc_timestamp()
                if existing is None:
                    contact_id = str(next(self._ids))
                    record = {
                        "id": contact_id,
                        "properties": {"hs_object_id": contact_id, "createdate": now},
                        "createdAt": now,
                        "archived": False,
                    }
                else:
                    contact_id = existing
                    record = txn.get(existing) or {}
                properties = record["properties"]
                for name, value in values.items():
                    if value == "":
                        properties.pop(name, None)
                    else:
                        properties[name] = value
                properties["lastmodifieddate"] = now
                record["updatedAt"] = now
                txn.put(contact_id, record)
                result = {
                    "id": contact_id,
                    "properties": dict(properties),
                    "createdAt": record["createdAt"],
                    "updatedAt": now,
                    "archived": False,
                    "new": existing is None,
                }
                if item.object_write_trace_id is not None:
                    result["objectWriteTraceId"] = item.object_write_trace_id
                results.append(result)
        response: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            response |= {"numErrors": len(errors), "errors": errors}
        response |= {"startedAt": started, "completedAt": utc_timestamp()}
        return json_response(207 if errors else 200, response)

    def _check(self, item: _UpsertInput) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """An input's validated values and its property failures (the id value included)."""
        values: dict[str, str] = {}
        failures: list[dict[str, Any]] = []
        id_property = item.id_property or ""
        for name, raw in [(id_property, item.id), *item.properties.items()]:
            value, failure = _validate(self._properties.get(name), name, raw)
            if failure is not None:
                failures.append(failure)
            elif name != id_property:
                values[name] = value
        return values, failures

    def _conflict(
        self, txn: StoreTransaction, values: Mapping[str, str], owner: str | None
    ) -> dict[str, Any] | None:
        """A unique value that already belongs to another contact."""
        for name, value in values.items():
            definition = self._properties[name]
            if not definition.unique or value == "":
                continue
            holder = txn.lookup(name, _normalise(name, value))
            if holder is not None and holder != owner:
                return {
                    "status": "error",
                    "category": "CONFLICT",
                    "message": f"Contact already exists. Existing ID: {holder}",
                }
        return None

    @staticmethod
    def _invalid_body(failures: list[dict[str, Any]]) -> dict[str, Any]:
        listing = json.dumps(failures, separators=(",", ":"))
        return _error_body(
            f"Property values were not valid: {listing}",
            "VALIDATION_ERROR",
            errors=[
                {
                    "message": failure["message"],
                    "code": failure["error"],
                    "context": {"propertyName": [failure["name"]]},
                }
                for failure in failures
            ],
        )

    @staticmethod
    def _context(item: _UpsertInput) -> dict[str, list[str]]:
        context = {"id": [item.id]}
        if item.object_write_trace_id is not None:
            context["objectWriteTraceId"] = [item.object_write_trace_id]
        return context

    def _input_error(self, item: _UpsertInput, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": "error",
            "category": body["category"],
            "message": body["message"],
            "context": self._context(item),
            "errors": body["errors"],
        }

    # -- read and archive ----------------------------------------------------------------------

    def _read(self, request: Request, match: re.Match[str]) -> Response:
        started = utc_timestamp()
        body: _ReadBody = self._body(request, _ReadBody)
        id_property = body.id_property
        if id_property is not None and id_property != "hs_object_id":
            self._unique_or_400(id_property)
        else:
            id_property = None
        keys = [_normalise(id_property or "", item.id) for item in body.inputs]
        _refuse_duplicates(keys)
        archived = request.query.get("archived", "false").lower() == "true"
        wanted = tuple(body.properties) or _DEFAULT_READ
        results, missing = [], []
        for item, key in zip(body.inputs, keys, strict=True):
            record = self._find(id_property, key, archived=archived)
            if record is None:
                missing.append(item.id)
            else:
                results.append(_as_read(record, wanted))
        response: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            response |= {
                "numErrors": 1,
                "errors": [
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": "Could not get some CONTACT objects, they may be deleted or "
                        "not exist. Check that ids are valid.",
                        "context": {"ids": missing},
                    }
                ],
            }
        response |= {"startedAt": started, "completedAt": utc_timestamp()}
        return json_response(207 if missing else 200, response)

    def _find(self, id_property: str | None, key: str, *, archived: bool) -> dict[str, Any] | None:
        if archived:
            for record in self._archived.snapshot().values():
                value = record["properties"].get(id_property or "hs_object_id")
                if value is not None and _normalise(id_property or "", value) == key:
                    return record
            return None
        contact_id = key if id_property is None else self._contacts.lookup(id_property, key)
        return self._contacts.get(contact_id) if contact_id is not None else None

    def _archive(self, request: Request, match: re.Match[str]) -> Response:
        body: _ArchiveBody = self._body(request, _ArchiveBody)
        now = utc_timestamp()
        with self._contacts.transaction() as txn, self._archived.transaction() as bin_:
            for item in body.inputs:
                if txn.get(item.id) is None:
                    continue  # HubSpot answers 204 for ids that do not exist
                record = txn.delete(item.id)
                bin_.put(item.id, {**record, "archived": True, "archivedAt": now})
        return empty_response(204)

    def _properties_list(self, request: Request, match: re.Match[str]) -> Response:
        """The contact property definitions (the fields a portal has), HubSpot's shape."""
        field_types = {"string": "text", "number": "number", "date": "date"}
        results = [
            {
                "name": definition.name,
                "label": definition.name.replace("_", " ").title(),
                "type": definition.type,
                "fieldType": field_types.get(definition.type, "select"),
                "groupName": "contactinformation",
                "hasUniqueValue": definition.unique,
                "hidden": False,
                "formField": not definition.read_only,
                "modificationMetadata": {
                    "archivable": not definition.read_only,
                    "readOnlyDefinition": definition.read_only,
                    "readOnlyValue": definition.read_only,
                },
                "options": [{"label": o, "value": o} for o in definition.options],
            }
            for definition in self._properties.values()
        ]
        return json_response(200, {"results": results})

    def _get_one(self, request: Request, match: re.Match[str]) -> Response:
        id_property = request.query.get("idProperty")
        if id_property is not None:
            self._unique_or_400(id_property)
        key = _normalise(id_property or "", match["id"])
        archived = request.query.get("archived", "false").lower() == "true"
        record = self._find(id_property, key, archived=archived)
        if record is None:
            return _hs_error(404, "resource not found", "OBJECT_NOT_FOUND")
        requested = [name for name in request.query.get("properties", "").split(",") if name]
        return json_response(200, _as_read(record, tuple(requested) or _DEFAULT_READ))


def _refuse_duplicates(keys: Sequence[str]) -> None:
    """HubSpot refuses a whole batch that names one record twice."""
    seen: set[str] = set()
    duplicates: dict[str, None] = {}
    for key in keys:
        if key in seen:
            duplicates[key] = None
        seen.add(key)
    if duplicates:
        raise ApiError(
            _hs_error(
                400,
                f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. "
                "IDs must be unique",
            )
        )


def _as_read(record: Mapping[str, Any], wanted: Sequence[str]) -> dict[str, Any]:
    properties = record["properties"]
    names = dict.fromkeys((*wanted, *_ALWAYS_READ))
    body = {
        "id": record["id"],
        "properties": {name: properties.get(name) for name in sorted(names)},
        "createdAt": record["createdAt"],
        "updatedAt": record["updatedAt"],
        "archived": record.get("archived", False),
    }
    if record.get("archivedAt"):
        body["archivedAt"] = record["archivedAt"]
    return body


EMULATOR = EmulatorInfo(
    build=lambda args, settings: HubSpotEmulator(
        token=settings["access_token"],
        port=args.port,
        rate_limit=rate_limit_from_args(args, DEFAULT_RATE_LIMIT),
    )
)
