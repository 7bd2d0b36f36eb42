"""A local emulator of the Salesforce REST API's sObject Collections, for reverse-ETL syncs.

What a sync to Salesforce leans on, in Salesforce's own shapes: the collection upsert by external
id (``PATCH /services/data/vXX.X/composite/sobjects/{SObject}/{ExternalIdField}``, at most 200
records, one UpsertResult per record in order, ``allOrNone`` rolling the whole call back), the
collection delete (``DELETE .../composite/sobjects?ids=...``), reads by external id or by Id,
18-character case-safe ids, errors as ``[{"message", "errorCode"}]`` lists, the org's API request
budget (403 ``REQUEST_LIMIT_EXCEEDED``, usage in ``Sforce-Limit-Info``) and an expired session
(401 ``INVALID_SESSION_ID``). Salesforce sends no 429: an optional sliding-window rate limit and
concurrency limit answer with ``REQUEST_LIMIT_EXCEEDED`` too.

As a process (the token comes from the environment so it never shows in ``ps``)::

    SALESFORCE_ACCESS_TOKEN=... python -m medallion_platform.devkit.demo.destinations salesforce
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import math
import re
import secrets
import string
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from medallion_platform.devkit.demo.destinations.common import (
    EmulatorInfo,
    IndexFn,
    RecordStore,
    StoreTransaction,
    is_email,
    rate_limit_from_args,
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
    json_response,
    parse_json,
    proxy_error_page,
    same_secret,
)

MAX_RECORDS = 200  # per sObject Collections call, upsert and delete alike
MIN_COLLECTION_UPSERT_VERSION = 46.0  # collection upsert exists from API v46.0
DEFAULT_API_BUDGET = 100_000  # DailyApiRequests of a small Enterprise org

FieldType = Literal["string", "email", "double", "date", "boolean"]
TypeErrors = Literal["request", "record"]
DuplicateRule = Literal["alert", "block"]
TOKEN_ENDPOINT = "POST /services/oauth2/token"
QUERY_PAGE_SIZE = 2000  # records per /query page (Salesforce's default batch size)
DUPLICATE_RULE_NAME = "Standard_Contact_Duplicate_Rule"

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_CHECKSUM = string.ascii_uppercase + "012345"
_ID = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_API = r"/services/data/v(?P<version>\d{2,3}\.\d)"


class SObjectField(BaseModel):
    """One field of an sObject as the emulator validates it."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: FieldType
    label: str
    required: bool = False  # nillable=false and no default: needed on create, never blank
    external_id: bool = False  # usable for upsert; case-insensitive
    unique: bool = True  # an external id not marked Unique can match several records (300)
    max_length: int | None = None


class SObjectSchema(BaseModel):
    """An sObject: its API name, 3-character key prefix and writable fields."""

    model_config = ConfigDict(frozen=True)

    name: str
    key_prefix: str = Field(pattern=r"^[0-9A-Za-z]{3}$")
    fields: tuple[SObjectField, ...]

    def field(self, name: str) -> SObjectField | None:
        """Field names are case-insensitive in Salesforce's API."""
        lowered = name.lower()
        return next((f for f in self.fields if f.name.lower() == lowered), None)

    @property
    def external_ids(self) -> tuple[SObjectField, ...]:
        return tuple(f for f in self.fields if f.external_id)


CONTACT = SObjectSchema(
    name="Contact",
    key_prefix="003",
    fields=(
        SObjectField(
            name="Acme_Customer_Id__c",
            type="string",
            label="Acme Customer Id",
            external_id=True,
            max_length=255,
        ),
        SObjectField(name="FirstName", type="string", label="First Name", max_length=40),
        SObjectField(
            name="LastName", type="string", label="Last Name", required=True, max_length=80
        ),
        SObjectField(name="Email", type="email", label="Email", max_length=80),
        SObjectField(name="LTV__c", type="double", label="LTV"),
        SObjectField(name="Churn_Risk__c", type="double", label="Churn Risk"),
        SObjectField(name="Segment__c", type="string", label="Segment", max_length=255),
        SObjectField(name="Last_Order_Date__c", type="date", label="Last Order Date"),
    ),
)


class _UpsertBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    all_or_none: StrictBool = Field(default=False, alias="allOrNone")
    records: list[Any]


def case_safe_id(id15: str) -> str:
    """The 18-character form of a 15-character id: three checksum characters encode which of
    each five characters are upper case, so the id survives case-insensitive systems."""
    suffix = ""
    for chunk in range(3):
        bits = 0
        for position, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix += _CHECKSUM[bits]
    return id15 + suffix


