"""The sync engine: diff the source against what was synced, send only the difference.

One run of a :class:`~medallion_platform.reverse_etl.spec.SyncSpec`:

1. **Plan, inside DuckDB.** One statement runs the source query, computes each row's mapped
   payload (``to_json`` of a struct of the destination fields, keys sorted) and its hash
   (``md5`` of the sync's fingerprint and that canonical JSON), and diffs it against
   ``_meta.sync_state``: adds (identity not synced), changes (hash differs), removals (synced
   but gone from the source; mirror mode only). Unchanged rows never leave the warehouse.
   Rows without an identity, or whose identity appears more than once, are skipped (recorded,
   never sent: which of two rows is the record would be a guess). The plan is a temporary
   table; Python reads it one batch at a time, so memory is bounded by the batch size, not
   the table (100k+ rows is a DuckDB scan, not a Python list).
2. **Send, batch by batch**, through a :class:`Destination` (upsert, update or remove).
3. **Record after each batch**, in one transaction: the outcome of every record, and for the
   records the destination *confirmed* only, their new hash in ``sync_state``. A crash
   between two batches keeps everything confirmed before it; the rerun plans only the rest
   (resending the batch in flight, which an idempotent upsert by identity absorbs: no
   duplicates). A rejected record (an invalid email) is recorded with the destination's error
   and keeps its old state, so the next run plans it again: fix the data and it lands.

With ``check_fields``, a run that has something to send first asks the destination whether
every field it writes exists (describe / properties / user_fields) and refuses with the list of
missing ones. A dry run plans and records the plan (counts, and a sample in
``sync_row_outcomes`` with status ``planned``) and sends nothing; ``sync_state`` is untouched.
Refused credentials stop the run at once (:class:`SyncAuthError`), and so does an account that
refuses what the sync needs until a setting changes (:class:`DestinationSetupError`: Zendesk's
bulk import off); nothing of that batch is marked synced. The engine
has no Dagster import: the asset calls :func:`execute`, ``medallion sync`` :func:`run_sync`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb
from pydantic import BaseModel, Field

from medallion_platform.reverse_etl import state
from medallion_platform.reverse_etl.destinations.base import (
    Destination,
    DestinationAuthError,
    DestinationError,
    DestinationRecord,
    DestinationSetupError,
    RecordOutcome,
)
from medallion_platform.reverse_etl.spec import (
    SyncSpec,
    SyncSpecError,
    describe_source,
    destination_info,
    field_types,
    load_syncs,
    open_destination,
)
from medallion_platform.reverse_etl.transforms import (
    column_sql,
    emit_sql,
    literal_sql,
    parse_transform,
    tags_sql,
    transform_sql,
)
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse.warehouse import Warehouse, table_exists, transaction

SAMPLE_SIZE = 20
READ_AHEAD = 10  # batches fetched from the plan per query
MAX_FAILED_BATCHES = 3  # consecutive whole-batch failures before the run gives up
MAPPED = "_sync_mapped"  # temporary tables: the connection's own, gone when it closes
PLAN = "_sync_plan"

Action = Literal["add", "change", "remove"]


class SyncError(RuntimeError):
    """A run that could not complete; what was confirmed before it is kept."""


class SyncAuthError(SyncError):
    """The destination refused the credentials; the run stopped at that batch."""


class RowFailure(BaseModel):
    identity: str | None
    action: Action
    error: str


class PlannedRow(BaseModel):
    identity: str
    action: Action
    fields: dict[str, Any] | None = None  # None for removals


class SyncResult(BaseModel):
    """What one run did (or, for a dry run, would do)."""

    sync: str
    run_id: str
    destination: str
    object: str
    mode: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    duration_s: float
    source_rows: int = 0
    unchanged: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    failed: int = 0
    skipped: int = 0
    api_calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    failures: list[RowFailure] = Field(default_factory=list, description="a sample")
    planned: list[PlannedRow] = Field(default_factory=list, description="dry run: a sample")
    error: str | None = None

    @property
    def attempted(self) -> int:
        """Records the destination was asked to write or remove (a dry run: none)."""
        return 0 if self.dry_run else self.added + self.changed + self.removed + self.failed

    @property
    def failure_rate(self) -> float:
        return self.failed / self.attempted if self.attempted else 0.0

    def summary(self) -> str:
        verb = "would add" if self.dry_run else "added"
        return (
            f"{self.sync} ({self.destination} {self.object}, {self.mode}"
            f"{', dry run' if self.dry_run else ''}): {verb} {self.added}, changed "
            f"{self.changed}, removed {self.removed}, failed {self.failed}, skipped "
            f"{self.skipped}, unchanged {self.unchanged}; {self.api_calls} API calls, "
            f"{self.retries} retries, {self.rate_limited} rate-limited, {self.duration_s:.1f}s"
        )


# --------------------------------------------------------------------------------------------
# The plan, in SQL
# --------------------------------------------------------------------------------------------


def mapped_sql(spec: SyncSpec, columns: dict[str, str]) -> str:
    """``SELECT identity, payload, row_hash FROM (<source>)``: the mapping, in the warehouse."""
    kinds = field_types(spec, columns)
    values: dict[str, str] = {}
    for name, field in spec.mapping.items():
        if field.column is not None:
            transform = parse_transform(field.transform) if field.transform else None
            value = transform_sql(transform, column_sql(field.column), columns[field.column])
            sql_type = columns[field.column] if transform is None else None
            value = emit_sql(value, kinds[name], sql_type)
            if field.default is not None:
                value = f"coalesce({value}, {literal_sql(field.default)})"
        elif field.tags_from is not None:
            value = tags_sql(field.tags_from, columns)
        else:
            value = literal_sql(field.constant) if field.constant is not None else "NULL"
        values[name] = value
    struct = ", ".join(
        f'"{name.replace(chr(34), chr(34) * 2)}" := {values[name]}' for name in sorted(values)
    )
    identity = f"CAST({column_sql(spec.identity.column)} AS VARCHAR)"
    if spec.identity.field in destination_info(spec.destination).lowercase_identity:
        identity = f"lower(trim({identity}))"
    return f"""
        SELECT {identity} AS identity, to_json(struct_pack({struct})) AS payload
        FROM (
            {spec.source}
        ) AS src
    """


def _plan(conn: duckdb.DuckDBPyConnection, spec: SyncSpec, columns: dict[str, str]) -> None:
    """Two temporary tables: ``_sync_mapped(identity, payload, row_hash, copies)``, the source
    as it would be sent, and ``_sync_plan(seq, identity, action, status, reason, payload,
    row_hash, destination_id)``: every add/change/removal to send (``status`` 'send') and
    every row skipped, in the order they are sent (removals first)."""
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {MAPPED} AS
        SELECT identity, payload, md5($fingerprint || payload) AS row_hash,
               count(*) OVER (PARTITION BY identity) AS copies
        FROM ({mapped_sql(spec, columns)})
        """,
        {"fingerprint": spec.fingerprint},
    )
    removals = (
        f"""
        UNION ALL
        SELECT s.identity, 'remove', 'send', NULL, NULL, NULL, s.destination_id
        FROM synced AS s
        WHERE NOT EXISTS (SELECT 1 FROM {MAPPED} AS m WHERE m.identity = s.identity)
        """
        if spec.mode == "mirror"
        else ""
    )
    null_identity = literal_sql(f"identity {spec.identity.column} is NULL")
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {PLAN} AS
        WITH synced AS (
            SELECT identity, row_hash, destination_id FROM _meta.sync_state WHERE sync = $sync
        ),
        diff AS (
            SELECT m.identity,
                   CASE WHEN s.identity IS NULL THEN 'add' ELSE 'change' END AS action,
                   CASE WHEN m.identity IS NULL OR m.copies > 1 THEN 'skip' ELSE 'send' END
                       AS status,
                   CASE WHEN m.identity IS NULL THEN {null_identity}
                        WHEN m.copies > 1 THEN 'identity appears ' || m.copies
                            || ' times in the source; none of its rows is sent'
                   END AS reason,
                   m.payload, m.row_hash, s.destination_id
            FROM {MAPPED} AS m
            LEFT JOIN synced AS s ON s.identity = m.identity
            WHERE m.identity IS NULL OR m.copies > 1 OR s.row_hash IS DISTINCT FROM m.row_hash
            {removals}
        )
        SELECT row_number() OVER (ORDER BY status, action <> 'remove', action, identity) AS seq,
               *
        FROM diff
        """,
        {"sync": spec.name},
    )


def _counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT status || ':' || action, count(*) FROM {PLAN} GROUP BY ALL"
    ).fetchall()
    counts = {key: int(n) for key, n in rows}
    source_rows = conn.execute(f"SELECT count(*) FROM {MAPPED}").fetchone()
    return {
        "add": counts.get("send:add", 0),
        "change": counts.get("send:change", 0),
        "remove": counts.get("send:remove", 0),
        "skip": counts.get("skip:add", 0) + counts.get("skip:change", 0),
        "source_rows": int(source_rows[0]) if source_rows else 0,
    }


def _batches(
    conn: duckdb.DuckDBPyConnection, size: int, *, removals: bool
) -> Iterator[list[tuple]]:
    """The plan's rows to send, ``size`` at a time, read ``READ_AHEAD`` batches per query
    (each query is a scan of the plan; Python holds at most that many batches)."""
    condition = "action = 'remove'" if removals else "action <> 'remove'"
    last = 0
    while True:
        rows = conn.execute(
            f"SELECT seq, identity, action, payload, row_hash, destination_id FROM {PLAN} "
            f"WHERE status = 'send' AND {condition} AND seq > ? ORDER BY seq LIMIT ?",
            [last, size * READ_AHEAD],
        ).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        for start in range(0, len(rows), size):
            yield rows[start : start + size]


# --------------------------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------------------------


class _Run:
    """Counters of one run, kept in step with ``sync_runs``."""

    def __init__(self, spec: SyncSpec, run_id: str) -> None:
        self.spec, self.run_id = spec, run_id
        self.counts = dict.fromkeys(("added", "changed", "removed", "failed", "skipped"), 0)
        self.failures: list[RowFailure] = []

    def fail(self, identity: str | None, action: Action, error: str) -> None:
        self.counts["failed"] += 1
        if len(self.failures) < SAMPLE_SIZE:
            self.failures.append(RowFailure(identity=identity, action=action, error=error))


def execute(
    conn: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    destination: Destination | None,
    *,
    dry_run: bool | None = None,
    run_id: str | None = None,
    log: Callable[[str], None] | None = None,
) -> SyncResult:
    """Run ``spec`` once on an open warehouse connection (see the module docstring).

    ``dry_run`` defaults to the spec's; a dry run needs no ``destination``. Raises
    :class:`SyncAuthError` when the destination refuses the credentials, :class:`SyncError`
    when whole batches keep failing or the source cannot be read; the run's row in
    ``_meta.sync_runs`` says what happened either way."""
    dry_run = spec.dry_run if dry_run is None else dry_run
    if destination is None and not dry_run:
        raise ValueError(f"sync {spec.name}: a destination is needed unless dry_run")
    say = log or (lambda message: None)
    started, clock = datetime.now(UTC), time.monotonic()
    state.ensure_sync_tables(conn)
    run_id = state.unique_run_id(conn, spec.name, run_id or uuid.uuid4().hex)
    state.start_run(conn, spec.name, run_id, dry_run=dry_run)
    run = _Run(spec, run_id)
    base_stats = _stats(destination)
    error: str | None = None
    planned: list[PlannedRow] = []
    counts = {"source_rows": 0, "add": 0, "change": 0, "remove": 0, "skip": 0}
    try:
        columns = _source_columns(conn, spec)
        _plan(conn, spec, columns)
        counts = _counts(conn)
        say(
            f"sync {spec.name}: {counts['source_rows']} source rows; plan: {counts['add']} adds, "
            f"{counts['change']} changes, {counts['remove']} removals, {counts['skip']} skipped"
        )
        with transaction(conn):
            _record_skips(conn, run)
        if dry_run:
            planned = _record_plan_sample(conn, run)
            run.counts.update(added=counts["add"], changed=counts["change"])
            run.counts["removed"] = counts["remove"]
        else:
            assert destination is not None
            _send(conn, run, destination, say)
    except SyncError as exc:
        error = str(exc)
        raise
    except SyncSpecError as exc:
        error = str(exc)
        raise SyncError(error) from None
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        stats = _delta(_stats(destination), base_stats)
        unchanged = counts["source_rows"] - counts["add"] - counts["change"] - counts["skip"]
        duration = time.monotonic() - clock
        with transaction(conn):
            state.update_run(
                conn,
                spec.name,
                run_id,
                finished=True,
                **run.counts,
                **stats,
                duration_s=round(duration, 3),
                error=error,
                source_rows=counts["source_rows"],
                unchanged=max(unchanged, 0),
            )
        conn.execute(f"DROP TABLE IF EXISTS {PLAN}")
        conn.execute(f"DROP TABLE IF EXISTS {MAPPED}")
    result = SyncResult(
        sync=spec.name,
        run_id=run_id,
        destination=spec.destination,
        object=spec.object,
        mode=spec.mode,
        dry_run=dry_run,
        started_at=started,
        finished_at=datetime.now(UTC),
        duration_s=round(duration, 3),
        source_rows=counts["source_rows"],
        unchanged=max(unchanged, 0),
        **run.counts,
        **stats,
        failures=run.failures,
        planned=planned,
    )
    say(result.summary())
    return result


def _check_fields(spec: SyncSpec, destination: Destination) -> None:
    """``check_fields``: every field the run writes must exist in the destination account
    (asked once, before the first batch: only when there is something to send)."""
    missing = destination.missing_fields(spec.written_fields)
    if missing:
        raise SyncError(
            f"sync {spec.name}: {spec.destination} {spec.object} has no field "
            f"{', '.join(missing)} (or the API user cannot see it); nothing was sent. Create "
            "the field(s) in the account, grant the user access, or change the sync's mapping "
            "and fields."
        )


def _source_columns(conn: duckdb.DuckDBPyConnection, spec: SyncSpec) -> dict[str, str]:
    missing = [t for t in spec.tables if not table_exists(conn, *t.split("."))]
    if missing:
        raise SyncError(
            f"sync {spec.name}: its source reads {', '.join(missing)}, which the warehouse does "
            "not have yet: materialize it first"
        )
    try:
        return describe_source(conn, spec.source)
    except duckdb.Error as exc:
        raise SyncError(f"sync {spec.name}: the source query does not bind: {exc}") from None


def _record_skips(conn: duckdb.DuckDBPyConnection, run: _Run) -> None:
    conn.execute(
        f"""
        INSERT INTO _meta.sync_row_outcomes
        SELECT ?, ?, identity, action, 'skipped', reason, destination_id, now()
        FROM {PLAN} WHERE status = 'skip'
        """,
        [run.spec.name, run.run_id],
    )
    skipped = conn.execute(f"SELECT count(*) FROM {PLAN} WHERE status = 'skip'").fetchone()
    run.counts["skipped"] = int(skipped[0]) if skipped else 0
    state.update_run(conn, run.spec.name, run.run_id, skipped=run.counts["skipped"])


def _record_plan_sample(conn: duckdb.DuckDBPyConnection, run: _Run) -> list[PlannedRow]:
    """A dry run's plan: up to SAMPLE_SIZE rows of each action, recorded as ``planned``."""
    rows = conn.execute(
        f"""
        SELECT identity, action, payload, destination_id FROM {PLAN}
        WHERE status = 'send'
        QUALIFY row_number() OVER (PARTITION BY action ORDER BY seq) <= {SAMPLE_SIZE}
        ORDER BY seq
        """
    ).fetchall()
    with transaction(conn):
        state.record_outcomes(
            conn,
            run.spec.name,
            run.run_id,
            [(identity, action, "planned", None, dest_id) for identity, action, _, dest_id in rows],
        )
    return [
        PlannedRow(
            identity=identity,
            action=action,
            fields=json.loads(payload) if payload is not None else None,
        )
        for identity, action, payload, _ in rows
    ]


