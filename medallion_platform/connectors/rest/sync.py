"""Sync one endpoint into bronze, exactly once, a few pages at a time.

Pages are committed in groups of ``pages_per_commit`` (one warehouse transaction each): their
records are appended to bronze (each record's JSON in ``_raw``, see :mod:`.rows`), any set of
top-level fields new to the table is recorded in ``_meta.record_fields`` (for the drift
report) and the sync state is saved in ``_meta.positions`` before COMMIT. When the API fails
mid-way, the pages already fetched are committed before the error is raised. The state holds
the committed high-water mark of the incremental cursor and, while a sync is under way, where
it is (the ``since`` it started from, the next page's resume token, the greatest cursor seen).
A crash leaves the state of the last committed page: the rerun resumes at the next page. The
high-water mark moves only when the last page commits, because list APIs such as Stripe's
return newest first: an early page's maximum says nothing about the pages after it.

An endpoint that declares a change log (``changes``, Stripe's ``/v1/events``) has it walked
the same way after the endpoint, under its own state (``rest:<source>.<endpoint>:changes``):
each change's record lands in the endpoint's table with the change's time in the column
``version_field`` (``_changed_at``). The first
sync only notes where the log stands (its newest entry): the endpoint was just read whole.

A sync reads at most its budget (``max_pages`` pages, ``max_seconds`` seconds, see
:class:`~.spec.SyncBudget`): past it, the pages read are committed with the next page's
resume token, the report says which budget was reached, and the next run continues there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pyarrow as pa
from pydantic import BaseModel, Field

from medallion_platform.connectors.bronze import (
    BRONZE_SCHEMA,
    append_batch,
    checkpoint_threshold,
    ensure_bronze_table,
    setting,
)
from medallion_platform.connectors.collector import collector_paused
from medallion_platform.connectors.files.readers import read_ahead
from medallion_platform.connectors.rest.client import RestClient
from medallion_platform.connectors.rest.pager import (
    Page,
    PaginationError,
    Resume,
    _dig,
    describe,
    iter_pages,
)
from medallion_platform.connectors.rest.rows import bronze_rows, field_sets, raw_json
from medallion_platform.connectors.rest.spec import (
    REST_LINEAGE,
    ChangesSpec,
    RestEndpoint,
    RestSource,
    SyncBudget,
)
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.warehouse import (
    add_missing_columns,
    next_batch_id,
    record_field_sets,
    recorded_field_sets,
    set_position,
    transaction,
)

log = logging.getLogger(__name__)

SYNC_THREADS = 1
"""DuckDB's threads while a sync runs. A commit appends a few thousand records, too few to
gain from parallel work, and a second DuckDB thread takes the core that the page reader (Python,
on a thread of its own) and the API need: on 2 cores, 108k records synced in 3.31-3.35 s on
one thread against 3.54-3.71 s on two, alternated in one process (bench/README.md, REST)."""


def rest_lineage(endpoint: RestEndpoint) -> dict[str, str]:
    """The endpoint's bronze columns beyond the shared lineage: ``_raw``, and the column a
    change log's records are stamped with their change's time in (text, as bronze is)."""
    if endpoint.changes is None:
        return dict(REST_LINEAGE)
    return {**REST_LINEAGE, endpoint.changes.version_field: "VARCHAR"}


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
    changed_records: int = Field(
        default=0, description="Records landed again from the change log (changed after creation)."
    )
    budget_reached: str | None = Field(
        default=None, description="Which budget stopped the sync, e.g. 'max_pages=3'."
    )


def state_key(source: RestSource, endpoint: RestEndpoint) -> str:
    return f"rest:{source.name}.{endpoint.name}"


def changes_key(source: RestSource, endpoint: RestEndpoint) -> str:
    return f"{state_key(source, endpoint)}:changes"


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
    many as the endpoint's budget allows (the next run continues); then, once the endpoint
    is complete, its change log (``changes``) the same way."""
    started = time.monotonic()
    calls_before, retries_before = client.calls, client.retries
    # One connection for both walks: each connection's close is a checkpoint.
    with (
        warehouse.connect() as conn,
        checkpoint_threshold(conn),
        setting(conn, "threads", SYNC_THREADS),
        collector_paused(),
    ):
        report = _walk(
            conn, source, endpoint, endpoint, client, state_key(source, endpoint), run_id, on_page
        )
        feed = endpoint.changes_feed()
        if feed is not None and report.complete and endpoint.changes is not None:
            spent = time.monotonic() - started
            budget = source.budget_for(endpoint)
            left = SyncBudget(
                max_pages=max(1, budget.max_pages - report.pages),
                max_seconds=max(1.0, budget.max_seconds - spent),
            )
            changed = _walk(
                conn,
                source,
                endpoint,
                feed,
                client,
                changes_key(source, endpoint),
                run_id,
                on_page,
                changes=endpoint.changes,
                budget=left,
            )
            report = report.model_copy(
                update={
                    "changed_records": changed.records,
                    "batch_ids": report.batch_ids + changed.batch_ids,
                    "complete": changed.complete,
                    "budget_reached": changed.budget_reached,
                }
            )
    return report.model_copy(
        update={
            "api_calls": client.calls - calls_before,
            "retries": client.retries - retries_before,
        }
    )


