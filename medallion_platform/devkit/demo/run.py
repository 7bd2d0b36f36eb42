"""``medallion demo``: seed the landing zone and run the platform's jobs through Dagster."""

from __future__ import annotations

import os
from collections.abc import Sequence

from dagster import AssetKey, DagsterInstance, Definitions

from medallion_platform.devkit.demo.calendar import AD_SPEND_DAYS, days_before
from medallion_platform.devkit.demo.generator import DemoManifest, generate_landing_files
from medallion_platform.instance import use_instance
from medallion_platform.settings import PlatformSettings


def seed(settings: PlatformSettings, *, scale: float, seed: int) -> DemoManifest:
    use_instance(settings)
    return generate_landing_files(
        settings.landing_dir,
        scale=scale,
        seed=seed,
        start_date=days_before(AD_SPEND_DAYS),
        days=AD_SPEND_DAYS,
    )


def demo_definitions(settings: PlatformSettings) -> Definitions:
    from medallion_platform.definitions import build_definitions

    use_instance(settings)
    return build_definitions(settings)


def run_job(
    settings: PlatformSettings,
    job_name: str,
    *,
    asset_selection: Sequence[AssetKey] | None = None,
    defs: Definitions | None = None,
    log_level: str = "WARNING",
) -> bool:
    """Run a job (or the ``asset_selection`` of it) in this process on the platform's instance,
    so the UI shows the run and every materialization with its metadata."""
    defs = defs or demo_definitions(settings)
    job = defs.resolve_job_def(job_name)
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            asset_selection=list(asset_selection) if asset_selection is not None else None,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
    return result.success


def run_main_job(settings: PlatformSettings, log_level: str = "WARNING") -> bool:
    """Run ``medallion_job`` in this process on the platform's instance (visible in the UI)."""
    from medallion_platform.definitions import MAIN_JOB

    return run_job(settings, MAIN_JOB, log_level=log_level)


def cdc_bronze_keys() -> list[AssetKey]:
    """The bronze change logs of every declared CDC source."""
    from medallion_platform.config import platform_config
    from medallion_platform.defs.cdc import cdc_bronze_keys as keys_of

    return [key for source in platform_config().cdc_sources for key in keys_of(source)]


def apply_app_changes(*, transactions: int, renumbered: int, seed: int) -> str:
    """A burst of storefront activity on the app database the demo's services run (reached by
    the ``APP_DB_*`` variables they export): inserts, updates and deletes on every table, and
    order lines renumbered (primary-key updates). Returns a one-line summary."""
    import psycopg

    from medallion_platform.devkit.demo.app_db import apply_workload, renumber_lines

    with psycopg.connect(
        os.environ["APP_DB_DSN"], password=os.environ.get("APP_DB_PASSWORD"), autocommit=True
    ) as conn:
        work = apply_workload(conn, transactions=transactions, seed=seed)
        moved = renumber_lines(conn, lines=renumbered, seed=seed)
    counts = ", ".join(
        f"{name} +{c.inserts} ~{c.updates} -{c.deletes}"
        for name, c in (
            ("customers", work.customers),
            ("orders", work.orders),
            ("order_items", work.order_items),
        )
    )
    return (
        f"{work.transactions:,} storefront transactions ({counts}) and {moved} order lines "
        "renumbered (primary-key updates)"
    )
