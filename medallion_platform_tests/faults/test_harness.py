"""The harness itself: a hung child is killed at its deadline and reported ``hung``, and a kill
plan kills where it says (so a trial that reports "0 lost" was really killed there)."""

from __future__ import annotations

import time
from pathlib import Path

from medallion_platform.config import PlatformConfig
from medallion_platform.devkit.demo.payments_api import PaymentsApi, generate_payments
from medallion_platform_tests.faults.children import Job
from medallion_platform_tests.faults.harness import KillPlan, run_child

TOKEN = "sk_test_fault_harness_0123456789"


def _rest_job(config: PlatformConfig, warehouse: Path, base_url: str) -> Job:
    source = config.rest_sources[0]
    endpoint = next(e for e in source.endpoints if e.name == "charges")
    endpoint = endpoint.model_copy(update={"pages_per_commit": 10})  # 3,000 charges: 3 commits
    params = {"source": source, "endpoint": endpoint, "base_url": base_url}
    return Job("rest", str(warehouse), params, env={source.auth.token_env: TOKEN})


def test_a_child_that_hangs_is_killed_at_its_deadline_and_reported_hung(
    tmp_path: Path, config: PlatformConfig
) -> None:
    """An API that takes 30 s to answer its first page, a client willing to wait that long:
    the sync hangs, and the trial ends after its deadline, with the child gone."""
    with PaymentsApi(generate_payments(300), token=TOKEN) as api:
        api.faults.add("slow", path="/v1/charges", delay=30)
        started = time.monotonic()
        run = run_child(_rest_job(config, tmp_path / "w.duckdb", api.base_url), timeout_s=2.0)
        took = time.monotonic() - started
    assert run.status == "hung" and run.kill_point == "hung", run
    assert 2.0 <= took < 10, took
    assert [name for name, _, _ in run.events] == ["ready"]


def test_a_self_kill_plan_dies_inside_the_planned_callback(
    tmp_path: Path, config: PlatformConfig
) -> None:
    """Killed at its 2nd commit (of 3: ten pages each): it reported exactly two, and the
    rerun resumes after them."""
    with PaymentsApi(generate_payments(3_000), token=TOKEN) as api:
        job = _rest_job(config, tmp_path / "w.duckdb", api.base_url)
        run = run_child(job, KillPlan("self", event="committed", at=2))
        finished = run_child(job)
    assert run.status == "killed" and run.kill_point.startswith("self at committed#2: ")
    assert [name for name, _, _ in run.events] == ["ready", "committed", "committed"]
    assert finished.status == "done" and "resumed=True" in finished.summary, finished