def _to_base62(number: int, width: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    return digits.rjust(width, "0")


def _sf_error(status: int, error_code: str, message: str, headers: Headers = ()) -> Response:
    return json_response(status, [{"message": message, "errorCode": error_code}], headers)


def _save_error(status_code: str, message: str, fields: Sequence[str] = ()) -> dict[str, Any]:
    return {"statusCode": status_code, "message": message, "fields": list(fields)}


_ROLLED_BACK = _save_error(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header",
)


def _now() -> str:
    """Salesforce's datetime format: ``2026-11-01T10:00:00.000+0000``."""
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


def _json_kind(value: Any) -> str:
    """The Jackson token name Salesforce's parser reports for a JSON value."""
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    if isinstance(value, int):
        return "VALUE_NUMBER_INT"
    if isinstance(value, float):
        return "VALUE_NUMBER_FLOAT"
    if isinstance(value, str):
        return "VALUE_STRING"
    return "START_ARRAY" if isinstance(value, list) else "START_OBJECT"


class _Uncoercible(Exception):
    def __init__(self, java_type: str, value: Any) -> None:
        super().__init__(java_type)
        self.java_type = java_type
        self.value = value


def _coerce(spec: SObjectField, value: Any) -> Any:
    """A JSON value as Salesforce's deserializer reads it into the field, or ``_Uncoercible``.

    ``null`` clears a field. Strings holding numbers are read into doubles (as Salesforce does);
    dates take ``YYYY-MM-DD`` or an ISO datetime (its date part).
    """
    if value is None:
        return None
    if spec.type in ("string", "email"):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | str):
            return str(value)
        raise _Uncoercible("String", value)
    if spec.type == "double":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            number = float(value)
            if math.isfinite(number):
                return number
        raise _Uncoercible("double", value)
    if spec.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _Uncoercible("boolean", value)
    if isinstance(value, str):
        try:
            if len(value) == 10:
                return dt.date.fromisoformat(value).isoformat()
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()
        except ValueError:
            pass
    raise _Uncoercible("date", value)


