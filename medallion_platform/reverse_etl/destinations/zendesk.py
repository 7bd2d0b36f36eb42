"""Zendesk Support: end users created or updated in bulk by ``external_id``.

- upsert: ``POST /api/v2/users/create_or_update_many.json`` (at most 100 users) answers with a
  queued job; ``GET /api/v2/job_statuses/{id}.json`` is polled until the job is ``completed``
  (per-user ``Created`` / ``Updated`` / ``Failed`` results) or ``failed`` (nothing written: the
  job is submitted again, at most ``job_attempts`` times in all). Zendesk's results carry no
  ``index``: they come in input order, with ``email`` / ``external_id`` on most of them, so they
  are matched by position when there is one per input and every echoed ``external_id`` agrees,
  else by the echoed ``external_id`` / ``email`` (an ``index``, where given, wins).
  403 means bulk user imports are not enabled for the account (Zendesk Support enables them on
  the account owner's request) or the API user may not manage end users:
  :class:`DestinationSetupError`, with what to ask for.
- tags: a ``tags`` list replaces all of a user's tags, agents' included, and is ignored without
  a word when user tagging is off. ``tags="merge"`` (with the ``managed_tags`` the sync decides)
  reads the users' current tags first (``show_many``, one request per 100 users) and sends the
  tags the sync does not manage unchanged; ``tags="replace"`` sends the list as is (the sync
  owns every tag of its users). Either way the first users written with tags are read back
  once per client: tags that did not stick (user tagging off) raise
  :class:`DestinationSetupError` before any of them is reported synced.
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
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from medallion_platform.reverse_etl.destinations.base import (
    DestinationError,
    DestinationInfo,
    DestinationRecord,
    DestinationSetupError,
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
    )
}
"""Every account's end-user fields. An account's own custom user fields (``user_fields.<key>``)
are declared by the sync (``fields`` in ``syncs.yaml``) and given as ``fields``."""

_GONE = frozenset({"RecordNotFound"})
UPSERT_PATH = "/api/v2/users/create_or_update_many.json"
TagsMode = Literal["merge", "replace"]


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


class ZendeskOptions(BaseModel):
    """``options`` of a Zendesk sync."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tags: TagsMode | None = Field(
        default=None,
        description="merge: keep the tags the sync does not manage (agents'), one more request "
        "per 100 users; replace: the sync owns every tag of its users. Required when the "
        "mapping sets tags (a tags list replaces all of a user's tags in Zendesk).",
    )


