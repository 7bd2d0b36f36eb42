"""Destination faults in the middle of a sync, then a rerun, for each packaged sync:

- a timeout: one write is answered only after the client gave up (and is applied then, after
  the client's retry was): the retry must not create anything twice;
- a 5xx after the write was applied, on every attempt: the client gives up, the engine records
  that batch as failed and keeps it out of the sync state although the destination has it;
  the rerun sends it again and must update, not create.

Either way every record ends up exactly as expected, created once, with its outcomes recorded.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from medallion_platform.reverse_etl.destinations.http import RetryPolicy
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.faults.children import Job
from medallion_platform_tests.faults.harness import Trial
from medallion_platform_tests.faults.syncs import (
    DESTINATIONS,
    packaged,
    write_requests,
)
from medallion_platform_tests.reverse_etl import make_customers, state_hashes, write_customers

CUSTOMERS = 80
BATCH = 10
ANSWER_AFTER_S = 0.8  # the slow write's answer (and its late apply)
RETRY = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=0.25)


class Run(NamedTuple):
    """One run as ``_meta.sync_runs`` recorded it."""

    run_id: str
    added: int
    changed: int
    failed: int
    retries: int


def _run(trial: Trial, job: Job, warehouse: Path, sync: str) -> Run:
    """One sync in a child (a deadline, like every trial run), read back from the warehouse."""
    trial.run(job)
    with Warehouse(warehouse).connect() as conn:
        row = conn.execute(
            "SELECT run_id, added, changed, failed, retries FROM _meta.sync_runs "
            "WHERE sync = ? ORDER BY started_at DESC LIMIT 1",
            [sync],
        ).fetchone()
    return Run(*row)


def _outcomes(conn: Any, sync: str, run_id: str) -> dict[str, list[str]]:
    rows = conn.execute(
        "SELECT status, coalesce(error, '') FROM _meta.sync_row_outcomes "
        "WHERE sync = ? AND run_id = ?",
        [sync, run_id],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for status, error in rows:
        out.setdefault(status, []).append(error)
    return out


@pytest.mark.parametrize("fault", ["timeout", "5xx after apply"])
@pytest.mark.parametrize("name", sorted(DESTINATIONS))
def test_a_destination_fault_mid_sync_then_a_rerun_duplicates_nothing(
    name: str, fault: str, tmp_path: Path, empty_gold: Path
) -> None:
    dest = DESTINATIONS[name]
    with Trial(f"{name.split('_')[0]} ({fault})", 0) as trial, dest.start() as emulator:
        # One batch per call (Zendesk's packaged sync hands over ten): the fault lands mid-run.
        spec = packaged(name).model_copy(update={"batch_size": BATCH, "batches_per_commit": 1})
        warehouse = tmp_path / "warehouse.duckdb"
        shutil.copyfile(empty_gold, warehouse)
        customers = make_customers(CUSTOMERS)
        expected = dest.expected(customers)
        at = 1 + trial.rng.randrange(write_requests(spec, len(expected)) - 1)  # not the last
        if fault == "timeout":
            emulator.fault_at(
                at, lambda path: emulator.slow_next(seconds=ANSWER_AFTER_S, path=path)
            )
        else:
            emulator.fault_at(
                at,
                lambda path: emulator.fail_next(
                    RETRY.max_attempts, status=500, path=path, after_processing=True
                ),
            )
        trial.outcome.faults.append(f"{fault} at write {at}")
        with Warehouse(warehouse).connect() as conn:
            write_customers(conn, customers)
        options = {**dest.options, "retry": RETRY}
        job = Job("sync", str(warehouse), {"spec": spec, "options": options}, dest.env(emulator))
        first = _run(trial, job, warehouse, name)
        time.sleep(ANSWER_AFTER_S if fault == "timeout" else 0)  # the late apply lands
        ids_first = dest.ids(emulator)
        with Warehouse(warehouse).connect() as conn:
            recorded = _outcomes(conn, name, first.run_id)
            synced_first = len(state_hashes(conn, name))
        trial.expect(first.retries >= 1, f"the fault caused no retry: {first}")
        trial.expect(
            len(recorded.get("synced", [])) == first.added
            and len(recorded.get("failed", [])) == first.failed
            and first.added + first.failed == len(expected),
            f"first run: {first.added} added, {first.failed} failed, outcomes {recorded}",
        )
        if fault == "5xx after apply":
            trial.expect(first.failed >= BATCH, f"the failing batch was not failed: {first}")
            trial.expect(
                all("HTTP 500" in error for error in recorded.get("failed", [])),
                f"failed outcomes without the destination's error: {recorded.get('failed')}",
            )
            trial.expect(
                synced_first == len(expected) - first.failed,
                "records the destination never confirmed are in the sync state",
            )
        rerun = _run(trial, job, warehouse, name)
        trial.expect(
            (rerun.added, rerun.changed, rerun.failed) == (first.failed, 0, 0),
            f"rerun: {rerun.added} added, {rerun.changed} changed, {rerun.failed} failed",
        )
        with Warehouse(warehouse).connect() as conn:
            rerun_synced = len(_outcomes(conn, name, rerun.run_id).get("synced", []))
            synced = len(state_hashes(conn, name))
        trial.expect(rerun_synced == rerun.added, "rerun outcomes not recorded")
        trial.expect(synced == len(expected), "sync state incomplete")
        held = dest.state(emulator)
        trial.account(
            [(k, repr(v)) for k, v in expected.items()], [(k, repr(v)) for k, v in held.items()]
        )
        ids = dest.ids(emulator)
        trial.outcome.duplicated += sum(1 for k, i in ids_first.items() if ids.get(k) != i)
        trial.outcome.duplicated += max(0, dest.created(emulator) - len(expected))
        trial.assert_clean()