def _send(
    conn: duckdb.DuckDBPyConnection,
    run: _Run,
    destination: Destination,
    say: Callable[[str], None],
) -> None:
    spec = run.spec
    # The client cuts what it is handed into calls of at most its API's batch limit.
    size = min(spec.effective_batch_size, destination.max_batch) * spec.batches_per_commit
    failed_batches = 0
    unchecked = spec.check_fields
    # Removals first: a record that left the source may hold a unique value (an email, a
    # customer id) that a record added in the same run takes over.
    for removals in (True, False):
        for rows in _batches(conn, size, removals=removals):
            try:
                if unchecked:
                    _check_fields(spec, destination)
                    unchecked = False
                if removals:
                    outcomes = destination.remove([(r[1], r[5]) for r in rows])
                else:
                    records = [
                        DestinationRecord(identity=r[1], fields=json.loads(r[3])) for r in rows
                    ]
                    send = destination.update if spec.mode == "update_only" else destination.upsert
                    outcomes = send(records)
            except DestinationAuthError as exc:
                message = (
                    f"sync {spec.name}: {spec.destination} refused the credentials ({exc}). "
                    f"Nothing of this batch of {len(rows)} was marked synced; "
                    f"{run.counts['added'] + run.counts['changed'] + run.counts['removed']} "
                    "records confirmed before it are kept. Renew the credentials ("
                    f"{', '.join(destination_info(spec.destination).credential_env)}) and "
                    "rerun: only what was not confirmed is sent again."
                )
                _commit_batch(conn, run, rows, None, f"not synced: {exc}")
                raise SyncAuthError(message) from None
            except DestinationSetupError as exc:
                # Every batch would fail the same way until the account is set up: stop now.
                _commit_batch(conn, run, rows, None, f"not synced: {exc}")
                raise SyncError(
                    f"sync {spec.name}: {exc}. Nothing of this batch of {len(rows)} was marked "
                    "synced; rerun once that is done."
                ) from None
            except DestinationError as exc:
                failed_batches += 1
                _commit_batch(conn, run, rows, None, f"batch failed: {exc}")
                say(f"sync {spec.name}: a batch of {len(rows)} failed ({exc}); retried next run")
                if failed_batches >= MAX_FAILED_BATCHES:
                    raise SyncError(
                        f"sync {spec.name}: {failed_batches} batches in a row failed, the last "
                        f"with: {exc}. Records confirmed before are kept; rerun when "
                        f"{spec.destination} answers again."
                    ) from None
                continue
            failed_batches = 0
            _commit_batch(conn, run, rows, outcomes, None)


