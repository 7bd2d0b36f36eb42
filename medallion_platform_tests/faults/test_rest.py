"""REST: ``sync_endpoint`` of the payments API's charges killed between commits, while a page
is in flight on the API, or anywhere, then rerun.

Truth: the charges the API serves. A sync pass reads the charges created since its start
(the first pass: all of them; a pass after a complete one: from the high-water mark minus the
lookback hour, which it reads again by design; silver keeps one row per charge). After any
kill the sync state names exactly what bronze holds (pages committed, the cursor of the last
committed charge, a mark that moves only when a pass ends); after the reruns every pass holds
exactly its charges, each once.
"""

from __future__ import annotations

import re
from math import ceil
from pathlib import Path
from typing import NamedTuple

import pytest

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.rest import RestSource, SyncState
from medallion_platform.connectors.rest.sync import state_key
from medallion_platform.devkit.demo.payments_api import PaymentsApi, generate_payments
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

    def _respond(self, method: str, target: str, authorization: str | None, *more):  # type: ignore[no-untyped-def]
        served = sum(1 for r in self.requests if r.path == "/v1/charges")
        if (
            self.switch is not None
            and target.startswith("/v1/charges")
            and served + 1 == self.kill_at
        ):
            self.switch.fire(f"while serving page {self.kill_at}")
        return super()._respond(method, target, authorization, *more)


def _state(q: Query, key: str) -> SyncState:
    raw = q("SELECT position FROM _meta.positions WHERE source = ? AND key = 'state'", [key])
    return SyncState.model_validate_json(raw[0][0]) if raw else SyncState()


_SINCE = re.compile(r"created%5Bgte%5D=(\d+)")


class Charges:
    """The API's charges, newest first (its list order), and what a pass since ``since``
    reads: a complete sync's next run starts from its high-water mark minus the lookback, so it
    reads that hour again (by design: silver keeps one row per charge)."""

    def __init__(self, charges: list[dict]) -> None:
        ordered = sorted(charges, key=lambda c: (c["created"], c["id"]), reverse=True)
        self.newest_first = [(c["id"], c["created"]) for c in ordered]
        self.newest = ordered[0]["created"]

    def since(self, since: int) -> list[str]:
        return [i for i, created in self.newest_first if created >= since]


class Pass(NamedTuple):
    """One sync pass in bronze: the ``created[gte]`` its pages asked for, its charge ids in
    landing order and its distinct pages."""

    since: int
    ids: list[str]
    pages: int


def _passes(q: Query) -> list[Pass]:
    """The sync passes in bronze, in landing order. A pass begins with a page that asks for
    no cursor (``starting_after``): a resumed pass continues with one. Two passes may ask for
    the same ``created[gte]`` (a complete pass's next run re-reads the lookback hour from an
    unmoved mark), so the ``since`` alone does not tell passes apart."""
    if q(f"SELECT count(*) FROM {BRONZE}") in ([], [(0,)]):
        return []  # (until its first rows, the table has only its lineage columns: no id)
    passes: list[tuple[int, list[str], set[str]]] = []
    previous = None
    # Only the charges' list: changes to charges read from /v1/events land in the same table
    # (issue 15), as versions; the passes are what the list pages hold.
    rows = q(
        f"SELECT _raw->>'id', _source, _batch_id FROM {BRONZE} WHERE _source LIKE '%/v1/charges?%'"
        " ORDER BY _batch_id, rowid"
    )
    for charge, source, batch in rows:
        page = source.split("#", 1)[0]
        # (the same first page twice in a row is two passes: they are in two commits)
        if ((page, batch) != previous and "starting_after" not in page) or not passes:
            since = _SINCE.search(source)
            passes.append((int(since.group(1)) if since else -1, [], set()))
        passes[-1][1].append(charge)
        passes[-1][2].add(page)
        previous = (page, batch)
    return [Pass(since, ids, len(pages)) for since, ids, pages in passes]


def _check_state(trial: Trial, warehouse: Path, key: str, charges: Charges, when: str) -> None:
    """Every finished pass read exactly its charges; the pass under way committed whole pages,
    each charge once, and its state resumes right after the last committed charge; the mark
    moves only when a pass ends."""
    with reading(warehouse) as q:
        passes = _passes(q)
        state = _state(q, key)
    progress = state.in_progress
    for number, (since, ids, pages) in enumerate(passes, start=1):
        want = charges.since(since)
        if progress is not None and number == len(passes):  # the pass under way
            trial.expect(
                since == progress.since,
                f"{when}: the last pass asked since {since}, its state says {progress.since}",
            )
            trial.expect(
                len(ids) == len(set(ids)) == progress.pages * PAGE == pages * PAGE,
                f"{when}: pass {number} since {since}: {len(ids)} rows, {len(set(ids))} ids, "
                f"{pages} pages in bronze, {progress.pages} in its state",
            )
            trial.expect(
                set(ids) == set(want[: len(ids)]),
                f"{when}: pass {number} since {since} holds other charges than its first "
                f"{len(ids)}",
            )
            cursor = want[len(ids) - 1] if ids else None
            trial.expect(
                progress.resume == {"starting_after": cursor},
                f"{when}: resumes at {progress.resume}, the last committed is {cursor}",
            )
        else:
            trial.expect(
                sorted(ids) == sorted(want),
                f"{when}: finished pass {number} since {since}: {len(ids)} rows for "
                f"{len(want)} charges",
            )
    done = len(passes) - (progress is not None and bool(passes))
    mark = charges.newest if done else None
    trial.expect(state.high_water_mark == mark, f"{when}: mark {state.high_water_mark}, {mark=}")


@pytest.mark.parametrize("seed", trial_seeds())
def test_rest_sync_killed_then_rerun_loses_and_doubles_nothing(
    seed: int, tmp_path: Path, config: PlatformConfig
) -> None:
    with Trial("rest", seed) as trial:
        charges = trial.rng.randint(1_200, 2_400)
        data = generate_payments(charges, seed=seed)
        truth = Charges(data.charges)
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
            plan = trial.first_plan(
                {"committed": commits},
                timer_s=0.3,
                server_requests=pages,
                server_phases=("in flight",),
            )
            api.kill_at = plan.at if plan.how == "server" else 0
            key = state_key(source, endpoint)
            if trial.run(job, plan, switch=switch).status == "killed":
                _check_state(trial, warehouse, key, truth, "after the kill")
                if trial.second_crash():
                    again = draw_plan(trial.rng, {"committed": 1}, timer_s=0.2)
                    if trial.run(job, again).status == "killed":
                        _check_state(trial, warehouse, key, truth, "after the second kill")
            api.kill_at = 0
            trial.run(job)
        _check_state(trial, warehouse, key, truth, "at the end")
        with reading(warehouse) as q:
            passes = _passes(q)
            state = _state(q, key)
        for number, (since, ids, _pages) in enumerate(passes):
            trial.account([(number, i) for i in truth.since(since)], [(number, i) for i in ids])
        trial.expect(
            bool(passes) and passes[0].since == 0,
            f"the first pass did not read every charge: {[p.since for p in passes]}",
        )
        trial.expect(state.in_progress is None, f"final state {state}")
        trial.assert_clean()
