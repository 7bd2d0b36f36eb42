"""Reverse ETL: each packaged sync (Salesforce, HubSpot, Zendesk) killed while the destination
serves a write (before or after applying it), right after the destination confirmed a batch
that the engine has not recorded yet, a random fraction of a batch later, or anywhere; then rerun.

Truth: what the destination should hold for the customers in gold (computed independently of
the engine). After any kill, the sync state holds only records the destination confirmed: a
record whose state moved is in the destination as the state says, a record the state dropped
is gone from it. After the reruns the destination holds exactly the expected records, none
created twice (no new id for a record that existed), and every change has its outcome.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from medallion_platform.reverse_etl import state as sync_state
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.faults.children import Job
from medallion_platform_tests.faults.harness import KillSwitch, Trial, draw_plan, trial_seeds
from medallion_platform_tests.faults.syncs import (
    DESTINATIONS,
    Destination,
    engine_calls,
    packaged,
    write_requests,
)
from medallion_platform_tests.reverse_etl import (
    Customer,
    changed,
    make_customers,
    state_hashes,
    write_customers,
)


def _evolve(trial: Trial, customers: list[Customer], mirror: bool) -> list[Customer]:
    """Gold a day later: some customers changed, some new, (for a mirror) some gone."""
    out = []
    for c in customers:
        roll = trial.rng.random()
        if mirror and roll < 0.1:
            continue
        if roll < 0.4:
            c = changed(c, churn_probability=round(trial.rng.random(), 4), segment="pro")
        out.append(c)
    start = len(customers) + 1
    fresh = make_customers(start + trial.rng.randint(20, 60))[start - 1 :]
    return out + fresh


def _check_at_kill(
    trial: Trial,
    dest: Destination,
    emulator,  # type: ignore[no-untyped-def]
    warehouse: Path,
    before: dict[str, str],
    finished_before: int,
    expected: dict[str, dict],
    when: str,
) -> dict[str, str]:
    """Only confirmed records moved in the state; a killed run is recorded as finished only if
    the kill came after its end (everything sent and confirmed)."""
    with Warehouse(warehouse).connect() as conn:
        now = state_hashes(conn, dest.sync)
        finished = _finished_runs(conn, dest.sync)
    held = dest.state(emulator)
    trial.expect(
        finished == finished_before or (len(now) == len(expected) and held == expected),
        f"{when}: a killed run is recorded as finished with {len(now)} of {len(expected)} synced",
    )
    moved = [k for k, h in now.items() if before.get(k) != h]
    keys = {k.lower(): k for k in held}
    for identity in moved:
        key = keys.get(identity.lower())
        trial.expect(
            key is not None and held[key] == expected.get(key),
            f"{when}: {identity} is in the sync state but the destination has "
            f"{held.get(key) if key else None}",
        )
    for identity in set(before) - set(now):
        trial.expect(identity.lower() not in keys, f"{when}: {identity} forgotten but still there")
    return now


def _finished_runs(conn: duckdb.DuckDBPyConnection, sync: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM _meta.sync_runs WHERE sync = ? AND finished_at IS NOT NULL", [sync]
    ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("seed", trial_seeds())
@pytest.mark.parametrize("name", sorted(DESTINATIONS))
def test_sync_killed_then_rerun_loses_and_duplicates_nothing(
    name: str, seed: int, tmp_path: Path, empty_gold: Path
) -> None:
    dest = DESTINATIONS[name]
    with Trial(name.split("_")[0], seed) as trial, dest.start() as emulator:
        batch = trial.rng.choice([10, 20, 25])
        spec = packaged(name).model_copy(update={"batch_size": batch})
        warehouse = tmp_path / "warehouse.duckdb"
        shutil.copyfile(empty_gold, warehouse)
        customers = make_customers(trial.rng.randint(100, 200))
        expected_before: dict[str, dict] = {}
        with Warehouse(warehouse).connect() as conn:
            write_customers(conn, customers)
        job = Job(
            "sync", str(warehouse), {"spec": spec, "options": dest.options}, dest.env(emulator)
        )
        if trial.rng.random() < 0.5:  # a day of changes after a complete sync
            trial.expect(trial.run(job).status == "done", "the first sync did not finish")
            expected_before = dest.expected(customers)
            trial.expect(dest.state(emulator) == expected_before, "the first sync is wrong")
            customers = _evolve(trial, customers, dest.mirror)
            with Warehouse(warehouse).connect() as conn:
                write_customers(conn, customers)
        with Warehouse(warehouse).connect() as conn:
            sync_state.ensure_sync_tables(conn)
            before = state_hashes(conn, name)
            finished_before = _finished_runs(conn, name)
        expected = dest.expected(customers)
        ids_before = dest.ids(emulator)
        sends = sum(expected_before.get(k) != v for k, v in expected.items())
        removals = len(set(expected_before) - set(expected)) if dest.mirror else 0
        calls = sum(engine_calls(spec, n) for n in (sends, removals))
        writes = sum(write_requests(spec, n) for n in (sends, removals))
        switch = KillSwitch()
        plan = trial.first_plan({"confirmed": calls}, timer_s=0.3, server_requests=writes)
        if plan.how == "server":
            emulator.arm(switch, plan.at, plan.phase)
        first = trial.run(job, plan, switch=switch)
        emulator.disarm()
        ids_at_kill = dest.ids(emulator)
        if first.status == "killed":
            at_kill = _check_at_kill(
                trial,
                dest,
                emulator,
                warehouse,
                before,
                finished_before,
                expected,
                "after the kill",
            )
            if trial.second_crash():
                again = draw_plan(trial.rng, {"confirmed": 1}, timer_s=0.2, server_requests=1)
                if again.how == "server":
                    emulator.arm(switch, again.at, again.phase)
                if trial.run(job, again, switch=switch).status == "killed":
                    _check_at_kill(
                        trial,
                        dest,
                        emulator,
                        warehouse,
                        at_kill,
                        finished_before,
                        expected,
                        "after the second kill",
                    )
                emulator.disarm()
        trial.run(job)
        held = dest.state(emulator)
        trial.account(
            [(k, repr(v)) for k, v in expected.items()], [(k, repr(v)) for k, v in held.items()]
        )
        ids = dest.ids(emulator)
        recreated = [
            k for k, i in {**ids_before, **ids_at_kill}.items() if k in ids and ids[k] != i
        ]
        trial.outcome.duplicated += len(recreated)
        ever = set(ids_before) | set(expected)
        trial.outcome.duplicated += max(0, dest.created(emulator) - len(ever))
        with Warehouse(warehouse).connect() as conn:
            final = state_hashes(conn, name)
            last = conn.execute(
                "SELECT error, failed, finished_at IS NOT NULL FROM _meta.sync_runs "
                "WHERE sync = ? ORDER BY started_at DESC LIMIT 1",
                [name],
            ).fetchone()
            synced = {
                identity
                for (identity,) in conn.execute(
                    "SELECT DISTINCT identity FROM _meta.sync_row_outcomes "
                    "WHERE sync = ? AND status = 'synced'",
                    [name],
                ).fetchall()
            }
        trial.expect(
            len(final) == len(expected), f"sync state holds {len(final)} of {len(expected)}"
        )
        trial.expect(last == (None, 0, True), f"the last run ended {last}")
        unrecorded = [k for k, h in final.items() if before.get(k) != h and k not in synced]
        trial.expect(
            not unrecorded, f"{len(unrecorded)} synced without an outcome: {unrecorded[:3]}"
        )
        trial.assert_clean()