class SalesforceEmulator(EmulatorServer):
    """Serves sObject Collections upsert/delete and record reads on loopback.

    ``records()`` shows the stored records keyed by external id; ``recycle_bin()`` the deleted
    ones; ``api_usage`` the requests counted against ``api_budget``. ``type_errors`` chooses how a
    value the field cannot hold ("abc" for a double) is refused: ``"request"`` (Salesforce's JSON
    deserializer: the whole call fails with 400 ``JSON_PARSER_ERROR``) or ``"record"`` (only that
    record fails, ``INVALID_TYPE_ON_FIELD_IN_RECORD``).
    """

    name = "salesforce"

    def __init__(
        self,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        sobjects: Sequence[SObjectSchema] = (CONTACT,),
        api_budget: int = DEFAULT_API_BUDGET,
        rate_limit: RateLimit | None = None,
        max_concurrent_requests: int | None = None,
        type_errors: TypeErrors = "request",
        duplicate_rule: DuplicateRule | None = "alert",
        query_page_size: int = QUERY_PAGE_SIZE,
        oauth_client_id: str | None = None,
        oauth_client_secret: str | None = None,
        oauth_refresh_token: str | None = None,
    ) -> None:
        if api_budget < 0:
            raise ValueError(f"api_budget must be >= 0, got {api_budget}")
        if max_concurrent_requests is not None and max_concurrent_requests < 1:
            raise ValueError("max_concurrent_requests must be >= 1")
        if type_errors not in ("request", "record"):
            raise ValueError(f"type_errors must be 'request' or 'record', got {type_errors!r}")
        self._sobjects = {schema.name.lower(): schema for schema in sobjects}
        self._stores = {
            schema.name.lower(): RecordStore(
                {f.name: _external_id_index(f.name) for f in schema.external_ids if f.unique},
                multi={
                    f.name: _external_id_index(f.name)
                    for f in schema.fields
                    if f.external_id or f.type == "email"
                },
            )
            for schema in sobjects
        }
        self._recycle_bins = {schema.name.lower(): RecordStore() for schema in sobjects}
        self._id_counter = itertools.count(1)
        self._api_budget = api_budget
        self._api_usage = 0
        self._max_concurrent = max_concurrent_requests
        self.type_errors: TypeErrors = type_errors
        self.duplicate_rule: DuplicateRule | None = duplicate_rule
        self.query_page_size = query_page_size
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._locators = itertools.count(1)
        self._oauth = (oauth_client_id, oauth_client_secret, oauth_refresh_token)
        self.tokens_issued = 0
        super().__init__(token=token, host=host, port=port, rate_limit=rate_limit)

    # -- what a test inspects and controls -----------------------------------------------------

    def records(self, sobject: str = "Contact") -> dict[str, dict[str, Any]]:
        """Stored records keyed by the sObject's first external id (by Id when it is unset)."""
        schema = self._schema(sobject)
        key_field = schema.external_ids[0].name if schema.external_ids else "Id"
        stored = self._stores[schema.name.lower()].snapshot().values()
        return {record.get(key_field) or record["Id"]: record for record in stored}

    def records_by_id(self, sobject: str = "Contact") -> dict[str, dict[str, Any]]:
        """Stored records keyed by Id (records sharing a non-unique external id included)."""
        return self._stores[self._schema(sobject).name.lower()].snapshot()

    def recycle_bin(self, sobject: str = "Contact") -> dict[str, dict[str, Any]]:
        """Deleted records by Id, as they were when deleted."""
        return self._recycle_bins[self._schema(sobject).name.lower()].snapshot()

    @property
    def api_usage(self) -> int:
        with self._lock:
            return self._api_usage

    def set_api_budget(self, budget: int) -> None:
        """The org's request budget from now on; requests already counted stay counted."""
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        with self._lock:
            self._api_budget = budget

    def _schema(self, sobject: str) -> SObjectSchema:
        schema = self._sobjects.get(sobject.lower())
        if schema is None:
            raise KeyError(f"unknown sObject {sobject!r}")
        return schema

    def _new_id(self, schema: SObjectSchema) -> str:
        return case_safe_id(f"{schema.key_prefix}Dn000{_to_base62(next(self._id_counter), 7)}")

    # -- the API's answers ---------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route(
                "PATCH",
                re.compile(rf"{_API}/composite/sobjects/(?P<sobject>\w+)/(?P<field>\w+)"),
                "PATCH /composite/sobjects/{sobject}/{externalIdField}",
                self._upsert,
            ),
            Route(
                "DELETE",
                re.compile(rf"{_API}/composite/sobjects/?"),
                "DELETE /composite/sobjects",
                self._delete,
            ),
            Route(
                "GET",
                re.compile(rf"{_API}/sobjects/(?P<sobject>\w+)/(?P<field>\w+)/(?P<value>[^/]+)"),
                "GET /sobjects/{sobject}/{externalIdField}/{value}",
                self._get_by_external_id,
            ),
            Route(
                "GET",
                re.compile(rf"{_API}/sobjects/(?P<sobject>\w+)/describe/?"),
                "GET /sobjects/{sobject}/describe",
                self._describe,
            ),
            Route(
                "GET",
                re.compile(rf"{_API}/sobjects/(?P<sobject>\w+)/(?P<id>[^/]+)"),
                "GET /sobjects/{sobject}/{id}",
                self._get_by_id,
            ),
            Route("GET", re.compile(rf"{_API}/limits/?"), "GET /limits", self._limits),
            Route("GET", re.compile(rf"{_API}/query/?"), "GET /query", self._query),
            Route(
                "GET",
                re.compile(rf"{_API}/query/(?P<locator>[0-9A-Za-z]+)-(?P<offset>\d+)"),
                "GET /query/{locator}",
                self._query_more,
            ),
            Route("POST", re.compile(r"/services/oauth2/token"), TOKEN_ENDPOINT, self._oauth_token),
        ]

    def _authenticate(self, request: Request) -> Response | None:
        if request.path == "/services/oauth2/token":
            return None  # the token endpoint checks the client's credentials itself
        token, expired = self._token_state()
        if expired or not same_secret(bearer_token(request), token):
            return _sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        return None

    def _admit(self, request: Request, route: Route | None) -> tuple[Response | None, Headers]:
        """Concurrency, then the rate window, then the org's budget; a refusal is not counted."""
        over = _sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        if self._max_concurrent is not None and self._in_flight_count() > self._max_concurrent:
            return _sf_error(
                403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."
            ), self._usage_header()
        refusal, _ = super()._admit(request, route)
        if refusal is not None:
            return refusal, self._usage_header()
        with self._lock:
            if self._api_usage >= self._api_budget:
                refusal = over
            else:
                self._api_usage += 1
        return refusal, self._usage_header()

    def _usage_header(self) -> Headers:
        with self._lock:
            return (("Sforce-Limit-Info", f"api-usage={self._api_usage}/{self._api_budget}"),)

    def _limited(self, admission: Admission) -> Response:
        return _sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")

    def _fault(self, status: int, retry_after: float | None) -> Response:
        if status in (502, 504):
            return proxy_error_page(status)
        codes = {
            400: ("INVALID_INPUT", "The request was invalid."),
            401: ("INVALID_SESSION_ID", "Session expired or invalid"),
            403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
            404: ("NOT_FOUND", "The requested resource does not exist"),
            503: ("SERVER_UNAVAILABLE", "Server temporarily unavailable."),
        }
        code, message = codes.get(
            status,
            (
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact "
                "support: 1234567890-12345 (-1234567890)",
            ),
        )
        headers = () if retry_after is None else (("Retry-After", f"{retry_after:g}"),)
        return _sf_error(status, code, message, headers)

    def _not_found(self, request: Request, allowed: list[str]) -> Response:
        if allowed:
            return _sf_error(
                405,
                "METHOD_NOT_ALLOWED",
                f"HTTP Method '{request.method}' not allowed. Allowed are {','.join(allowed)}",
            )
        return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")

    def _internal_error(self) -> Response:
        return self._fault(500, None)

    def _schema_or_404(self, name: str) -> SObjectSchema:
        schema = self._sobjects.get(name.lower())
        if schema is None:
            raise ApiError(_sf_error(404, "NOT_FOUND", "The requested resource does not exist"))
        return schema

    def _external_id_or_404(self, schema: SObjectSchema, name: str) -> SObjectField:
        spec = schema.field(name)
        if spec is None or not spec.external_id:
            raise ApiError(
                _sf_error(
                    404,
                    "NOT_FOUND",
                    f"Provided external ID field does not exist or is not accessible: {name}",
                )
            )
        return spec

    # -- upsert --------------------------------------------------------------------------------

    def _upsert(self, request: Request, match: re.Match[str]) -> Response:
        if float(match["version"]) < MIN_COLLECTION_UPSERT_VERSION:
            return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        schema = self._schema_or_404(match["sobject"])
        ext = self._external_id_or_404(schema, match["field"])
        payload = parse_json(request, lambda why: _sf_error(400, "JSON_PARSER_ERROR", why))
        try:
            body = _UpsertBody.model_validate(payload)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            return _sf_error(400, "JSON_PARSER_ERROR", f"{first['msg']}: {where}")
        if len(body.records) > MAX_RECORDS:
            return _sf_error(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_RECORDS} records into this "
                "call",
            )
        # Whole-request checks come first (as Salesforce deserializes before saving anything).
        prepared = [self._prepare(schema, ext, record) for record in body.records]
        ext_values = [key for key, _, _ in prepared]
        counts: dict[str, int] = {}
        for key in ext_values:
            if key is not None:
                counts[key.lower()] = counts.get(key.lower(), 0) + 1
        store = self._stores[schema.name.lower()]
        allow_save = _allow_save(request)
        now = _now()
        results: list[dict[str, Any]] = []
        with store.transaction() as txn:
            for key, values, errors in prepared:
                if key is None:
                    results.append(_failure(errors))
                    continue
                if counts[key.lower()] > 1:
                    duplicate = _save_error(
                        "DUPLICATE_VALUE", f"Duplicate external id specified: {key}", [ext.name]
                    )
                    results.append(_failure([duplicate, *errors]))
                    continue
                matches = txn.lookup_all(ext.name, key.lower())
                if len(matches) > 1:
                    message = (
                        f"{ext.label}: more than one record found for external id field: "
                        f"[{', '.join(matches)}]"
                    )
                    results.append(_failure([_save_error("DUPLICATE_EXTERNAL_ID", message)]))
                    continue
                existing_id = matches[0] if matches else None
                errors = [*errors, *_required_errors(schema, values, create=existing_id is None)]
                if not errors:
                    errors = self._duplicates(txn, schema, values, existing_id, allow_save)
                if errors:
                    results.append(_failure(errors))
                    continue
                if existing_id is None:
                    record_id = self._new_id(schema)
                    record: dict[str, Any] = {"Id": record_id}
                    record.update({f.name: None for f in schema.fields})
                    record.update(values)
                    record[ext.name] = key
                    record.update(CreatedDate=now, LastModifiedDate=now, SystemModstamp=now)
                else:
                    record_id = existing_id
                    record = txn.get(existing_id) or {}
                    record.update(values)
                    record.update(LastModifiedDate=now, SystemModstamp=now)
                txn.put(record_id, record)
                results.append(
                    {"id": record_id, "success": True, "errors": [], "created": existing_id is None}
                )
            if body.all_or_none and any(not result["success"] for result in results):
                txn.rollback()
                results = [
                    result if not result["success"] else _failure([_ROLLED_BACK])
                    for result in results
                ]
        return json_response(200, results)

    def _prepare(
        self, schema: SObjectSchema, ext: SObjectField, record: Any
    ) -> tuple[str | None, dict[str, Any], list[dict[str, Any]]]:
        """One record's (external id, coerced values, per-record errors); raises ``ApiError``
        for what fails the whole call (no type, unknown field, a value of the wrong JSON type)."""
        if not isinstance(record, dict):
            raise ApiError(
                _sf_error(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {schema.name} from {_json_kind(record)} value",
                )
            )
        attributes = record.get("attributes")
        declared = attributes.get("type") if isinstance(attributes, dict) else None
        if not isinstance(declared, str) or not declared:
            raise ApiError(_sf_error(400, "INVALID_TYPE", "Must send a concrete entity type."))
        if declared.lower() != schema.name.lower():
            raise ApiError(
                _sf_error(
                    400,
                    "INVALID_TYPE",
                    f"Cannot upsert {declared} records with a request URI for {schema.name}",
                )
            )
        values: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for name, raw in record.items():
            if name == "attributes" or name.lower() == "id":
                continue
            spec = schema.field(name)
            if spec is None:
                raise ApiError(
                    _sf_error(
                        400,
                        "INVALID_FIELD",
                        f"No such column '{name}' on sobject of type {schema.name}",
                    )
                )
            try:
                value = _coerce(spec, raw)
            except _Uncoercible as bad:
                if self.type_errors == "request" or isinstance(raw, dict | list):
                    raise ApiError(
                        _sf_error(
                            400,
                            "JSON_PARSER_ERROR",
                            f"Cannot deserialize instance of {bad.java_type} from "
                            f"{_json_kind(raw)} value {raw} or request may be missing a required "
                            "field",
                        )
                    ) from None
                errors.append(
                    _save_error(
                        "INVALID_TYPE_ON_FIELD_IN_RECORD",
                        f"{spec.label}: value not of required type: {raw}",
                        [spec.name],
                    )
                )
                continue
            if isinstance(value, str) and spec.max_length and len(value) > spec.max_length:
                errors.append(
                    _save_error(
                        "STRING_TOO_LONG",
                        f"{spec.label}: data value too large: {value} "
                        f"(max length={spec.max_length})",
                        [spec.name],
                    )
                )
                continue
            if spec.type == "email" and value not in (None, "") and not is_email(value):
                errors.append(
                    _save_error(
                        "INVALID_EMAIL_ADDRESS",
                        f"{spec.label}: invalid email address: {value}",
                        [spec.name],
                    )
                )
                continue
            values[spec.name] = value
        key = values.pop(ext.name, None)
        if key is None or not str(key).strip():
            return None, values, [_save_error("MISSING_ARGUMENT", f"{ext.name} not specified")]
        return str(key), values, errors

    # -- delete and reads ----------------------------------------------------------------------

    def _delete(self, request: Request, match: re.Match[str]) -> Response:
        raw_ids = request.query.get("ids", "")
        ids = [part.strip() for part in raw_ids.split(",") if part.strip()]
        if not ids:
            return _sf_error(400, "MISSING_ARGUMENT", "ids not specified")
        if len(ids) > MAX_RECORDS:
            return _sf_error(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_RECORDS} records into this "
                "call",
            )
        raw_all_or_none = request.query.get("allOrNone", "false").lower()
        if raw_all_or_none not in ("true", "false"):
            return _sf_error(
                400, "INVALID_QUERY_PARAMETER_VALUE", f"Invalid allOrNone: {raw_all_or_none}"
            )
        all_or_none = raw_all_or_none == "true"
        prefixes = {schema.key_prefix: schema for schema in self._sobjects.values()}
        results: list[dict[str, Any]] = []
        # Every store is locked, in a fixed order, so the call is one transaction across sObjects.
        with contextlib.ExitStack() as stack:
            txns = {
                name: stack.enter_context(self._stores[name].transaction())
                for name in sorted(self._stores)
            }
            bins = {
                name: stack.enter_context(self._recycle_bins[name].transaction())
                for name in sorted(self._recycle_bins)
            }
            for raw in ids:
                record_id = _normalise_id(raw)
                schema = prefixes.get(record_id[:3]) if record_id else None
                if record_id is None:
                    results.append(_failure([_save_error("MALFORMED_ID", f"malformed id {raw}")]))
                elif schema is None or txns[schema.name.lower()].get(record_id) is None:
                    deleted = schema is not None and bins[schema.name.lower()].get(record_id)
                    error = (
                        _save_error("ENTITY_IS_DELETED", "entity is deleted")
                        if deleted
                        else _save_error(
                            "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
                        )
                    )
                    results.append(_failure([error]))
                else:
                    record = txns[schema.name.lower()].delete(record_id)
                    bins[schema.name.lower()].put(record_id, {**record, "IsDeleted": True})
                    results.append({"id": record_id, "success": True, "errors": []})
            if all_or_none and any(not result["success"] for result in results):
                for txn in (*txns.values(), *bins.values()):
                    txn.rollback()
                results = [
                    result if not result["success"] else _failure([_ROLLED_BACK])
                    for result in results
                ]
        return json_response(200, results)

    def _get_by_external_id(self, request: Request, match: re.Match[str]) -> Response:
        schema = self._schema_or_404(match["sobject"])
        ext = self._external_id_or_404(schema, match["field"])
        store = self._stores[schema.name.lower()]
        ids = store.lookup_all(ext.name, match["value"].lower())
        if len(ids) > 1:  # 300 Multiple Choices: the matching records' URLs
            base = f"/services/data/v{match['version']}/sobjects/{schema.name}"
            return json_response(300, [f"{base}/{record_id}" for record_id in ids])
        record = store.get(ids[0]) if ids else None
        if record is None:
            return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return json_response(200, _as_read(schema, record, match["version"]))

    def _get_by_id(self, request: Request, match: re.Match[str]) -> Response:
        schema = self._schema_or_404(match["sobject"])
        record_id = _normalise_id(match["id"])
        record = self._stores[schema.name.lower()].get(record_id) if record_id else None
        if record is None:
            return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return json_response(200, _as_read(schema, record, match["version"]))

    def _describe(self, request: Request, match: re.Match[str]) -> Response:
        """The sObject's fields as ``describe`` lists them (the subset a sync checks)."""
        schema = self._schema_or_404(match["sobject"])
        kinds = {"string": "string", "email": "email", "double": "double", "date": "date"}
        fields = [
            {
                "name": "Id",
                "label": f"{schema.name} ID",
                "type": "id",
                "externalId": False,
                "unique": False,
                "nillable": False,
                "createable": False,
                "updateable": False,
            }
        ] + [
            {
                "name": spec.name,
                "label": spec.label,
                "type": kinds.get(spec.type, "boolean"),
                "length": spec.max_length or 0,
                "externalId": spec.external_id,
                "unique": spec.external_id and spec.unique,
                "caseSensitive": False,
                "nillable": not spec.required,
                "createable": True,
                "updateable": True,
                "custom": spec.name.endswith("__c"),
            }
            for spec in schema.fields
        ]
        url = f"/services/data/v{match['version']}/sobjects/{schema.name}"
        return json_response(
            200,
            {
                "name": schema.name,
                "keyPrefix": schema.key_prefix,
                "custom": False,
                "createable": True,
                "updateable": True,
                "fields": fields,
                "urls": {"describe": f"{url}/describe", "sobject": url},
            },
        )

    def _limits(self, request: Request, match: re.Match[str]) -> Response:
        with self._lock:
            used, budget = self._api_usage, self._api_budget
        return json_response(
            200, {"DailyApiRequests": {"Max": budget, "Remaining": max(0, budget - used)}}
        )

    # -- duplicate rules -----------------------------------------------------------------------

    def _duplicates(
        self,
        txn: StoreTransaction,
        schema: SObjectSchema,
        values: Mapping[str, Any],
        record_id: str | None,
        allow_save: bool,
    ) -> list[dict[str, Any]]:
        """The standard duplicate rule, reduced to its email match: another record with the
        same email blocks the save (``block``), or alerts, which the API treats as a block
        unless ``Sforce-Duplicate-Rule-Header: allowSave=true`` (``alert``)."""
        if self.duplicate_rule is None or (self.duplicate_rule == "alert" and allow_save):
            return []
        emails = [f for f in schema.fields if f.type == "email"]
        for spec in emails:
            value = values.get(spec.name)
            if value in (None, ""):
                continue
            others = [i for i in txn.lookup_all(spec.name, str(value).lower()) if i != record_id]
            if others:
                return [_duplicates_detected(schema, others, allow_save=self.duplicate_rule)]
        return []

    # -- SOQL ----------------------------------------------------------------------------------

    def _query(self, request: Request, match: re.Match[str]) -> Response:
        """The SOQL subset a sync sends: ``SELECT f, ... FROM o [WHERE f IN ('a', ...) | f =
        'a'] [LIMIT n]``; pages of ``query_page_size`` linked by ``nextRecordsUrl``."""
        soql = request.query.get("q", "")
        parsed = _SOQL.fullmatch(soql.strip())
        if parsed is None:
            return _sf_error(400, "MALFORMED_QUERY", f"unexpected token in query: {soql[:200]}")
        schema = self._sobjects.get(parsed["sobject"].lower())
        if schema is None:
            message = f"sObject type '{parsed['sobject']}' is not supported."
            return _sf_error(400, "INVALID_TYPE", message)
        selected = [name.strip() for name in parsed["fields"].split(",")]
        for name in [*selected, *([parsed["field"]] if parsed["field"] else [])]:
            if name.lower() != "id" and schema.field(name) is None:
                return _sf_error(
                    400, "INVALID_FIELD", f"No such column '{name}' on entity '{schema.name}'."
                )
        store = self._stores[schema.name.lower()]
        if parsed["field"] is None:
            keys = list(store.snapshot())
        else:
            literals = parsed["list"] if parsed["list"] is not None else parsed["one"]
            values = _soql_strings(literals)
            if values is None:
                return _sf_error(400, "MALFORMED_QUERY", f"unexpected token: {literals[:200]}")
            keys = self._where(schema, parsed["field"], values)
        if parsed["limit"] is not None:
            keys = keys[: int(parsed["limit"])]
        version = match["version"]
        rows = []
        for key in keys:
            record = store.get(key)
            if record is None:
                continue
            url = f"/services/data/v{version}/sobjects/{schema.name}/{record['Id']}"
            row: dict[str, Any] = {"attributes": {"type": schema.name, "url": url}}
            for name in selected:
                spec = schema.field(name)
                row[spec.name if spec else "Id"] = record.get(spec.name if spec else "Id")
            rows.append(row)
        return self._page(rows, version, locator=None, offset=0)

    def _where(self, schema: SObjectSchema, field: str, values: list[str]) -> list[str]:
        store = self._stores[schema.name.lower()]
        spec = schema.field(field)
        keys: dict[str, None] = {}
        if spec is not None and (spec.external_id or spec.type == "email"):
            for value in values:  # text comparisons in SOQL are case-insensitive
                keys.update(dict.fromkeys(store.lookup_all(spec.name, value.lower())))
            return list(keys)
        wanted = {value.lower() for value in values}
        name = spec.name if spec is not None else "Id"
        for key, record in store.snapshot().items():
            value = record.get(name)
            if value is not None and str(value).lower() in wanted:
                keys[key] = None
        return list(keys)

    def _query_more(self, request: Request, match: re.Match[str]) -> Response:
        with self._lock:
            rows = self._cursors.get(match["locator"])
        if rows is None:
            return _sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(rows, match["version"], match["locator"], int(match["offset"]))

    def _page(
        self, rows: list[dict[str, Any]], version: str, locator: str | None, offset: int
    ) -> Response:
        end = offset + self.query_page_size
        body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows)}
        if end < len(rows):
            if locator is None:
                locator = f"01g{_to_base62(next(self._locators), 12)}"
                with self._lock:
                    self._cursors[locator] = rows
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
        body["records"] = rows[offset:end]
        return json_response(200, body)

    # -- OAuth 2.0 -----------------------------------------------------------------------------

    def _oauth_token(self, request: Request, match: re.Match[str]) -> Response:
        """``grant_type=refresh_token`` or ``client_credentials`` for the connected app the
        emulator was given; a new access token becomes the live one (the old one stops)."""
        form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        client_id, client_secret, refresh_token = self._oauth
        if client_id is None or not same_secret(form.get("client_id"), client_id):
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if client_secret is None or not same_secret(form.get("client_secret"), client_secret):
            return _oauth_error("invalid_client", "invalid client credentials")
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if refresh_token is None or not same_secret(form.get("refresh_token"), refresh_token):
                return _oauth_error("invalid_grant", "expired access/refresh token")
        elif grant != "client_credentials":
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        access_token = f"00DDn000000Emul!{secrets.token_urlsafe(48)}"
        self.set_token(access_token)
        with self._lock:
            self.tokens_issued += 1
        return json_response(
            200,
            {
                "access_token": access_token,
                "signature": secrets.token_urlsafe(32),
                "scope": "api refresh_token",
                "instance_url": self.base_url,
                "id": f"{self.base_url}/id/00DDn000000Emul/005Dn000000Emul",
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
            },
        )

    def revoke_refresh_token(self) -> None:
        """The refresh token stops working (revoked, or the connected app's policy expired it)."""
        client_id, client_secret, _ = self._oauth
        self._oauth = (client_id, client_secret, None)

    # -- as a user in the UI -------------------------------------------------------------------

    def insert(self, sobject: str, fields: Mapping[str, Any]) -> str:
        """Create a record as a user would in the UI (no upsert matching, no duplicate rule):
        how two records come to share an external id that is not marked Unique."""
        schema = self._schema(sobject)
        record_id = self._new_id(schema)
        now = _now()
        record: dict[str, Any] = {"Id": record_id, **{f.name: None for f in schema.fields}}
        record.update({schema.field(k).name: v for k, v in fields.items() if schema.field(k)})
        record.update(CreatedDate=now, LastModifiedDate=now, SystemModstamp=now)
        with self._stores[schema.name.lower()].transaction() as txn:
            txn.put(record_id, record)
        return record_id


