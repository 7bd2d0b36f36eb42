"""Zendesk Support: end users created or updated in bulk by ``external_id``.

- upsert: ``POST /api/v2/users/create_or_update_many.json`` (at most 100 users) answers with a
  queued job; ``GET /api/v2/job_statuses/{id}.json`` is polled until the job is ``completed``
  (per-user ``Created`` / ``Updated`` / ``Failed`` results, matched by ``index``) or ``failed``
  (nothing written: the job is submitted again, at most ``job_attempts`` times in all).
- update (update-only): ``GET /api/v2/users/show_many.json?external_ids=...`` (100 a call) finds
  the users that exist; only those are sent.
- remove: ``DELETE /api/v2/users/destroy_many.json?ids=...`` (or ``?external_ids=...`` for an
  identity without its Zendesk id), a job too; "not found" counts as already gone.

Jobs are pipelined: given more than 100 records, the client keeps up to ``max_jobs_in_flight``
jobs queued at once (Zendesk allows 30 per account) and polls each when it should be done. The
first poll comes after the time recent jobs took (learned as jobs finish); a job not done by
then is polled again after a quarter of that, then less and less often (x1.5, up to
``poll_max_s``). Polls are requests like any other: paced, and counted against the rate limit.
A new job is submitted only while the window has a request left for each job in flight, so
submissions do not use up the requests the jobs in flight need for their polls.

Rate limit: requests per minute by plan (Team 200, Growth/Professional 400, Enterprise 700,
Enterprise Plus 2500); the client starts at 700/min and follows ``X-Rate-Limit`` and
``X-Rate-Limit-Remaining`` from every response. A 429 (the rate limit, or too many queued
jobs) is waited out for its ``Retry-After`` and retried.

Auth: API token, ``Basic base64("{email}/token:{api_token}")``.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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

MAX_USERS = 100
DEFAULT_RATE_LIMIT = RateLimit(max_requests=700, window_seconds=60)  # Enterprise plan
USER_FIELDS_PREFIX = "user_fields."
FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec(name="external_id", type="string"),
        FieldSpec(name="email", type="string"),
        FieldSpec(name="name", type="string"),
        FieldSpec(name="tags", type="string_list"),
        FieldSpec(name="user_fields.ltv", type="number"),
        FieldSpec(name="user_fields.churn_risk", type="number"),
        FieldSpec(name="user_fields.segment", type="string"),
        FieldSpec(name="user_fields.last_order_date", type="date"),
    )
}
"""The demo end user's writable fields; ``user_fields.<key>`` are custom user fields."""

_GONE = frozenset({"RecordNotFound"})


@dataclass
class _Job:
    """One batch's way through Zendesk: submitted, polled, done (or failed and resubmitted)."""

    number: int
    method: str
    path: str
    params: dict[str, str] | None = None
    body: Any = None
    attempts: int = 0
    job_id: str | None = None
    submitted_at: float = 0.0
    next_poll: float = 0.0
    poll_delay: float = 0.0
    polls: int = 0
    result: dict[str, Any] | None = field(default=None, repr=False)