def _commit_batch(
    conn: duckdb.DuckDBPyConnection,
    run: _Run,
    rows: list[tuple],
    outcomes: list[RecordOutcome] | None,
    batch_error: str | None,
) -> None:
    """One transaction: every record's outcome, and the state of the confirmed ones."""
    by_identity = {o.identity: o for o in outcomes or []}
    records: list[tuple[str | None, str, str, str | None, str | None]] = []
    confirmed: list[tuple[str, str, str | None]] = []
    removed: list[str] = []
    not_found = f"not found in {run.spec.destination}"
    for _, identity, action, _, row_hash, old_id in rows:
        outcome = by_identity.get(identity)
        if outcome is None:
            error = batch_error or f"{run.spec.destination} returned no outcome for this record"
            run.fail(identity, action, error)
            records.append((identity, action, "failed", error, old_id))
        elif outcome.ok:
            dest_id = outcome.destination_id or old_id
            records.append((identity, action, "synced", None, dest_id))
            if action == "remove":
                removed.append(identity)
                run.counts["removed"] += 1
            else:
                confirmed.append((identity, row_hash, dest_id))
                run.counts["added" if action == "add" else "changed"] += 1
        elif run.spec.mode == "update_only" and outcome.error == not_found:
            # Update-only never creates: a record the destination lacks is skipped (and tried
            # again next run, in case it has been created since).
            run.counts["skipped"] += 1
            records.append((identity, action, "skipped", outcome.error, old_id))
        else:
            error = outcome.error or "rejected without an error message"
            run.fail(identity, action, error)
            records.append((identity, action, "failed", error, old_id))
    with transaction(conn):
        state.record_outcomes(conn, run.spec.name, run.run_id, records)
        state.confirm(conn, run.spec.name, confirmed)
        state.forget(conn, run.spec.name, removed)
        state.update_run(conn, run.spec.name, run.run_id, **run.counts)


