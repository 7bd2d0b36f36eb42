"""What runs in the processes the fault trials kill: one real ingest or sync each.

Imported by the fork server that the trials start their children from (see ``harness``), so it
imports only the plain-Python cores and their clients: no Dagster, no pytest, no test fixtures.
Each entry point reports through a pipe: ``ready`` before it starts, one event per progress
callback of the core (a batch appended, a page or batch committed), ``done`` with a summary.
A child told to kill itself at an event does so right inside that callback, with SIGKILL, so
the crash lands exactly at that point of the core's protocol (an open transaction, a commit
not yet acknowledged, a file committed but not archived).
"""

from __future__ import annotations

import os
import signal
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.connectors.cdc.postgres import PostgresChangeSource
from medallion_platform.connectors.files import ingest_files
from medallion_platform.connectors.rest import Credentials, RestClient, sync_endpoint
from medallion_platform.connectors.streams import ingest_stream
from medallion_platform.connectors.streams.kafka import KafkaSource
from medallion_platform.connectors.streams.redis_streams import RedisStreamSource
from medallion_platform.reverse_etl.destinations.base import (
    Destination,
    DestinationRecord,
    RecordOutcome,
)
from medallion_platform.reverse_etl.engine import execute
from medallion_platform.reverse_etl.spec import open_destination
from medallion_platform.warehouse import Warehouse


@dataclass(frozen=True)
class Job:
    """One run: which core (``kind``), on which warehouse, with what (pickled models)."""

    kind: str
    warehouse: str
    params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # set in the child's environment
    kill_at: tuple[str, int] | None = None  # (event, n): SIGKILL itself at the n-th event


class Reporter:
    """Sends events to the parent; dies at the planned one, after sending it."""

    def __init__(self, conn: Connection, kill_at: tuple[str, int] | None) -> None:
        self.conn = conn
        self.kill_at = kill_at
        self.counts: Counter[str] = Counter()

    def event(self, name: str, detail: str = "") -> None:
        self.counts[name] += 1
        self.conn.send((name, self.counts[name], detail))
        if self.kill_at == (name, self.counts[name]):
            os.kill(os.getpid(), signal.SIGKILL)


def main(conn: Connection, job: Job) -> None:
    """The child's body: run ``job`` and report; an exception is reported, then exit 1."""
    reporter = Reporter(conn, job.kill_at)
    os.environ.update(job.env)  # the fork server's environment is the one it started with
    try:
        reporter.event("ready")
        summary = RUNNERS[job.kind](job, reporter)
        conn.send(("done", 1, summary))
    except BaseException:
        conn.send(("error", 1, traceback.format_exc()))
        conn.close()
        os._exit(1)
    conn.close()


def _files(job: Job, rep: Reporter) -> str:
    report = ingest_files(
        Warehouse(job.warehouse),
        job.params["feed"],
        Path(job.params["landing"]),
        batch_rows=job.params["batch_rows"],
        on_progress=lambda rel, rows: rep.event("appended", f"{rel} {rows} rows, txn open"),
        on_committed=lambda rel: rep.event("committed", f"{rel} committed, not archived"),
    )
    return ", ".join(f"{f.path}: {f.status}" for f in report.files)


def _rest(job: Job, rep: Reporter) -> str:
    source, endpoint = job.params["source"], job.params["endpoint"]
    client = RestClient(
        job.params["base_url"],
        source.auth,
        Credentials(token=os.environ[source.auth.token_env]),
        source.retry,
    )
    report = sync_endpoint(
        Warehouse(job.warehouse),
        source,
        endpoint,
        client,
        on_page=lambda pages, records: rep.event("committed", f"{pages} pages, {records} records"),
    )
    return f"{report.records} records, resumed={report.resumed}, complete={report.complete}"


def _stream(job: Job, rep: Reporter) -> str:
    p = job.params
    if p["broker"] == "kafka":
        source: Any = KafkaSource(
            p["name"], p["topic"], bootstrap_servers=p["servers"], group_id=p["group"]
        )
    else:
        source = RedisStreamSource(p["name"], p["topic"], url=p["url"])
    try:
        report = ingest_stream(
            Warehouse(job.warehouse),
            p["table"],
            source,
            batch_size=p["batch_size"],
            on_batch=lambda n, total: rep.event("acknowledged", f"batch {n}, {total} messages"),
        )
    finally:
        source.close()
    return f"{report.messages} messages"


def _cdc(job: Job, rep: Reporter) -> str:
    p = job.params
    source = PostgresChangeSource(p["spec"], p["conninfo"], os.environ[p["password_env"]])
    report = ingest_cdc(
        Warehouse(job.warehouse),
        source,
        on_batch=lambda batch_id: rep.event("committed", f"batch {batch_id}, slot not advanced"),
    )
    return f"snapshot {report.snapshot_rows}, changes {report.changes}"


class _Confirming:
    """The destination client as the engine sees it, reporting each call it answered: the
    point where the destination has confirmed a batch and the engine has not recorded it."""

    def __init__(self, destination: Destination, rep: Reporter) -> None:
        self._destination = destination
        self._rep = rep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._destination, name)

    def _report(self, call: str, outcomes: list[RecordOutcome]) -> list[RecordOutcome]:
        ok = sum(o.ok for o in outcomes)
        self._rep.event("confirmed", f"{call} of {len(outcomes)} answered ({ok} ok), not recorded")
        return outcomes

    def upsert(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        return self._report("upsert", self._destination.upsert(records))

    def update(self, records: list[DestinationRecord]) -> list[RecordOutcome]:
        return self._report("update", self._destination.update(records))

    def remove(self, records: list[tuple[str, str | None]]) -> list[RecordOutcome]:
        return self._report("remove", self._destination.remove(records))


def _sync(job: Job, rep: Reporter) -> str:
    p = job.params
    destination = open_destination(p["spec"], **p.get("options", {}))
    try:
        with Warehouse(job.warehouse).connect() as conn:
            result = execute(conn, p["spec"], _Confirming(destination, rep))  # type: ignore[arg-type]
    finally:
        destination.close()
    return f"added {result.added}, changed {result.changed}, failed {result.failed}"


RUNNERS: dict[str, Callable[[Job, Reporter], str]] = {
    "files": _files,
    "rest": _rest,
    "stream": _stream,
    "cdc": _cdc,
    "sync": _sync,
}

__all__ = ["Job", "Reporter", "main"]
