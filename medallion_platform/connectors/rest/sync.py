"""Sync one endpoint into bronze, exactly once, a few pages at a time.

Pages are committed in groups of ``pages_per_commit`` (one warehouse transaction each): their
records are appended to bronze and the sync state is saved in ``_meta.positions`` before
COMMIT. When the API fails mid-way, the pages already fetched are committed before the error
is raised. The state holds the committed
high-water mark of the incremental cursor and, while a sync is under way, where it is
(the ``since`` it started from, the next page's resume token, the greatest cursor seen). A
crash leaves the state of the last committed page: the rerun resumes at the next page. The
high-water mark moves only when the last page commits, because list APIs such as Stripe's
return newest first: an early page's maximum says nothing about the pages after it.

A sync reads at most its budget (``max_pages`` pages, ``max_seconds`` seconds, see
:class:`~.spec.SyncBudget`): past it, the pages read are committed with the next page's
resume token, the report says which budget was reached, and the next run continues there.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import duckdb
from pydantic import BaseModel, Field

from medallion_platform.connectors.bronze import append_batch, ensure_bronze_table
from medallion_platform.connectors.files.readers import flatten_object, records_table
from medallion_platform.connectors.rest.client import RestClient
from medallion_platform.connectors.rest.pager import Page, Resume, describe, iter_pages
from medallion_platform.connectors.rest.spec import RestEndpoint, RestSource
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.warehouse import next_batch_id, set_position, transaction

log = logging.getLogger(__name__)

REST_LINEAGE = {"_raw": "JSON"}


class InProgress(BaseModel):
    since: int | None
    resume: Resume
    max_seen: int | None
    pages: int
    last_page: str | None = None  # fingerprint of the last non-empty page committed


class SyncState(BaseModel):
    high_water_mark: int | None = None
    in_progress: InProgress | None = None


class SyncReport(BaseModel):
    endpoint: str
    table: str
    resumed: bool
    since: int | None
    pages: int
    records: int
    batch_ids: list[int]
    high_water_mark: int | None
    api_calls: int
    retries: int
    complete: bool = Field(description="The last page was read; false when a budget stopped it.")
    budget_reached: str | None = Field(
        default=None, description="Which budget stopped the sync, e.g. 'max_pages=3'."
    )


def state_key(source: RestSource, endpoint: RestEndpoint) -> str:
    return f"rest:{source.name}.{endpoint.name}"


def load_state(conn: duckdb.DuckDBPyConnection, key: str) -> SyncState:
    row = conn.execute(
        "SELECT position FROM _meta.positions WHERE source = ? AND key = 'state'", [key]
    ).fetchone()
    return SyncState.model_validate_json(row[0]) if row else SyncState()


def _cursor_value(record: dict[str, Any], field: str) -> int | None:
    value = record.get(field)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None  # a malformed cursor does not move the mark; silver quarantines the row


PageHook = Callable[[int, int], None]


def sync_endpoint(
    warehouse: Warehouse,
    source: RestSource,
    endpoint: RestEndpoint,
    client: RestClient,
    *,
    run_id: str | None = None,
    on_page: PageHook | None = None,
) -> SyncReport:
    """Fetch every page since the committed mark into ``bronze.<source>_<endpoint>``, or as
    many as the endpoint's budget allows (the next run continues)."""
    table = source.bronze_table(endpoint)
    key = state_key(source, endpoint)
    incremental = endpoint.incremental
    budget = source.budget_for(endpoint)
    started = time.monotonic()
    calls_before, retries_before = client.calls, client.retries
    with warehouse.connect() as conn:
        with transaction(conn):
            ensure_bronze_table(conn, table, REST_LINEAGE)
            state = load_state(conn, key)
        hwm = state.high_water_mark
        last_page: str | None = None
        if state.in_progress is not None:
            since, resume = state.in_progress.since, state.in_progress.resume
            max_seen, pages = state.in_progress.max_seen, state.in_progress.pages
            last_page = state.in_progress.last_page
        else:
            since = None
            if incremental is not None:
                since = incremental.initial_value if hwm is None else hwm
                since = max(0, since - incremental.lookback_seconds) if hwm is not None else since
            resume, max_seen, pages = None, hwm, 0
        resumed = state.in_progress is not None
        records = 0
        batch_ids: list[int] = []
        buffered: list[Page] = []

        def commit(buffer: list[Page]) -> None:
            """The buffered pages' rows and the state after the last of them, one COMMIT."""
            nonlocal hwm, max_seen, pages, records, state, last_page
            with transaction(conn):
                batch_id = next_batch_id(conn, key, run_id)
                flat = []
                for page in buffer:
                    for n, record in enumerate(page.records, start=1):
                        row = flatten_object(record, n, [endpoint.primary_key], where=f"record {n}")
                        row["_raw"] = json.dumps(record, separators=(",", ":"))
                        row["_source"] = f"{page.url}#row={n}"
                        flat.append(row)
                        if incremental is not None:
                            seen = _cursor_value(record, incremental.cursor_field)
                            if seen is not None and (max_seen is None or seen > max_seen):
                                max_seen = seen
                append_batch(
                    conn, table, records_table(flat), batch_id=batch_id, lineage=REST_LINEAGE
                )
                last = buffer[-1]
                last_page = next(
                    (p.fingerprint for p in reversed(buffer) if p.fingerprint), last_page
                )
                if last.next is None:
                    hwm = max_seen if incremental is not None else None
                    state = SyncState(high_water_mark=hwm)
                else:
                    state = SyncState(
                        high_water_mark=hwm,
                        in_progress=InProgress(
                            since=since,
                            resume=last.next,
                            max_seen=max_seen,
                            pages=pages + len(buffer),
                            last_page=last_page,
                        ),
                    )
                set_position(conn, key, "state", state.model_dump_json(), batch_id)
            pages += len(buffer)
            records += sum(len(page.records) for page in buffer)
            batch_ids.append(batch_id)
            log.info("%s: %d pages committed, %d records", key, pages, records)
            if on_page:
                on_page(pages, records)

        budget_reached: str | None = None
        fetched = 0
        walk = iter_pages(client, endpoint, since=since, resume=resume, committed=last_page)
        try:
            for page in walk:
                buffered.append(page)
                fetched += 1
                if page.next is not None:
                    if fetched >= budget.max_pages:
                        budget_reached = f"max_pages={budget.max_pages}"
                    elif time.monotonic() - started >= budget.max_seconds:
                        budget_reached = f"max_seconds={budget.max_seconds:g}"
                last = page.next is None or budget_reached is not None
                if len(buffered) >= endpoint.pages_per_commit or last:
                    chunk, buffered = buffered, []
                    commit(chunk)
                if budget_reached is not None:
                    log.warning(
                        "%s: budget %s reached after %d page(s); committed, the next run "
                        "continues at %s",
                        key,
                        budget_reached,
                        fetched,
                        client.mask(describe(page.next or {})),
                    )
                    break
        finally:
            walk.close()
            if buffered:  # the API failed mid-way: keep what was fetched, resume after it
                commit(buffered)
    return SyncReport(
        endpoint=endpoint.name,
        table=table,
        resumed=resumed,
        since=since,
        pages=pages,
        records=records,
        batch_ids=batch_ids,
        high_water_mark=state.high_water_mark,
        api_calls=client.calls - calls_before,
        retries=client.retries - retries_before,
        complete=state.in_progress is None,
        budget_reached=budget_reached,
    )