def _external_id_index(field_name: str) -> IndexFn:
    def index(record: Mapping[str, Any]) -> str | None:
        value = record.get(field_name)
        return str(value).lower() if value not in (None, "") else None

    return index


_SOQL = re.compile(
    r"SELECT\s+(?P<fields>[\w\s,]+?)\s+FROM\s+(?P<sobject>\w+)"
    r"(?:\s+WHERE\s+(?P<field>\w+)\s*(?:IN\s*\((?P<list>.*)\)|=\s*(?P<one>'.*')))?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?",
    re.IGNORECASE | re.DOTALL,
)
_SOQL_STRING = re.compile(r"\s*'((?:[^'\\]|\\.)*)'\s*(,|$)", re.DOTALL)


def _soql_strings(text: str) -> list[str] | None:
    """The string literals of an IN list (``'a', 'b\\'c'``), or ``None`` when malformed."""
    values: list[str] = []
    position = 0
    while position < len(text):
        literal = _SOQL_STRING.match(text, position)
        if literal is None:
            return None
        values.append(re.sub(r"\\(.)", r"\1", literal.group(1)))
        position = literal.end()
        if literal.group(2) == "" and position < len(text):
            return None
    return values or None


def _allow_save(request: Request) -> bool:
    """``Sforce-Duplicate-Rule-Header: allowSave=true; ...`` (any order, any case)."""
    header = request.header("Sforce-Duplicate-Rule-Header") or ""
    options = dict(part.strip().partition("=")[::2] for part in header.split(";") if "=" in part)
    return {k.lower(): v.strip().lower() for k, v in options.items()}.get("allowsave") == "true"