def _numbered_in_batch(rows: pa.Table) -> pa.Table:
    """The commit's rows numbered 1..n in landing order (page after page), so that
    ``(_batch_id, _row_number)`` names one row, as it does for every other source: silver
    breaks ``latest_by`` ties by it. ``_source`` keeps the page and the record in it."""
    index = rows.schema.get_field_index("_row_number")
    numbers = pa.array(range(1, rows.num_rows + 1), type=rows.schema.field(index).type)
    return rows.set_column(index, "_row_number", numbers)


def _page_rows(page: Page, required: list[str]) -> pa.Table:
    """A page's records as bronze rows, numbered in the page (see :func:`bronze_rows`; the
    commit numbers them again across its pages)."""
    numbers = range(1, len(page.records) + 1)
    return bronze_rows(
        page.records,
        numbers=list(numbers),
        sources=[f"{page.url}#row={n}" for n in numbers],
        raws=page.raws,  # encoded once, by the pager
        required=required,
        wheres=[f"record {n}" for n in numbers],
    )


def _prepared(
    pages: Iterator[Page], required: list[str], build: bool, budget: SyncBudget, started: float
) -> Iterator[tuple[Page, pa.Table | None, str | None]]:
    """Each page with its bronze rows (built on the read-ahead thread while the pages before
    are committed; a change log's entries are built at commit, in landing order) and the
    budget it reached, if any. The budget is checked here, after each page is fetched, so the
    reader, however far ahead, never fetches a page past it."""
    for fetched, page in enumerate(pages, start=1):
        reached = None
        if page.next is not None:
            if fetched >= budget.max_pages:
                reached = f"max_pages={budget.max_pages}"
            elif time.monotonic() - started >= budget.max_seconds:
                reached = f"max_seconds={budget.max_seconds:g}"
        yield page, _page_rows(page, required) if build else None, reached
        if reached is not None:
            return


def _landing_order(buffer: list[Page], oldest_first: bool) -> list[Page]:
    """A change log lists newest first; its entries land oldest first, so two changes of one
    record within the same second still end with the newer one last (arrival order breaks a
    tie of ``latest_by``)."""
    return list(reversed(buffer)) if oldest_first else buffer


def _stamp(value: Any) -> str | None:
    """A change's time as bronze text (its JSON, text as it is)."""
    return value if value is None or isinstance(value, str) else raw_json(value)


def _stamps_from_raw(conn: duckdb.DuckDBPyConnection, table: str, field: str) -> None:
    """Fill a stamp column just added to a table written before the stamp had a column of
    its own: the sync then merged it into each change's record, so it is in ``_raw`` (its
    flattened column lost the leading ``_`` and no contract read it). Once, at the upgrade,
    so that the versions landed then keep their order (``latest_by``)."""
    path = f"$.{field}"
    conn.execute(
        f"UPDATE {qualified(BRONZE_SCHEMA, table)} SET {quote(field)} = _raw->>? "
        "WHERE _raw->>? IS NOT NULL",
        [path, path],
    )


def _numbered(records: list[dict[str, Any]], oldest_first: bool) -> list[tuple[int, Any]]:
    numbered = list(enumerate(records, start=1))
    return list(reversed(numbered)) if oldest_first else numbered


def _newest_change(client: RestClient, feed: RestEndpoint, changes: ChangesSpec) -> int | None:
    """The ``cursor_field`` of the change log's newest entry (one record asked for)."""
    payload, _ = client.get_json(feed.path, {**feed.params, feed.page_size_param: 1})
    entries = _dig(payload, feed.record_path) if feed.record_path else payload
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return None
    return _cursor_value(entries[0], changes.cursor_field)


