"""The three reverse-ETL destinations as the fault trials use them: an emulator that can kill the
syncing child, or fail, while it serves a given write; what the destination should hold; and
how to count records created more than once."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from medallion_platform.devkit.demo.destinations.hubspot import HubSpotEmulator
from medallion_platform.devkit.demo.destinations.salesforce import SalesforceEmulator
from medallion_platform.devkit.demo.destinations.zendesk import ZendeskEmulator
from medallion_platform.devkit.demo.http_emulator import Request, Response
from medallion_platform.reverse_etl.spec import SyncSpec, destination_info
from medallion_platform_tests.faults.harness import KillSwitch
from medallion_platform_tests.reverse_etl import (
    TOKEN,
    ZENDESK_EMAIL,
    ZENDESK_FAST,
    Customer,
    expected_hubspot,
    expected_salesforce,
    expected_zendesk,
    hubspot_state,
    salesforce_state,
    sync,
    zendesk_state,
)


@functools.cache
def packaged(name: str) -> SyncSpec:
    """The packaged sync (loading and validating the config takes a while: once a session)."""
    return sync(name)


def _per_call(spec: SyncSpec) -> tuple[int, int]:
    max_batch = destination_info(spec.destination).max_batch
    return min(spec.effective_batch_size, max_batch) * spec.batches_per_commit, max_batch


def engine_calls(spec: SyncSpec, records: int) -> int:
    """Client calls the engine makes for ``records`` to send (it hands over ``batch_size`` times
    ``batches_per_commit`` at a time)."""
    per_call, _ = _per_call(spec)
    return -(-records // per_call)


def write_requests(spec: SyncSpec, records: int) -> int:
    """HTTP writes for ``records``: each engine call is cut into requests of at most the API's
    batch limit."""
    per_call, max_batch = _per_call(spec)
    full, rest = divmod(records, per_call)
    return full * -(-per_call // max_batch) + -(-rest // max_batch)


class OnWrite:
    """Mixed into an emulator: something happens at the n-th write (not a read, not a job poll)
    from now on. ``arm``: the syncing child is killed before the write is applied (the request
    is dropped) or after it (the answer goes to a dead client). ``fault_at``: a fault is queued
    for that very write (``queue`` gets its path), so it lands in the middle of a run."""

    switch: KillSwitch | None = None
    kill_at = 0
    phase = ""
    writes = 0
    inject_at = 0
    queue: Callable[[str], None] | None = None

    def arm(self, switch: KillSwitch, at: int, phase: str) -> None:
        self.switch, self.kill_at, self.phase, self.writes = switch, at, phase, 0

    def disarm(self) -> None:
        self.switch, self.kill_at = None, 0

    def fault_at(self, at: int, queue: Callable[[str], None]) -> None:
        self.inject_at, self.queue, self.writes = at, queue, 0

    def handle(self, request: Request) -> Response | None:
        if request.method == "GET" or request.path.endswith("/batch/read"):
            return super().handle(request)  # type: ignore[misc]
        self.writes += 1
        if self.queue is not None and self.writes == self.inject_at:
            self.queue(request.path)
        if self.switch is None or self.writes != self.kill_at:
            return super().handle(request)  # type: ignore[misc]
        where = f"{request.method} {request.path} (write {self.writes}), {self.phase}"
        if self.phase == "before apply":
            self.switch.fire(where)
            return None
        response = super().handle(request)  # type: ignore[misc]
        self.switch.fire(where)
        return response


class Salesforce(OnWrite, SalesforceEmulator):
    pass


class HubSpot(OnWrite, HubSpotEmulator):
    pass


class Zendesk(OnWrite, ZendeskEmulator):
    pass


@dataclass(frozen=True)
class Destination:
    """One packaged sync's destination, as a trial drives and inspects it."""

    sync: str
    start: Callable[[], Any]  # a started-on-enter emulator
    env: Callable[[Any], dict[str, str]]  # the client's environment for that emulator
    expected: Callable[[Iterable[Customer]], dict[str, dict[str, Any]]]
    state: Callable[[Any], dict[str, dict[str, Any]]]  # what it holds, comparable to expected
    record_id: str  # the destination's own id field
    removed: Callable[[Any], dict[str, Any]]  # records deleted / archived, by id
    options: dict[str, Any]
    mirror: bool = False

    def ids(self, emulator: Any) -> dict[str, str]:
        """The destination's id of every live record, by identity."""
        return {key: str(rec[self.record_id]) for key, rec in emulator.records().items()}

    def created(self, emulator: Any) -> int:
        """Records ever created: live ones and removed ones (ids are never reused)."""
        return len(emulator.records()) + len(self.removed(emulator))


DESTINATIONS = {
    "salesforce_contacts": Destination(
        sync="salesforce_contacts",
        start=lambda: Salesforce(token=TOKEN),
        env=lambda em: {"SALESFORCE_INSTANCE_URL": em.base_url, "SALESFORCE_ACCESS_TOKEN": TOKEN},
        expected=expected_salesforce,
        state=salesforce_state,
        record_id="Id",
        removed=lambda em: em.recycle_bin(),
        options={},
    ),
    "hubspot_contacts": Destination(
        sync="hubspot_contacts",
        start=lambda: HubSpot(token=TOKEN),
        env=lambda em: {"HUBSPOT_BASE_URL": em.base_url, "HUBSPOT_ACCESS_TOKEN": TOKEN},
        expected=expected_hubspot,
        state=hubspot_state,
        record_id="id",
        removed=lambda em: em.archived(),
        options={},
        mirror=True,
    ),
    "zendesk_users": Destination(
        sync="zendesk_users",
        start=lambda: Zendesk(token=TOKEN, email=ZENDESK_EMAIL, job_delay=0.01),
        env=lambda em: {
            "ZENDESK_BASE_URL": em.base_url,
            "ZENDESK_EMAIL": ZENDESK_EMAIL,
            "ZENDESK_API_TOKEN": TOKEN,
        },
        expected=expected_zendesk,
        state=zendesk_state,
        record_id="id",
        removed=lambda em: em.deleted(),
        options=ZENDESK_FAST,
    ),
}

__all__ = [
    "DESTINATIONS",
    "Destination",
    "OnWrite",
    "engine_calls",
    "packaged",
    "write_requests",
]
