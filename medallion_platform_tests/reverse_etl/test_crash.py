"""A sync process killed mid-run (SIGKILL: no cleanup) and run again: every record lands once,
the state holds only what the destination confirmed, nothing is created twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import duckdb

from medallion_platform.devkit.demo.destinations.salesforce import SalesforceEmulator
from medallion_platform.devkit.demo.http_emulator import Request, Response
from medallion_platform.reverse_etl.engine import execute
from medallion_platform.reverse_etl.spec import open_destination
from medallion_platform_tests.reverse_etl import (
    TOKEN,
    create_gold,
    expected_salesforce,
    make_customers,
    salesforce_state,
    state_hashes,
    sync,
)

BATCH = 10
CUSTOMERS = 120
KILL_AT = 5 * BATCH  # records written by the destination when the process is killed

SYNC_PROCESS = textwrap.dedent(
    """
    import sys

    import duckdb

    from medallion_platform.reverse_etl.engine import execute
    from medallion_platform.reverse_etl.spec import load_syncs, open_destination

    warehouse, batch = sys.argv[1], int(sys.argv[2])
    spec = next(s for s in load_syncs() if s.name == "salesforce_contacts")
    spec = spec.model_copy(update={"batch_size": batch})
    destination = open_destination(spec)  # SALESFORCE_* from the environment
    with duckdb.connect(warehouse) as conn:
        execute(conn, spec, destination, run_id="killed")
    """
)


class SlowToAnswer(SalesforceEmulator):
    """Salesforce whose answers arrive ``answer_delay`` after the write is committed: a process
    killed in that gap leaves records the destination has and the sync never heard confirmed."""

    answer_delay = 0.25

    def handle(self, request: Request) -> Response | None:
        response = super().handle(request)
        time.sleep(self.answer_delay)
        return response


def test_a_sync_killed_mid_run_resumes_without_duplicates(settings) -> None:
    customers = make_customers(CUSTOMERS)
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        create_gold(conn, customers)
    with SlowToAnswer(token=TOKEN) as salesforce:
        env = {
            **os.environ,
            "SALESFORCE_INSTANCE_URL": salesforce.base_url,
            "SALESFORCE_ACCESS_TOKEN": TOKEN,
        }
        process = subprocess.Popen(
            [sys.executable, "-c", SYNC_PROCESS, str(settings.warehouse_path), str(BATCH)],
            env=env,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while len(salesforce.records()) < KILL_AT:
                assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the sync process made no progress"
                time.sleep(0.005)
            # The fifth batch is written; its answer is still on the way: kill now.
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == -signal.SIGKILL
        at_kill = salesforce.records()
        ids_at_kill = {key: record["Id"] for key, record in at_kill.items()}

        with duckdb.connect(str(settings.warehouse_path)) as conn:  # the lock died with it
            confirmed = state_hashes(conn, "salesforce_contacts")
            crashed = conn.execute(
                "SELECT finished_at, added FROM _meta.sync_runs WHERE run_id = 'killed'"
            ).fetchone()
            # Only confirmed batches are in the state, each record as the destination has it.
            assert len(confirmed) == KILL_AT - BATCH and set(confirmed) < set(at_kill)
            expected = expected_salesforce(customers)
            assert all(salesforce_state(salesforce)[key] == expected[key] for key in confirmed)
            assert crashed == (None, KILL_AT - BATCH)  # never finished; counts up to its crash

            salesforce.answer_delay = 0.0
            spec = sync("salesforce_contacts", batch_size=BATCH)
            with open_destination(
                spec,
                {"SALESFORCE_INSTANCE_URL": salesforce.base_url, "SALESFORCE_ACCESS_TOKEN": TOKEN},
            ) as destination:
                rerun = execute(conn, spec, destination)
            assert (rerun.added, rerun.changed, rerun.failed) == (CUSTOMERS - len(confirmed), 0, 0)
            assert len(state_hashes(conn, spec.name)) == CUSTOMERS

        final = salesforce.records()
        assert salesforce_state(salesforce) == expected_salesforce(customers)
        # Nothing created twice: the records there at the kill kept their Salesforce ids (the
        # unconfirmed batch was upserted again, by external id, as updates).
        assert {key: final[key]["Id"] for key in ids_at_kill} == ids_at_kill
        assert len({record["Id"] for record in final.values()}) == CUSTOMERS
