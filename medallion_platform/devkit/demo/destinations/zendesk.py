"""A local emulator of Zendesk Support's bulk users API, for reverse-ETL syncs.

What a sync to Zendesk leans on, in Zendesk's shapes: ``create_or_update_many`` (at most 100
users, matched by ``external_id`` then ``email``) answers at once with a queued ``job_status``
that a background worker completes later, so the client has to poll
``/api/v2/job_statuses/{id}`` for per-user ``Created``/``Updated``/``Failed`` results;
``destroy_many`` (the bulk delete, a job too) for mirror mode; ``show_many`` to find users; API
token (``{email}/token``) Basic auth; and the per-minute rate limit answered with 429, a
``Retry-After`` header and a plain-text body, ``X-Rate-Limit``/``X-Rate-Limit-Remaining`` on
every response.

Where the real service is less forgiving than a demo would like, the emulator is too, by
default: job results carry ``id``, ``status``, ``email``/``external_id`` and ``error``/``details``
in input order but no ``index`` (``result_index=True`` adds it); a ``tags`` list replaces all of
a user's tags, agents' included. Account settings can be switched off as on a fresh account:
``bulk_import=False`` answers ``create_or_update_many`` with 403 (bulk user imports are enabled
by Zendesk Support on the account owner's request), ``user_tagging=False`` ignores ``tags`` on
users without a word (Admin Center > People > Configuration > Tags on users and organizations).

As a process (the token comes from the environment so it never shows in ``ps``)::

    ZENDESK_API_TOKEN=... python -m medallion_platform.devkit.demo.destinations zendesk
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import itertools
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from medallion_platform.devkit.demo.destinations.common import (
    EmulatorInfo,
    RecordStore,
    StoreTransaction,
    is_email,
    rate_limit_from_args,
    utc_timestamp,
)
from medallion_platform.devkit.demo.http_emulator import (
    Admission,
    EmulatorServer,
    Headers,
    RateLimit,
    Request,
    Response,
    Route,
    basic_credentials,
    bearer_token,
    json_response,
    parse_json,
    proxy_error_page,
    same_secret,
    text_response,
)

DEFAULT_EMAIL = "integrations@acme-outfitters.test"
MAX_USERS = 100  # per create_or_update_many, destroy_many and show_many
DEFAULT_RATE_LIMIT = RateLimit(max_requests=700, window_seconds=60)  # Enterprise plan
DEFAULT_JOB_DELAY = 0.5  # seconds a job stays queued
MAX_ACTIVE_JOBS = 30  # queued or working jobs per account
FIRST_USER_ID = 9_100_000_001

UserFieldType = Literal["text", "decimal", "integer", "date", "checkbox", "dropdown"]
JobStatus = Literal["queued", "working", "completed", "failed"]

_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")
_JSON = r"(?:\.json)?"


class UserField(BaseModel):
    """A custom user field as defined in Admin Center: its key, type and dropdown options."""

    model_config = ConfigDict(frozen=True)

    key: str
    type: UserFieldType
    options: tuple[str, ...] = ()


USER_FIELDS: tuple[UserField, ...] = (
    UserField(key="ltv", type="decimal"),
    UserField(key="churn_risk", type="decimal"),
    UserField(key="segment", type="text"),
    UserField(key="last_order_date", type="date"),
)


@dataclass
class _Job:
    id: str
    kind: Literal["create_or_update", "destroy"]
    items: list[Any]
    ready_at: float
    by_external_id: bool = False
    status: JobStatus = "queued"
    progress: int = 0
    message: str | None = None
    results: list[dict[str, Any]] | None = None
    fail_with: str | None = None
    created: float = field(default_factory=time.time)


def _zd_error(status: int, error: str, description: str, headers: Headers = ()) -> Response:
    return json_response(status, {"error": error, "description": description}, headers)


def _now() -> str:
    return utc_timestamp(millis=False)


class ZendeskEmulator(EmulatorServer):
    """Serves the bulk users endpoints and job statuses on loopback; jobs run on a worker thread.

    ``records()`` shows the users keyed by external_id (email, then id, when unset);
    ``deleted()`` the soft-deleted ones. ``job_delay`` is how long a job stays queued and
    ``job_work_seconds`` how long it is ``working`` before its results land; ``wait_for_jobs``
    blocks until every job has finished, and ``fail_next_jobs`` makes jobs end ``failed``.
    """

    name = "zendesk"

    def __init__(
        self,
        *,
        token: str,
        email: str = DEFAULT_EMAIL,
        host: str = "127.0.0.1",
        port: int = 0,
        user_fields: Sequence[UserField] = USER_FIELDS,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        job_delay: float = DEFAULT_JOB_DELAY,
        job_work_seconds: float = 0.0,
        max_active_jobs: int = MAX_ACTIVE_JOBS,
        bulk_import: bool = True,
        user_tagging: bool = True,
        result_index: bool = False,
    ) -> None:
        if job_delay < 0 or job_work_seconds < 0:
            raise ValueError("job_delay and job_work_seconds must be >= 0")
        if max_active_jobs < 1:
            raise ValueError(f"max_active_jobs must be >= 1, got {max_active_jobs}")
        self._email = email
        self._fields = {definition.key: definition for definition in user_fields}
        self._users = RecordStore(
            {
                "external_id": lambda user: user.get("external_id"),
                "email": lambda user: user["email"].lower() if user.get("email") else None,
            }
        )
        self._deleted = RecordStore()
        self._ids = itertools.count(FIRST_USER_ID)
        self.job_delay = job_delay
        self.job_work_seconds = job_work_seconds
        self._max_active_jobs = max_active_jobs
        self.bulk_import = bulk_import
        self.user_tagging = user_tagging
        self.result_index = result_index
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[str] = deque()
        self._jobs_changed = threading.Condition()
        self._failing_jobs: list[str] = []
        self._stopping = False
        self._worker: threading.Thread | None = None
        super().__init__(token=token, host=host, port=port, rate_limit=rate_limit)

    # -- lifecycle: the job worker lives as long as the server ---------------------------------

    def start(self) -> ZendeskEmulator:
        super().start()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="zendesk-jobs", daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        with self._jobs_changed:
            self._stopping = True
            self._jobs_changed.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5)
        super().stop()

    # -- what a test inspects and controls -----------------------------------------------------

    def records(self) -> dict[str, dict[str, Any]]:
        """Live users keyed by external_id (by email, then by id, for users without one)."""
        return {
            user.get("external_id") or user.get("email") or str(user["id"]): user
            for user in self._users.snapshot().values()
        }

    def deleted(self) -> dict[str, dict[str, Any]]:
        """Soft-deleted users by id (``active`` false), as ``destroy_many`` left them."""
        return self._deleted.snapshot()

    def job_statuses(self) -> list[dict[str, Any]]:
        """Every job's status, oldest first, as the job_statuses endpoint shows it."""
        with self._jobs_changed:
            jobs = sorted(self._jobs.values(), key=lambda job: job.created)
            return [self._job_view(job) for job in jobs]

    def fail_next_jobs(self, count: int = 1, *, message: str = "Internal Server Error") -> None:
        """The next ``count`` jobs to run end ``failed`` with ``message``, writing nothing."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        with self._jobs_changed:
            self._failing_jobs.extend([message] * count)

    def tag_user(self, external_id: str, *tags: str) -> None:
        """An agent adds ``tags`` to a user in the Zendesk UI (tagging must be on)."""
        with self._users.transaction() as txn:
            key = txn.lookup("external_id", external_id)
            user = txn.get(key) if key is not None else None
            if user is None:
                raise KeyError(f"no user with external_id {external_id!r}")
            user["tags"] = list(dict.fromkeys([*user["tags"], *(t.lower() for t in tags)]))
            txn.put(key, user)

    def wait_for_jobs(self, timeout: float = 5.0) -> None:
        """Block until no job is queued or working (``TimeoutError`` after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._jobs_changed:
            while any(job.status in ("queued", "working") for job in self._jobs.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("Zendesk jobs still running")
                self._jobs_changed.wait(left)

    # -- the API's answers ---------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                re.compile(rf"/api/v2/users/create_or_update_many{_JSON}"),
                "POST /api/v2/users/create_or_update_many",
                self._create_or_update_many,
            ),
            Route(
                "DELETE",
                re.compile(rf"/api/v2/users/destroy_many{_JSON}"),
                "DELETE /api/v2/users/destroy_many",
                self._destroy_many,
            ),
            Route(
                "GET",
                re.compile(rf"/api/v2/users/show_many{_JSON}"),
                "GET /api/v2/users/show_many",
                self._show_many,
            ),
            Route(
                "GET",
                re.compile(rf"/api/v2/user_fields{_JSON}"),
                "GET /api/v2/user_fields",
                self._list_user_fields,
            ),
            Route(
                "GET",
                re.compile(rf"/api/v2/users/(?P<id>\d+){_JSON}"),
                "GET /api/v2/users/{id}",
                self._show_user,
            ),
            Route(
                "GET",
                re.compile(rf"/api/v2/job_statuses/(?P<id>[0-9A-Za-z]+){_JSON}"),
                "GET /api/v2/job_statuses/{id}",
                self._show_job,
            ),
        ]

    def _authenticate(self, request: Request) -> Response | None:
        """API token (``{email}/token:{token}`` Basic) or a Bearer token; anything else is 401."""
        token, expired = self._token_state()
        credentials = basic_credentials(request)
        if credentials is not None:
            user, secret = credentials
            valid = same_secret(user.lower(), f"{self._email.lower()}/token") and same_secret(
                secret, token
            )
        else:
            valid = same_secret(bearer_token(request), token)
        if expired or not valid:
            return json_response(401, {"error": "Couldn't authenticate you"})
        return None

    def _limit_headers(self, admission: Admission) -> Headers:
        return (
            ("X-Rate-Limit", str(admission.limit)),
            ("X-Rate-Limit-Remaining", str(admission.remaining)),
        )

    def _limited(self, admission: Admission) -> Response:
        retry_after = max(1, math.ceil(admission.retry_after))
        return text_response(
            429,
            "Number of allowed API requests per minute exceeded",
            (("Retry-After", str(retry_after)),),
        )

    def _fault(self, status: int, retry_after: float | None) -> Response:
        if status in (502, 504):
            return proxy_error_page(status)
        if status == 429:
            seconds = 1.0 if retry_after is None else retry_after
            return self._limited(Admission(False, 0, 0, seconds))
        headers = () if retry_after is None else (("Retry-After", f"{retry_after:g}"),)
        if status == 401:
            return json_response(401, {"error": "Couldn't authenticate you"}, headers)
        if status == 404:
            return _zd_error(404, "RecordNotFound", "Not found", headers)
        if status == 503:
            return _zd_error(503, "ServiceUnavailable", "Service Unavailable", headers)
        if status >= 500:
            return _zd_error(status, "InternalServerError", "Internal Server Error", headers)
        return _zd_error(status, "InvalidValue", "Invalid request", headers)

    def _not_found(self, request: Request, allowed: list[str]) -> Response:
        if allowed:
            return _zd_error(405, "MethodNotAllowed", f"{request.method} is not allowed here")
        return _zd_error(404, "InvalidEndpoint", "Not found")

    def _internal_error(self) -> Response:
        return self._fault(500, None)

    # -- jobs ----------------------------------------------------------------------------------

    def _enqueue(self, job: _Job) -> Response:
        with self._jobs_changed:
            active = sum(job.status in ("queued", "working") for job in self._jobs.values())
            if active >= self._max_active_jobs:
                return _zd_error(
                    429,
                    "TooManyJobs",
                    f"Number of allowed background jobs exceeded: {self._max_active_jobs} jobs "
                    "can be queued or running at once",
                    (("Retry-After", "1"),),
                )
            self._jobs[job.id] = job
            self._queue.append(job.id)
            self._jobs_changed.notify_all()
            return json_response(200, {"job_status": self._job_view(job)})

    def _job_view(self, job: _Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "url": f"{self.base_url}/api/v2/job_statuses/{job.id}.json",
            "total": len(job.items),
            "progress": job.progress,
            "status": job.status,
            "message": job.message,
            "results": copy.deepcopy(job.results),
        }

    def _work(self) -> None:
        """Run queued jobs in order, each once its delay is over; results land atomically."""
        while True:
            with self._jobs_changed:
                while not self._stopping:
                    if self._queue:
                        job = self._jobs[self._queue[0]]
                        wait = job.ready_at - time.monotonic()
                        if wait <= 0:
                            break
                        self._jobs_changed.wait(wait)
                    else:
                        self._jobs_changed.wait()
                if self._stopping:
                    return
                self._queue.popleft()
                job.status = "working"
                job.fail_with = self._failing_jobs.pop(0) if self._failing_jobs else None
                self._jobs_changed.notify_all()
            if self.job_work_seconds:
                time.sleep(self.job_work_seconds)
            if job.fail_with is not None:
                results = None
            elif job.kind == "create_or_update":
                results = self._run_upserts(job.items)
            else:
                results = self._run_destroys(job.items, by_external_id=job.by_external_id)
            with self._jobs_changed:
                if results is None:
                    job.status, job.message = "failed", job.fail_with
                else:
                    job.status, job.results = "completed", results
                    job.progress = len(job.items)
                    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S +0000")
                    job.message = f"Completed at {stamp}"
                self._jobs_changed.notify_all()

    def _run_upserts(self, users: list[Any]) -> list[dict[str, Any]]:
        with self._users.transaction() as txn:
            results = [self._upsert_user(txn, index, user) for index, user in enumerate(users)]
        return self._indexed(results)

    def _indexed(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Zendesk's results are in input order without ``index``, unless asked otherwise."""
        if self.result_index:
            return results
        return [{k: v for k, v in result.items() if k != "index"} for result in results]

    def _upsert_user(self, txn: StoreTransaction, index: int, user: Any) -> dict[str, Any]:
        """One user of a create_or_update_many job: matched by external_id, then by email."""
        if not isinstance(user, dict):
            return _failed(index, "UserUpdateError", "User: is invalid", {})
        external_id = user.get("external_id")
        external_id = str(external_id) if external_id not in (None, "") else None
        email = user.get("email")
        problems: list[str] = []
        if email is not None and (not isinstance(email, str) or not is_email(email.strip())):
            problems.append(f"Email: {email} is not properly formatted")
        email = email.strip() if isinstance(email, str) and not problems else None
        found = txn.lookup("external_id", external_id) if external_id else None
        if found is None and email:
            found = txn.lookup("email", email.lower())
        if email and found is not None:
            holder = txn.lookup("email", email.lower())
            if holder is not None and holder != found:
                problems.append(f"Email: {email} is already being used by another user")
        name = user.get("name")
        if (found is None or "name" in user) and (not isinstance(name, str) or not name.strip()):
            problems.append("Name: is too short (minimum one character)")
        tags = user.get("tags")
        if tags is not None and (
            not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags)
        ):
            problems.append("Tags: must be a list of strings")
        fields, field_problems = self._user_fields(user.get("user_fields"))
        problems += field_problems
        echo = {"external_id": external_id, "email": email or user.get("email")}
        if problems:
            return _failed(index, "UserUpdateError", "; ".join(problems), echo)
        now = _now()
        if found is None:
            user_id = next(self._ids)
            record: dict[str, Any] = {
                "id": user_id,
                "name": None,
                "email": None,
                "external_id": None,
                "tags": [],
                "user_fields": dict.fromkeys(self._fields),
                "role": "end-user",
                "active": True,
                "created_at": now,
            }
        else:
            record = txn.get(found) or {}
            user_id = record["id"]
        if isinstance(name, str) and name.strip():
            record["name"] = name.strip()
        if email:
            record["email"] = email.lower()
        if external_id:
            record["external_id"] = external_id
        if tags is not None and self.user_tagging:  # tagging off: ignored without a word
            record["tags"] = list(dict.fromkeys(tag.strip().lower() for tag in tags if tag.strip()))
        record["user_fields"].update(fields)
        record["updated_at"] = now
        txn.put(str(user_id), record)
        action = "create" if found is None else "update"
        result = {
            "index": index,
            "id": user_id,
            "action": action,
            "status": "Created" if found is None else "Updated",
            "success": True,
        }
        return result | {key: value for key, value in echo.items() if value is not None}

    def _user_fields(self, raw: Any) -> tuple[dict[str, Any], list[str]]:
        """Coerce ``user_fields`` to the defined types; unknown keys and bad values are refused."""
        if raw is None:
            return {}, []
        if not isinstance(raw, dict):
            return {}, ["User fields: must be an object"]
        values: dict[str, Any] = {}
        problems: list[str] = []
        for key, value in raw.items():
            definition = self._fields.get(key)
            if definition is None:
                problems.append(f"User fields: {key} is not a defined user field")
                continue
            coerced = _coerce_field(definition, value)
            if coerced is _INVALID:
                problems.append(f"User fields: {key} {value!r} is not a valid {definition.type}")
            else:
                values[key] = coerced
        return values, problems

    def _run_destroys(self, keys: list[str], *, by_external_id: bool) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        with self._users.transaction() as txn, self._deleted.transaction() as bin_:
            for index, key in enumerate(keys):
                user_key = txn.lookup("external_id", key) if by_external_id else key
                echo = {"external_id": key} if by_external_id else {"id": int(key)}
                if user_key is None or txn.get(user_key) is None:
                    results.append(_failed(index, "RecordNotFound", "User not found", echo))
                    continue
                user = txn.delete(user_key)
                bin_.put(user_key, {**user, "active": False, "updated_at": _now()})
                results.append(
                    {
                        "index": index,
                        "id": user["id"],
                        "action": "delete",
                        "status": "Deleted",
                        "success": True,
                    }
                    | ({"external_id": key} if by_external_id else {})
                )
        return self._indexed(results)

    # -- endpoints -----------------------------------------------------------------------------

    def _create_or_update_many(self, request: Request, match: re.Match[str]) -> Response:
        if not self.bulk_import:
            return _zd_error(
                403,
                "Forbidden",
                "You do not have access to this page. Please contact the account owner of this "
                "help desk for further help.",
            )
        payload = parse_json(
            request, lambda why: _zd_error(400, "InvalidJSON", f"The JSON body is invalid: {why}")
        )
        users = payload.get("users") if isinstance(payload, dict) else None
        if not isinstance(users, list) or not users:
            return _zd_error(400, "InvalidValue", "users must be a non-empty array of user objects")
        if len(users) > MAX_USERS:
            return _too_many("users", len(users))
        job = _Job(_job_id(), "create_or_update", users, time.monotonic() + self.job_delay)
        return self._enqueue(job)

    def _destroy_many(self, request: Request, match: re.Match[str]) -> Response:
        keys, by_external_id = _id_list(request)
        if not keys:
            return _zd_error(400, "InvalidValue", "Provide ids or external_ids (comma separated)")
        if len(keys) > MAX_USERS:
            return _too_many("external_ids" if by_external_id else "ids", len(keys))
        if not by_external_id and not all(key.isdigit() for key in keys):
            return _zd_error(400, "InvalidValue", "ids must be integers")
        job = _Job(_job_id(), "destroy", keys, time.monotonic() + self.job_delay, by_external_id)
        return self._enqueue(job)

    def _show_many(self, request: Request, match: re.Match[str]) -> Response:
        keys, by_external_id = _id_list(request)
        if len(keys) > MAX_USERS:
            return _too_many("external_ids" if by_external_id else "ids", len(keys))
        users = []
        for key in keys:
            user_key = self._users.lookup("external_id", key) if by_external_id else key
            user = self._users.get(user_key) if user_key is not None else None
            if user is not None:
                users.append(self._user_view(user))
        return json_response(200, {"users": users})

    def _show_user(self, request: Request, match: re.Match[str]) -> Response:
        user = self._users.get(match["id"]) or self._deleted.get(match["id"])
        if user is None:
            return _zd_error(404, "RecordNotFound", "Not found")
        return json_response(200, {"user": self._user_view(user)})

    def _list_user_fields(self, request: Request, match: re.Match[str]) -> Response:
        """The account's custom user fields (Admin Center > People > Configuration)."""
        fields = [
            {
                "id": 360_000_000 + position,
                "url": f"{self.base_url}/api/v2/user_fields/{360_000_000 + position}.json",
                "key": definition.key,
                "type": definition.type,
                "title": definition.key.replace("_", " ").title(),
                "active": True,
                "position": position,
                "custom_field_options": [{"name": o, "value": o} for o in definition.options],
            }
            for position, definition in enumerate(self._fields.values())
        ]
        return json_response(
            200,
            {"user_fields": fields, "next_page": None, "previous_page": None, "count": len(fields)},
        )

    def _show_job(self, request: Request, match: re.Match[str]) -> Response:
        with self._jobs_changed:
            job = self._jobs.get(match["id"])
            if job is None:
                return _zd_error(404, "RecordNotFound", "Not found")
            return json_response(200, {"job_status": self._job_view(job)})

    def _user_view(self, user: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": user["id"], "url": f"{self.base_url}/api/v2/users/{user['id']}.json"} | {
            key: value for key, value in user.items() if key != "id"
        }


