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
from typing import Any

import pytest

from medallion_platform.reverse_etl.destinations.http import RetryPolicy
from medallion_platform.reverse_etl.engine import SyncResult, execute
from medallion_platform.reverse_etl.spec import SyncSpec, open_destination
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.faults.harness import Trial
from medallion_platform_tests.faults.syncs import (
    DESTINATIONS,
    Destination,
    packaged,
    write_requests,
)
from medallion_platform_tests.reverse_etl import make_customers, state_hashes, write_customers

CUSTOMERS = 80
BATCH = 10
ANSWER_AFTER_S = 0.8  # the slow write's answer (and its late apply)
RETRY = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=0.25)


def _run(conn: Any, spec: SyncSpec, dest: Destination, emulator: Any) -> SyncResult:
    options = {**dest.options, "retry": RETRY}
    with open_destination(spec, dest.env(emulator), **options) as client:
        return execute(conn, spec, client)


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
            first = _run(conn, spec, dest, emulator)
            time.sleep(ANSWER_AFTER_S if fault == "timeout" else 0)  # the late apply lands
            ids_first = dest.ids(emulator)
            recorded = _outcomes(conn, name, first.run_id)
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
                    len(state_hashes(conn, name)) == len(expected) - first.failed,
                    "records the destination never confirmed are in the sync state",
                )
            rerun = _run(conn, spec, dest, emulator)
            trial.expect(
                (rerun.added, rerun.changed, rerun.failed) == (first.failed, 0, 0),
                f"rerun: {rerun.added} added, {rerun.changed} changed, {rerun.failed} failed",
            )
            rerun_synced = len(_outcomes(conn, name, rerun.run_id).get("synced", []))
            trial.expect(rerun_synced == rerun.added, "rerun outcomes not recorded")
            trial.expect(len(state_hashes(conn, name)) == len(expected), "sync state incomplete")
        held = dest.state(emulator)
        trial.account(
            [(k, repr(v)) for k, v in expected.items()], [(k, repr(v)) for k, v in held.items()]
        )
        ids = dest.ids(emulator)
        trial.outcome.duplicated += sum(1 for k, i in ids_first.items() if ids.get(k) != i)
        trial.outcome.duplicated += max(0, dest.created(emulator) - len(expected))
        trial.assert_clean()
