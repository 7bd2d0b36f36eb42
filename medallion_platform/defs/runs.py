"""Runs and the warehouse writer: one run writes at a time, and a dead run never blocks.

A run takes the warehouse writer lock when its warehouse resources start and keeps it until
they are torn down (:mod:`medallion_platform.warehouse.writer_lock`: the OS releases it if
the run's process dies). The run is tagged with its process id and host, so a run whose
process is gone is found and marked failed — by the next run that takes the lock (no daemon
needed: ``dagster job execute``) and by the daemon's run monitoring (:mod:`..instance`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import DagsterInstance, DagsterRunStatus, InitResourceContext, RunsFilter
from dagster._core.storage.dagster_run import DagsterRun
from dagster._utils.interrupts import check_captured_interrupt

from medallion_platform.warehouse.writer_lock import Holder, pid_alive, writer_lock

PID_TAG = "medallion/pid"
HOST_TAG = "medallion/host"
UNFINISHED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def dead_run_reason(run: DagsterRun) -> str | None:
    """Why ``run`` cannot be running any more (its process on this host is gone), or None."""
    pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
    if not pid or host != socket.gethostname() or pid_alive(int(pid)):
        return None
    return (
        f"The run's process (pid {pid} on {host}) is gone: it was killed or crashed without "
        "ending the run. Whatever it had not committed was rolled back by the warehouse."
    )


def reap_dead_runs(instance: DagsterInstance, *, except_run: str | None = None) -> list[str]:
    """Mark failed every unfinished run of this host whose process is gone; their ids."""
    reaped = []
    runs = instance.get_runs(
        filters=RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: socket.gethostname()})
    )
    for run in runs:
        reason = dead_run_reason(run) if run.run_id != except_run else None
        if reason is None:
            continue
        instance.report_run_failed(run, reason)
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


@contextmanager
def run_writer_session(context: InitResourceContext, warehouse_path: str) -> Iterator[None]:
    """Hold the writer lock for the rest of the run (a no-op outside a run, e.g. in a
    ``build_resources`` call; and re-entrant, so two warehouse resources share one lock)."""
    run, instance = context.dagster_run, context.instance
    if run is None or instance is None:
        yield
        return
    holder = Holder.this_process(what=f"job {run.job_name}", run_id=run.run_id)
    instance.add_run_tags(run.run_id, {PID_TAG: str(holder.pid), HOST_TAG: holder.host})

    def waiting(current: Holder | None, waited: float) -> None:
        who = current.describe() if current else "another process"
        context.log.info(
            f"Waiting for the warehouse writer ({waited:.0f}s so far): it is held by {who}. "
            "DuckDB allows one writer; this run starts when it is free. Ctrl-C stops waiting."
        )

    with writer_lock(
        warehouse_path, holder, on_wait=waiting, interrupted=check_captured_interrupt
    ) as died:
        if died is not None:
            context.log.warning(
                f"The previous writer, {died.describe()}, stopped without releasing the "
                "warehouse (killed or crashed); its open transaction was rolled back."
            )
        for run_id in reap_dead_runs(instance, except_run=run.run_id):
            context.log.warning(f"Marked run {run_id} failed: its process is gone.")
        yield