def _duplicates_detected(
    schema: SObjectSchema, matches: Sequence[str], *, allow_save: DuplicateRule
) -> dict[str, Any]:
    """A save error as the REST API returns it when a duplicate rule blocks the save."""
    return {
        "statusCode": "DUPLICATES_DETECTED",
        "message": "Use one of these records?",
        "fields": [],
        "duplicateResult": {
            "allowSave": allow_save == "alert",
            "duplicateRule": DUPLICATE_RULE_NAME,
            "duplicateRuleEntityType": schema.name,
            "errorMessage": "You're creating a duplicate record. We recommend you use an "
            "existing record instead.",
            "matchResults": [
                {
                    "entityType": schema.name,
                    "errorMessage": None,
                    "matchEngine": "ExactMatchEngine",
                    "matchRecords": [
                        {
                            "additionalInformation": [],
                            "fieldDiffs": [],
                            "matchConfidence": 100.0,
                            "record": {"attributes": {"type": schema.name}, "Id": record_id},
                        }
                        for record_id in matches
                    ],
                    "rule": "Standard_Contact_Match_Rule_v1_1",
                    "size": len(matches),
                    "success": True,
                }
            ],
        },
    }


def _oauth_error(error: str, description: str) -> Response:
    return json_response(400, {"error": error, "error_description": description})


