"""REST: ``sync_endpoint`` of the payments API's charges killed between commits, while a page
is in flight on the API, or anywhere, then rerun.

Truth: the charges the API serves. After any kill the sync state names exactly what bronze
holds (pages committed, the cursor of the last committed record, no high-water mark before the
last page); after the reruns every charge is in bronze exactly once and the mark is the newest.
"""

from __future__ import annotations

from math import ceil
from pathlib import Path

import pytest

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.rest import RestSource, SyncState
from medallion_platform.connectors.rest.sync import state_key
from medallion_platform.demo.payments_api import PaymentsApi, generate_payments
from medallion_platform_tests.faults.children import Job
from medallion_platform_tests.faults.harness import (
    KillSwitch,
    Query,
    Trial,
    draw_plan,
    reading,
    trial_seeds,
)

TOKEN = "sk_test_fault_trials_0123456789"
BRONZE = "bronze.payments_charges"
PAGE = 100


class KillingPaymentsApi(PaymentsApi):
    """The payments API; it kills the syncing child while serving the ``kill_at``-th page."""

    kill_at = 0
    switch: KillSwitch | None = None

    def _respond(self, method: str, target: str, authorization: str | None):  # type: ignore[no-untyped-def]
        served = sum(1 for r in self.requests if r.path == "/v1/charges")
        if (
            self.switch is not None
            and target.startswith("/v1/charges")
            and served + 1 == self.kill_at
        ):
            self.switch.fire(f"while serving page {self.kill_at}")
        return super()._respond(method, target, authorization)


def _state(q: Query, key: str) -> SyncState:
    raw = q("SELECT position FROM _meta.positions WHERE source = ? AND key = 'state'", [key])
    return SyncState.model_validate_json(raw[0][0]) if raw else SyncState()


def _check_state(
    trial: Trial, warehouse: Path, key: str, newest_first: list[str], when: str
) -> None:
    """The committed state names exactly the committed rows."""
    count, distinct, pages = 0, 0, 0
    with reading(warehouse) as q:
        if q(f"SELECT count(*) FROM {BRONZE}") not in ([], [(0,)]):
            # (Until its first rows, the table has only its lineage columns: no id column.)
            count, distinct, pages = q(
                "SELECT count(*), count(DISTINCT id), count(DISTINCT split_part(_source, '#', 1)) "
                f"FROM {BRONZE}"
            )[0]
        state = _state(q, key)
    trial.expect(count == distinct, f"{when}: {count} rows, {distinct} distinct ids")
    if state.in_progress is None:
        complete = count == len(newest_first)
        trial.expect(
            complete or count == 0, f"{when}: {count} rows committed but no sync in progress"
        )
        return
    progress = state.in_progress
    trial.expect(
        progress.pages == pages, f"{when}: state says {progress.pages} pages, bronze holds {pages}"
    )
    trial.expect(
        count == progress.pages * PAGE, f"{when}: {count} rows for {progress.pages} full pages"
    )
    cursor = newest_first[count - 1] if count else None
    trial.expect(
        progress.resume == {"starting_after": cursor},
        f"{when}: resumes at {progress.resume}, last committed is {cursor}",
    )
    trial.expect(
        state.high_water_mark is None, f"{when}: high-water mark moved before the last page"
    )


@pytest.mark.parametrize("seed", trial_seeds())
def test_rest_sync_killed_then_rerun_loses_and_doubles_nothing(
    seed: int, tmp_path: Path, config: PlatformConfig
) -> None:
    with Trial("rest", seed) as trial:
        charges = trial.rng.randint(1_200, 2_400)
        data = generate_payments(charges, seed=seed)
        newest_first = [
            c["id"]
            for c in sorted(data.charges, key=lambda c: (c["created"], c["id"]), reverse=True)
        ]
        packaged = config.rest_sources[0]
        endpoint = next(e for e in packaged.endpoints if e.name == "charges")
        endpoint = endpoint.model_copy(update={"pages_per_commit": trial.rng.choice([1, 2, 3])})
        source = RestSource.model_validate(
            {**packaged.model_dump(), "endpoints": [endpoint.model_dump()]}
        )
        warehouse = tmp_path / "warehouse.duckdb"
        pages = ceil(charges / PAGE)
        switch = KillSwitch()
        with KillingPaymentsApi(data, token=TOKEN) as api:
            api.switch = switch
            job = Job(
                "rest",
                str(warehouse),
                {"source": source, "endpoint": endpoint, "base_url": api.base_url},
                env={source.auth.token_env: TOKEN},
            )
            commits = ceil(pages / endpoint.pages_per_commit)
            plan = draw_plan(
                trial.rng,
                {"committed": commits},
                timer_s=0.3,
                server_requests=pages,
                server_phases=("in flight",),
            )
            api.kill_at = plan.at if plan.how == "server" else 0
            key = state_key(source, endpoint)
            if trial.run(job, plan, switch=switch).status == "killed":
                _check_state(trial, warehouse, key, newest_first, "after the kill")
                if trial.second_crash():
                    again = draw_plan(trial.rng, {"committed": 1}, timer_s=0.2)
                    if trial.run(job, again).status == "killed":
                        _check_state(trial, warehouse, key, newest_first, "after the second kill")
            api.kill_at = 0
            trial.run(job)
        with reading(warehouse) as q:
            trial.account(newest_first, [i for (i,) in q(f"SELECT id FROM {BRONZE}")])
            state = _state(q, key)
        newest = max(c["created"] for c in data.charges)
        trial.expect(
            state.in_progress is None and state.high_water_mark == newest, f"final state {state}"
        )
        trial.assert_clean()