class ZendeskDestination(HttpDestination):
    """End users upserted by ``external_id`` through bulk jobs."""

    info = DestinationInfo(
        name="zendesk",
        objects=("users",),
        identity_fields=("external_id",),  # create_or_update_many matches by it
        fields=FIELDS,
        max_batch=MAX_USERS,
        env=(
            EnvSetting(
                name="ZENDESK_BASE_URL",
                option="base_url",
                help="e.g. https://acme.zendesk.com",
                address=True,
            ),
            EnvSetting(
                name="ZENDESK_EMAIL", option="email", help="the agent the API token belongs to"
            ),
            EnvSetting(
                name="ZENDESK_API_TOKEN", option="api_token", help="an API token", secret=True
            ),
        ),
    )

    def __init__(
        self,
        base_url: str,
        email: str,
        api_token: str,
        *,
        fields: Mapping[str, FieldSpec] | None = None,
        rate_limit: RateLimit | None = None,
        rate_window_seconds: float = 60.0,
        max_jobs_in_flight: int = 10,
        job_attempts: int = 3,
        poll_first_s: float = 0.5,
        poll_min_s: float = 0.05,
        poll_max_s: float = 10.0,
        job_timeout_s: float = 600.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``rate_limit=None`` starts at 700 per ``rate_window_seconds`` and takes the count
        from ``X-Rate-Limit``; a given ``rate_limit`` is kept as is."""
        if not email or not api_token:
            raise DestinationConfigError("zendesk: email and api_token must be non-empty")
        if max_jobs_in_flight < 1 or job_attempts < 1:
            raise DestinationConfigError("zendesk: max_jobs_in_flight, job_attempts must be >= 1")
        if not 0 < poll_min_s <= poll_first_s <= poll_max_s:
            raise DestinationConfigError("zendesk: need 0 < poll_min_s <= poll_first_s <= max")
        self.fields = dict(FIELDS if fields is None else fields)
        self.max_jobs_in_flight = max_jobs_in_flight
        self.job_attempts = job_attempts
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        self.job_timeout_s = job_timeout_s
        self.job_polls = 0  # polls made, for reports: requests per job = 1 + polls / jobs
        self.jobs = 0
        self._job_seconds = poll_first_s  # how long a job is expected to take
        self._last_decay = 0.0
        self._window = rate_window_seconds
        credentials = base64.b64encode(f"{email}/token:{api_token}".encode()).decode()
        default = RateLimit(
            max_requests=DEFAULT_RATE_LIMIT.max_requests, window_seconds=rate_window_seconds
        )
        super().__init__(
            base_url,
            headers={"Authorization": f"Basic {credentials}"},
            secrets=[api_token, credentials],
            pacer=Pacer(rate_limit or default, learn=rate_limit is None),
            retry=retry,
        )

    # -- Destination ----------------------------------------------------------------------------

    def upsert(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        return self._upsert(records)

    def update(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        found = self._find([record.identity for record in records])
        return self._update_existing(records, lambda identity: identity in found)

    def remove(self, records: list[tuple[str, str | None]]) -> list[RecordOutcome]:
        by_id = [p for p, (_, user_id) in enumerate(records) if user_id]
        by_external_id = [p for p, (identity, user_id) in enumerate(records) if not user_id]
        calls: list[tuple[list[int], dict[str, str]]] = []
        for call in rounds(by_id, lambda p: records[p][1], self.max_batch):
            positions = [by_id[i] for i in call]
            calls.append((positions, {"ids": ",".join(str(records[p][1]) for p in positions)}))
        for call in rounds(by_external_id, lambda p: records[p][0], self.max_batch):
            positions = [by_external_id[i] for i in call]
            calls.append((positions, {"external_ids": ",".join(records[p][0] for p in positions)}))
        jobs = [
            _Job(n, "DELETE", "/api/v2/users/destroy_many.json", params=params)
            for n, (_, params) in enumerate(calls)
        ]
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        for (positions, _), job in zip(calls, self._run(jobs), strict=True):
            results = _by_index(job.result, len(positions))
            for n, position in enumerate(positions):
                identity, user_id = records[position]
                result = results.get(n)
                if result is None:
                    outcomes[position] = RecordOutcome(
                        identity=identity, ok=False, error="zendesk returned no result"
                    )
                    continue
                gone = result.get("status") == "Deleted" or result.get("error") in _GONE
                outcomes[position] = RecordOutcome(
                    identity=identity,
                    ok=gone,
                    destination_id=_str(result.get("id")) or user_id,
                    error=None if gone else self.mask(describe_error(result)),
                )
        return [outcome for outcome in outcomes if outcome is not None]

    # -- the calls --------------------------------------------------------------------------------

    def _upsert(self, records: Sequence[DestinationRecord]) -> list[RecordOutcome]:
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        users: dict[int, dict[str, Any]] = {}
        for position, record in enumerate(records):
            if not record.identity.strip():
                outcomes[position] = not_sent(record, "the identity is empty")
                continue
            try:
                users[position] = self._user(record)
            except ValueRejected as rejected:
                outcomes[position] = not_sent(record, str(rejected))
        sendable = list(users)
        calls = [
            [sendable[i] for i in call]
            for call in rounds(sendable, lambda p: records[p].identity, self.max_batch)
        ]
        jobs = [
            _Job(
                n,
                "POST",
                "/api/v2/users/create_or_update_many.json",
                body={"users": [users[p] for p in positions]},
            )
            for n, positions in enumerate(calls)
        ]
        for positions, job in zip(calls, self._run(jobs), strict=True):
            results = _by_index(job.result, len(positions))
            for n, position in enumerate(positions):
                identity = records[position].identity
                result = results.get(n)
                status = result.get("status") if result else None
                if status in ("Created", "Updated"):
                    outcomes[position] = RecordOutcome(
                        identity=identity,
                        ok=True,
                        destination_id=_str(result.get("id")) if result else None,
                        created=status == "Created",
                    )
                else:
                    error = describe_error(result) if result else "zendesk returned no result"
                    outcomes[position] = RecordOutcome(
                        identity=identity, ok=False, error=self.mask(error)
                    )
        return [outcome for outcome in outcomes if outcome is not None]

    def _user(self, record: DestinationRecord) -> dict[str, Any]:
        user: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        for name, value in prepare_fields(record.fields, self.fields).items():
            if name.startswith(USER_FIELDS_PREFIX):
                custom[name.removeprefix(USER_FIELDS_PREFIX)] = value
            else:
                user[name] = value
        if custom:
            user["user_fields"] = {**(user.get("user_fields") or {}), **custom}
        user["external_id"] = record.identity
        return user

    def _find(self, identities: Sequence[str]) -> dict[str, str]:
        """Zendesk user ids by external_id, for the users that exist."""
        keys = list(dict.fromkeys(i for i in identities if i.strip()))
        found: dict[str, str] = {}
        for call in chunks(keys, self.max_batch):
            response = self._call(
                "GET", "/api/v2/users/show_many.json", params={"external_ids": ",".join(call)}
            )
            body = response.body if isinstance(response.body, dict) else {}
            for user in body.get("users") or []:
                if user.get("external_id") is not None and user.get("id") is not None:
                    found[str(user["external_id"])] = str(user["id"])
        return found

    # -- jobs -------------------------------------------------------------------------------------

    def _run(self, jobs: list[_Job]) -> list[_Job]:
        """Submit and poll ``jobs``, up to ``max_jobs_in_flight`` queued at once, until each
        completed; a failed job is resubmitted (``job_attempts`` in all), then fails the call."""
        waiting = list(jobs)
        waiting.reverse()  # pop() takes them in order
        polling: list[tuple[float, int, _Job]] = []  # heap by next poll
        tie = itertools.count()
        while waiting or polling:
            now = time.monotonic()
            if polling and polling[0][0] <= now:
                _, _, job = heapq.heappop(polling)
                if not self._poll(job):
                    heapq.heappush(polling, (job.next_poll, next(tie), job))
                elif job.result is None:  # failed: again, from the start
                    waiting.append(job)
            elif waiting and len(polling) < self.max_jobs_in_flight and self._may_submit(polling):
                job = waiting.pop()
                self._submit(job)
                heapq.heappush(polling, (job.next_poll, next(tie), job))
            else:
                time.sleep(max(0.0, polling[0][0] - now))
        return jobs

    def _may_submit(self, polling: list[Any]) -> bool:
        """Leave one request of the window for each job in flight: a job submitted with the
        window's last request would wait a whole window for its poll (its outcomes with it)."""
        free = self.pacer.free()
        return not polling or free is None or free > len(polling)

    def _submit(self, job: _Job) -> None:
        job.attempts += 1
        if job.attempts > 1:
            self._count(retries=1)
        response = self._call(job.method, job.path, params=job.params, json_body=job.body)
        status = response.body.get("job_status") if isinstance(response.body, dict) else None
        if not isinstance(status, dict) or not status.get("id"):
            raise DestinationError(f"zendesk: {job.method} {job.path} answered no job_status")
        self.jobs += 1
        job.job_id = str(status["id"])
        job.submitted_at = time.monotonic()
        job.polls = 0
        job.poll_delay = self._job_seconds
        job.next_poll = job.submitted_at + job.poll_delay

    def _poll(self, job: _Job) -> bool:
        """Poll once; True when the job is over (``job.result`` set, or None when it failed)."""
        response = self._call("GET", f"/api/v2/job_statuses/{job.job_id}.json")
        self.job_polls += 1
        job.polls += 1
        status = response.body.get("job_status") if isinstance(response.body, dict) else None
        state = status.get("status") if isinstance(status, dict) else None
        elapsed = response.sent_at - job.submitted_at
        if state == "completed" and isinstance(status, dict):
            self._learn_job_time(job, elapsed, paced=response.waited > 0.001)
            job.result = status
            return True
        if state in ("failed", "killed"):
            message = self.mask(str((status or {}).get("message") or "no message"))
            if job.attempts >= self.job_attempts:
                raise DestinationError(
                    f"zendesk: job {job.job_id} ({job.method} {job.path}) {state} "
                    f"{job.attempts} time(s); last: {message}"
                )
            job.result = None
            return True
        if elapsed > self.job_timeout_s:
            raise DestinationError(
                f"zendesk: job {job.job_id} ({job.method} {job.path}) still {state!r} after "
                f"{elapsed:.0f}s (job_timeout_s={self.job_timeout_s:g})"
            )
        # Late already: look again soon, then less and less often.
        later = job.poll_delay * 1.5 if job.polls > 1 else self._job_seconds / 4
        job.poll_delay = min(self.poll_max_s, max(self.poll_min_s, later))
        job.next_poll = time.monotonic() + job.poll_delay
        return False

    def _learn_job_time(self, job: _Job, elapsed: float, *, paced: bool) -> None:
        """Aim the first poll at when jobs finish. A job that needed more than one poll sets
        the mark. Jobs done at their first poll may be faster than assumed: when requests are
        not waiting for the rate limit (so latency is what matters) creep down 3% per expected
        job time (not per job: the jobs in flight together say the same thing). When they are
        waiting, a later poll costs nothing (other jobs keep the quota busy) and an early one
        wastes a request: keep the mark."""
        now = time.monotonic()
        if job.polls > 1 and not paced:
            # A poll that queued for the rate limit says nothing about how long jobs take,
            # and one slow job raises the mark at most twofold (bench: one poll stuck behind
            # a full window once pushed it to poll_max_s for minutes).
            target = min(elapsed * 1.05, self._job_seconds * 2)
            self._job_seconds = min(self.poll_max_s, max(self.poll_min_s, target))
            self._last_decay = now
        elif not paced and now - self._last_decay >= self._job_seconds:
            self._job_seconds = max(self.poll_min_s, self._job_seconds * 0.97)
            self._last_decay = now

    # -- hooks ----------------------------------------------------------------------------------

    def _announced_limit(self, response: httpx.Response) -> tuple[RateLimit | None, int | None]:
        most = header_int(response.headers, "X-Rate-Limit")
        learned = (
            RateLimit(max_requests=most, window_seconds=self._window) if most and most > 0 else None
        )
        remaining = header_int(response.headers, "X-Rate-Limit-Remaining") if learned else None
        return learned, remaining


def _by_index(status: Mapping[str, Any] | None, expected: int) -> dict[int, dict[str, Any]]:
    """A completed job's results by input index (by position when Zendesk gives no index)."""
    results = (status or {}).get("results") or []
    by_index: dict[int, dict[str, Any]] = {}
    for position, result in enumerate(results):
        if not isinstance(result, dict):
            continue
        index = result.get("index", position)
        if isinstance(index, int) and 0 <= index < expected:
            by_index[index] = result
    return by_index


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
