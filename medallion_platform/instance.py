"""The Dagster instance of a platform home: ``$MEDALLION_HOME/dagster/dagster.yaml``.

It turns telemetry off and limits the ``warehouse`` concurrency pool to one step at a time
across all runs, so the sensor's runs and a hand-launched materialization never contend for
DuckDB's single write lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from medallion_platform.settings import PlatformSettings

INSTANCE_YAML = """\
# Written by medallion_platform (medallion_platform/instance.py); edit freely, it is only
# created when missing. For production, add run/event/schedule storage on PostgreSQL here.
telemetry:
  enabled: false
concurrency:
  pools:
    # Every warehouse step is in the 'warehouse' pool: DuckDB allows a single writer.
    default_limit: 1
"""


def ensure_instance(settings: PlatformSettings) -> Path:
    """Create the home and its ``dagster.yaml`` if missing; return the Dagster home."""
    settings.ensure_dirs()
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
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