def _walk(
    conn: duckdb.DuckDBPyConnection,
    source: RestSource,
    endpoint: RestEndpoint,
    feed: RestEndpoint,
    client: RestClient,
    key: str,
    run_id: str | None,
    on_page: PageHook | None,
    *,
    changes: ChangesSpec | None = None,
    budget: SyncBudget | None = None,
) -> SyncReport:
    """Walk ``feed`` (the endpoint itself, or its change log) into the endpoint's table."""
    table = source.bronze_table(endpoint)
    incremental = feed.incremental
    budget = budget or source.budget_for(endpoint)
    started = time.monotonic()
    with transaction(conn):
        ensure_bronze_table(conn, table, rest_lineage(endpoint))
        if changes is not None:  # a table made before changes were stamped in a column
            added = add_missing_columns(conn, BRONZE_SCHEMA, table, rest_lineage(endpoint))
            if changes.version_field in added:
                _stamps_from_raw(conn, table, changes.version_field)
        state = load_state(conn, key)
        known_fields = {fields for fields, _ in recorded_field_sets(conn, table)}
    if changes is not None and state.high_water_mark is None and state.in_progress is None:
        # First sync: the endpoint was just read whole; changes start from now on.
        newest = _newest_change(client, feed, changes)
        with transaction(conn):
            state = SyncState(high_water_mark=newest if newest is not None else 0)
            set_position(conn, key, "state", state.model_dump_json(), None)
        return SyncReport(
            endpoint=endpoint.name,
            table=table,
            resumed=False,
            since=None,
            pages=0,
            records=0,
            batch_ids=[],
            high_water_mark=state.high_water_mark,
            api_calls=0,
            retries=0,
            complete=True,
        )
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
    buffered: list[tuple[Page, pa.Table | None]] = []

    def change_rows(
        landing: list[Page],
    ) -> tuple[pa.Table, list[dict[str, Any]], list[dict[str, Any]]]:
        """A change log's entries as the endpoint's rows, oldest first, each stamped with
        its change's time; the records landed; and the entries (for the cursor)."""
        assert changes is not None
        landed: list[dict[str, Any]] = []
        stamps: list[str | None] = []
        sources: list[str] = []
        raws: list[str] = []
        wheres: list[str] = []
        cursors: list[dict[str, Any]] = []
        for page in landing:
            for n, entry in _numbered(page.records, oldest_first=True):
                record = _dig(entry, changes.record_field)
                if not isinstance(record, dict):
                    raise PaginationError(
                        f"GET {feed.path}: entry {n} of {page.url} has no object "
                        f"at {changes.record_field!r}"
                    )
                landed.append(record)
                stamps.append(_stamp(entry.get(changes.cursor_field)))
                sources.append(f"{page.url}#row={n}")
                raws.append(raw_json(record))
                wheres.append(f"record {n}")
                cursors.append(entry)
        rows = bronze_rows(
            landed,
            numbers=list(range(1, len(landed) + 1)),  # a change's place in landing order
            sources=sources,
            raws=raws,
            required=[endpoint.primary_key],
            wheres=wheres,
            stamps={changes.version_field: stamps},
        )
        return rows, landed, cursors

    def commit(buffered_rows: list[tuple[Page, pa.Table | None]]) -> None:
        """The buffered pages' rows and the state after the last of them, one COMMIT."""
        nonlocal hwm, max_seen, pages, records, state, last_page
        buffer = [page for page, _ in buffered_rows]
        with transaction(conn):
            batch_id = next_batch_id(conn, key, run_id)
            if changes is None:  # the pages' records as they came, built ahead
                tables = [rows for _, rows in buffered_rows if rows is not None]
                rows = _numbered_in_batch(pa.concat_tables(tables))
                cursors = landed = [entry for page in buffer for entry in page.records]
            else:
                rows, landed, cursors = change_rows(_landing_order(buffer, oldest_first=True))
            if incremental is not None:
                field = incremental.cursor_field
                for entry in cursors:
                    seen = _cursor_value(entry, field)
                    if seen is not None and (max_seen is None or seen > max_seen):
                        max_seen = seen
            new = [f for f in field_sets(landed) if f not in known_fields]
            record_field_sets(conn, table, new, batch_id)  # what the drift report compares
            append_batch(conn, table, rows, batch_id=batch_id, evolve=False)
            last = buffer[-1]
            last_page = next((p.fingerprint for p in reversed(buffer) if p.fingerprint), last_page)
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
        known_fields.update(new)  # committed
        pages += len(buffer)
        records += sum(len(page.records) for page in buffer)
        batch_ids.append(batch_id)
        log.info("%s: %d pages committed, %d records", key, pages, records)
        if on_page:
            on_page(pages, records)

    budget_reached: str | None = None
    fetched = 0
    walk = iter_pages(client, feed, since=since, resume=resume, committed=last_page)
    # The next pages (up to a commit's worth) are fetched on a thread while these are
    # built and committed (the wait for the API and DuckDB's work release the GIL).
    ahead = read_ahead(
        _prepared(walk, [endpoint.primary_key], changes is None, budget, started),
        depth=feed.pages_per_commit,
    )
    try:
        for page, rows, budget_reached in ahead:
            buffered.append((page, rows))
            fetched += 1
            if len(buffered) >= feed.pages_per_commit or page.next is None or budget_reached:
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
        ahead.close()  # stops the reader (after the request in flight, if any)
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
        api_calls=0,
        retries=0,
        complete=state.in_progress is None,
        budget_reached=budget_reached,
    )
