"""The Dagster instance of a platform home: ``$MEDALLION_HOME/dagster/dagster.yaml``.

It turns telemetry off and launches runs with :class:`LocalRunLauncher`, Dagster's default
launcher taught to tell when a run's process is gone, so the daemon's run monitoring marks a
killed run failed instead of leaving it ``STARTED`` forever. Warehouse writers are serialized
by the writer lock (:mod:`medallion_platform.defs.runs`), not by a concurrency pool: a pool
keeps a dead run's slot, and every later warehouse step would wait for it forever.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

from medallion_platform.settings import PlatformSettings

INSTANCE_YAML = """\
# Written by medallion_platform (medallion_platform/instance.py); edit freely, it is only
# created when missing. For production, add run/event/schedule storage on PostgreSQL here.
telemetry:
  enabled: false
# Runs write the warehouse one at a time through a lock the OS releases when a run's process
# dies (see the README, "When something fails"); no concurrency pool is needed.
run_launcher:
  module: medallion_platform.instance
  class: LocalRunLauncher
# The daemon marks runs whose process is gone as failed (LocalRunLauncher knows their pid).
run_monitoring:
  enabled: true
  poll_interval_seconds: 15
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
"""

# What earlier versions wrote: replaced on upgrade (their 'warehouse' pool limit of 1 let a
# killed run hold the only slot forever). A file edited by hand is left alone.
PREVIOUS_INSTANCE_YAMLS = (
    """\
# Written by medallion_platform (medallion_platform/instance.py); edit freely, it is only
# created when missing. For production, add run/event/schedule storage on PostgreSQL here.
telemetry:
  enabled: false
concurrency:
  pools:
    # Every warehouse step is in the 'warehouse' pool: DuckDB allows a single writer.
    default_limit: 1
""",
)


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (runs in a subprocess of the code server), plus a health
    check: a run tagged with a pid on this host (every run that writes the warehouse is)
    whose process no longer exists has failed."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        from medallion_platform.defs.runs import dead_run_reason

        reason = dead_run_reason(run)
        if reason is not None:
            return CheckRunHealthResult(WorkerStatus.FAILED, reason)
        return CheckRunHealthResult(WorkerStatus.RUNNING)


def ensure_instance(settings: PlatformSettings) -> Path:
    """Create the home and its ``dagster.yaml`` if missing; return the Dagster home."""
    settings.ensure_dirs()
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists() or config.read_text() in PREVIOUS_INSTANCE_YAMLS:
        config.write_text(INSTANCE_YAML)
    if not (settings.dagster_home / "storage").exists():
        # Create the SQLite storages now, once: two runs starting together on a fresh home
        # would otherwise race to create (and stamp) the same schema.
        from dagster import DagsterInstance

        with DagsterInstance.from_config(str(settings.dagster_home)):
            pass
    return settings.dagster_home


def use_instance(settings: PlatformSettings) -> Path:
    """Point ``DAGSTER_HOME`` at the platform's instance (for this process and its children)."""
    home = ensure_instance(settings)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