def _stats(destination: Destination | None) -> dict[str, int]:
    if destination is None:
        return {"api_calls": 0, "retries": 0, "rate_limited": 0}
    stats = destination.stats
    return {
        "api_calls": stats.api_calls,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
    }


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


# --------------------------------------------------------------------------------------------
# By name, for the CLI
# --------------------------------------------------------------------------------------------


def run_sync(
    name: str,
    settings: PlatformSettings,
    dry_run: bool = False,
    *,
    full: bool = False,
    syncs: Sequence[SyncSpec] | None = None,
    environ: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> SyncResult:
    """Run the declared sync ``name`` on ``settings``' warehouse (``medallion sync <name>``).

    Credentials come from ``environ`` (default: the process environment) through the
    destination client's ``from_env``; a dry run needs none. ``full`` forgets what was synced
    first, so every row is sent again (after a destination was emptied or restored: upserts by
    identity make that safe). Raises ``KeyError`` for an unknown name."""
    declared = {spec.name: spec for spec in (syncs if syncs is not None else load_syncs())}
    if name not in declared:
        raise KeyError(f"no sync named {name!r}; declared: {', '.join(sorted(declared))}")
    spec = declared[name]
    dry_run = dry_run or spec.dry_run  # a sync declared dry_run never sends
    warehouse = Warehouse(
        settings.warehouse_path,
        memory_limit=settings.duckdb_memory_limit,
        threads=settings.duckdb_threads,
    )
    if full and dry_run:
        raise ValueError("a full resync cannot be a dry run: a dry run changes no state")
    if dry_run:
        with warehouse.connect() as conn:
            return execute(conn, spec, None, dry_run=True, log=log)
    destination = open_destination(spec, environ)  # before the lock: fail fast if unset
    try:
        with warehouse.connect() as conn:
            if full:
                with transaction(conn):
                    state.ensure_sync_tables(conn)
                    state.reset(conn, spec.name)
            return execute(conn, spec, destination, dry_run=False, log=log)
    finally:
        destination.close()