def _failure(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"success": False, "errors": errors}


def _required_errors(
    schema: SObjectSchema, values: Mapping[str, Any], *, create: bool
) -> list[dict[str, Any]]:
    """A required field must be set on create and never be blanked on update."""
    missing = [
        spec.name
        for spec in schema.fields
        if spec.required
        and not spec.external_id
        and (create or spec.name in values)
        and values.get(spec.name) in (None, "")
    ]
    if not missing:
        return []
    message = f"Required fields are missing: [{', '.join(missing)}]"
    return [_save_error("REQUIRED_FIELD_MISSING", message, missing)]


def _normalise_id(raw: str) -> str | None:
    """The 18-character id for a 15- or 18-character one; ``None`` when malformed (wrong length,
    characters, or an 18-character id whose checksum does not match)."""
    if not _ID.fullmatch(raw):
        return None
    full = case_safe_id(raw[:15])
    if len(raw) == 18 and raw.upper() != full.upper():
        return None
    return full


def _as_read(schema: SObjectSchema, record: Mapping[str, Any], version: str) -> dict[str, Any]:
    """A record as ``GET /sobjects/...`` returns it: attributes first, then every field."""
    url = f"/services/data/v{version}/sobjects/{schema.name}/{record['Id']}"
    body: dict[str, Any] = {"attributes": {"type": schema.name, "url": url}}
    body["Id"] = record["Id"]
    body["IsDeleted"] = False
    for spec in schema.fields:
        body[spec.name] = record.get(spec.name)
    for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
        body[name] = record.get(name)
    return body


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-budget",
        type=int,
        default=DEFAULT_API_BUDGET,
        help="Salesforce: the org's request budget (403 REQUEST_LIMIT_EXCEEDED beyond it)",
    )


EMULATOR = EmulatorInfo(
    build=lambda args, settings: SalesforceEmulator(
        token=settings["access_token"],
        port=args.port,
        api_budget=args.api_budget,
        rate_limit=rate_limit_from_args(args, None),
    ),
    add_arguments=_add_arguments,
    secrets=("access_token",),  # OAuth flows: the tests start the emulator with a client app
)