_INVALID = object()


def _coerce_field(definition: UserField, value: Any) -> Any:
    """A user field value as Zendesk stores it, or ``_INVALID``; ``null`` clears the field."""
    if value is None:
        return None
    kind = definition.type
    if kind == "checkbox":
        return value if isinstance(value, bool) else _INVALID
    if isinstance(value, bool | dict | list):
        return _INVALID
    if kind == "text":
        return str(value)
    if kind == "decimal":
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        return float(value) if isinstance(value, str) and _DECIMAL.fullmatch(value) else _INVALID
    if kind == "integer":
        if isinstance(value, int):
            return value
        return int(value) if isinstance(value, str) and re.fullmatch(r"-?\d+", value) else _INVALID
    if kind == "date":
        try:
            return dt.date.fromisoformat(value).isoformat() if len(str(value)) == 10 else _INVALID
        except (TypeError, ValueError):
            return _INVALID
    return value if value in definition.options else _INVALID


def _failed(index: int, error: str, details: str, echo: Mapping[str, Any]) -> dict[str, Any]:
    result = {"index": index, "status": "Failed", "error": error, "details": details}
    return result | {key: value for key, value in echo.items() if value is not None}


def _too_many(parameter: str, count: int) -> Response:
    return _zd_error(
        400,
        "TooManyValues",
        f"Too many values specified for {parameter}: {count} (maximum {MAX_USERS})",
    )


def _id_list(request: Request) -> tuple[list[str], bool]:
    """The ``ids`` or ``external_ids`` query parameter as a list, and which one it was."""
    by_external_id = "external_ids" in request.query and "ids" not in request.query
    raw = request.query.get("external_ids" if by_external_id else "ids", "")
    return [part.strip() for part in raw.split(",") if part.strip()], by_external_id


def _job_id() -> str:
    return uuid.uuid4().hex


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--job-delay",
        type=float,
        default=DEFAULT_JOB_DELAY,
        help="Zendesk: seconds a job stays queued before it runs",
    )


EMULATOR = EmulatorInfo(
    build=lambda args, settings: ZendeskEmulator(
        token=settings["api_token"],
        email=settings.get("email") or DEFAULT_EMAIL,
        port=args.port,
        rate_limit=rate_limit_from_args(args, DEFAULT_RATE_LIMIT),
        job_delay=args.job_delay,
    ),
    add_arguments=_add_arguments,
    demo_settings={"email": DEFAULT_EMAIL},
    # Jobs wait 0.5 s by default before running; the demo needs no such patience.
    demo_args=("--job-delay", "0.05"),
)