def managed_tags(tags_field: Any) -> list[str]:
    """The tags a sync's ``tags`` mapping decides (sets or removes): its ``tags_from`` keys,
    or its constant (or default) list."""
    if tags_field.tags_from is not None:
        return list(tags_field.tags_from)
    constant = tags_field.constant if tags_field.constant is not None else tags_field.default
    return list(constant) if isinstance(constant, list) else []


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
        options=ZendeskOptions,
    )

    @classmethod
    def sync_arguments(
        cls, arguments: dict[str, Any], mapping: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``tags`` goes to the client only with a ``tags`` mapping, with the tags it manages;
        a ``tags`` mapping without ``options.tags`` is refused (Zendesk would wipe agents'
        tags without a word)."""
        given = dict(arguments)
        mode = given.pop("tags", None)
        tags_field = mapping.get("tags")
        if tags_field is None:
            return given
        if mode is None:
            raise ValueError(
                "mapping tags: a tags list replaces all of a Zendesk user's tags, agents' "
                "included; declare options.tags: merge (keep the tags this sync does not "
                "manage; one more request per 100 users) or replace (this sync owns every tag "
                "of its users)"
            )
        return {**given, "tags": mode, "managed_tags": managed_tags(tags_field)}

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
        tags: TagsMode = "replace",
        managed_tags: Sequence[str] = (),
        retry: RetryPolicy | None = None,
    ) -> None:
        """``rate_limit=None`` starts at 700 per ``rate_window_seconds`` and takes the count
        from ``X-Rate-Limit``; a given ``rate_limit`` is kept as is. ``tags`` / ``managed_tags``:
        see the module docstring."""
        if not email or not api_token:
            raise DestinationConfigError("zendesk: email and api_token must be non-empty")
        if tags not in ("merge", "replace"):
            raise DestinationConfigError(f"zendesk: tags must be merge or replace, got {tags!r}")
        if tags == "merge" and not managed_tags:
            raise DestinationConfigError("zendesk: tags='merge' needs the managed_tags")
        self.tags_mode: TagsMode = tags
        self.managed_tags = frozenset(tag.strip().lower() for tag in managed_tags)
        self.tags_verified = False
        if max_jobs_in_flight < 1 or job_attempts < 1:
            raise DestinationConfigError("zendesk: max_jobs_in_flight, job_attempts must be >= 1")
        if not 0 < poll_min_s <= poll_first_s <= poll_max_s:
            raise DestinationConfigError("zendesk: need 0 < poll_min_s <= poll_first_s <= max")
        self.fields = {**FIELDS, **(fields or {})}
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
        for (positions, params), job in zip(calls, self._run(jobs), strict=True):
            by = "external_id" if "external_ids" in params else "id"
            keys = [
                {by: records[p][0] if by == "external_id" else records[p][1]} for p in positions
            ]
            results = _match_results(job.result, keys)
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

    def missing_fields(self, names: Sequence[str]) -> list[str]:
        """The ``user_fields.<key>`` of ``names`` the account does not define (or has
        deactivated), from ``GET /api/v2/user_fields.json`` (every page)."""
        wanted = [n for n in names if n.startswith(USER_FIELDS_PREFIX)]
        if not wanted:
            return []
        keys: set[str] = set()
        path: str | None = "/api/v2/user_fields.json"
        while path:
            body = self._call("GET", path).body
            body = body if isinstance(body, dict) else {}
            for field_ in body.get("user_fields") or []:
                if isinstance(field_, dict) and field_.get("active", True):
                    keys.add(str(field_.get("key")))
            path = body.get("next_page") if isinstance(body.get("next_page"), str) else None
        return [n for n in wanted if n.removeprefix(USER_FIELDS_PREFIX) not in keys]

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
        wanted = {p: list(users[p]["tags"]) for p in sendable if users[p].get("tags") is not None}
        if self.tags_mode == "merge" and wanted:
            self._merge_tags(users, list(wanted))
        calls = [
            [sendable[i] for i in call]
            for call in rounds(sendable, lambda p: records[p].identity, self.max_batch)
        ]
        jobs = [
            _Job(n, "POST", UPSERT_PATH, body={"users": [users[p] for p in positions]})
            for n, positions in enumerate(calls)
        ]
        for positions, job in zip(calls, self._run(jobs), strict=True):
            keys = [
                {"external_id": users[p]["external_id"], "email": users[p].get("email")}
                for p in positions
            ]
            results = _match_results(job.result, keys)
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
        if not self.tags_verified:
            self._verify_tags(
                {
                    records[p].identity: tags
                    for p, tags in wanted.items()
                    if tags and (outcome := outcomes[p]) is not None and outcome.ok
                }
            )
        return [outcome for outcome in outcomes if outcome is not None]

    def _merge_tags(self, users: dict[int, dict[str, Any]], positions: list[int]) -> None:
        """Keep the tags the sync does not manage (an agent's): a ``tags`` list replaces all."""
        current = self._current_tags([users[p]["external_id"] for p in positions])
        for p in positions:
            kept = [
                t for t in current.get(users[p]["external_id"], []) if t not in self.managed_tags
            ]
            users[p]["tags"] = list(dict.fromkeys([*kept, *users[p]["tags"]]))

    def _verify_tags(self, sent: Mapping[str, list[str]]) -> None:
        """Read back up to 100 users just written with tags: tags silently not applied mean
        user tagging is off in the account; nothing of these calls is reported synced."""
        if not sent:
            return
        sample = list(sent)[: self.max_batch]
        held = self._current_tags(sample)
        missing = {
            identity: sorted(
                set(tag.lower() for tag in sent[identity]) - set(held.get(identity, []))
            )
            for identity in sample
        }
        missing = {identity: tags for identity, tags in missing.items() if tags}
        if missing:
            example, tags = next(iter(missing.items()))
            raise DestinationSetupError(
                f"zendesk: tags were sent but not applied to {len(missing)} of {len(sample)} "
                f"users read back (e.g. external_id {example} lacks {tags}): user tagging is off "
                "in this account. Ask a Zendesk admin to turn on Admin Center > People > "
                "Configuration > Tags on users and organizations, or remove tags from the "
                "sync's mapping"
            )
        self.tags_verified = True

    def _current_tags(self, external_ids: Sequence[str]) -> dict[str, list[str]]:
        """The users' tags by external_id (users Zendesk does not have are absent)."""
        keys = list(dict.fromkeys(external_ids))
        tags: dict[str, list[str]] = {}
        for call in chunks(keys, self.max_batch):
            response = self._call(
                "GET", "/api/v2/users/show_many.json", params={"external_ids": ",".join(call)}
            )
            body = response.body if isinstance(response.body, dict) else {}
            for user in body.get("users") or []:
                if user.get("external_id") is not None:
                    tags[str(user["external_id"])] = [str(t) for t in user.get("tags") or []]
        return tags

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
        try:
            response = self._call(job.method, job.path, params=job.params, json_body=job.body)
        except DestinationError as error:
            if error.status == 403 and job.path == UPSERT_PATH:
                raise DestinationSetupError(
                    f"zendesk: {job.method} {job.path} was refused with HTTP 403 ({error}). "
                    "Bulk user imports are not enabled for this Zendesk account (they are off "
                    "by default): the account owner must ask Zendesk Customer Support to enable "
                    "them. Check too that the API user is an admin, or an agent whose role may "
                    "manage end users.",
                    status=403,
                    body=error.body,
                ) from None
            raise
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


def _match_results(
    status: Mapping[str, Any] | None, inputs: Sequence[Mapping[str, Any]]
) -> dict[int, dict[str, Any]]:
    """A completed job's results by input position.

    An ``index`` wins where Zendesk gives one. Without (its usual answer) results come in input
    order: matched by position when there is one per input and no echoed ``external_id`` / ``id``
    contradicts it, else by the ``external_id``, ``email`` or ``id`` each result echoes (an
    input none names gets no result, which is reported, never guessed)."""
    results = [r for r in (status or {}).get("results") or [] if isinstance(r, dict)]
    if any(isinstance(result.get("index"), int) for result in results):
        return {
            result["index"]: result
            for result in results
            if isinstance(result.get("index"), int) and 0 <= result["index"] < len(inputs)
        }

    def agrees(result: Mapping[str, Any], key: Mapping[str, Any]) -> bool:
        return all(
            result.get(name) is None or key.get(name) is None or str(result[name]) == str(key[name])
            for name in ("external_id", "id")
        )

    if len(results) == len(inputs) and all(map(agrees, results, inputs)):
        return dict(enumerate(results))
    lookup: dict[tuple[str, str], int] = {}
    for position, key in enumerate(inputs):
        for name in ("external_id", "email", "id"):
            if key.get(name) is not None:
                value = str(key[name]).lower() if name == "email" else str(key[name])
                lookup.setdefault((name, value), position)
    matched: dict[int, dict[str, Any]] = {}
    for result in results:
        for name in ("external_id", "email", "id"):
            if result.get(name) is None:
                continue
            value = str(result[name]).lower() if name == "email" else str(result[name])
            position = lookup.get((name, value))
            if position is not None and position not in matched:
                matched[position] = result
                break
    return matched


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
