"""``medallion demo``: seed the landing zone and run the platform's jobs through Dagster."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult

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
    return execute_job(
        settings, job_name, asset_selection=asset_selection, defs=defs, log_level=log_level
    ).success


def execute_job(
    settings: PlatformSettings,
    job_name: str,
    *,
    asset_selection: Sequence[AssetKey] | None = None,
    defs: Definitions | None = None,
    log_level: str = "WARNING",
    ops: Mapping[str, Any] | None = None,
) -> ExecuteInProcessResult:
    """:func:`run_job`, returning Dagster's result (``ops``: run config per op)."""
    defs = defs or demo_definitions(settings)
    job = defs.resolve_job_def(job_name)
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if ops:
        run_config["ops"] = dict(ops)
    with DagsterInstance.get() as instance:
        return job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            asset_selection=list(asset_selection) if asset_selection is not None else None,
            run_config=run_config,
        )


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


REVERSE_ETL_JOB = "reverse_etl_job"


def run_syncs(settings: PlatformSettings, defs: Definitions | None = None) -> list[str]:
    """Run ``reverse_etl_job`` through Dagster, every sync in full (``full: true``): the demo's
    emulators start empty each time, while the warehouse remembers what it sent to the
    previous ones. Returns one line per sync, from its materialization's metadata."""
    from medallion_platform.config import platform_config
    from medallion_platform.defs.reverse_etl import sync_key

    defs = defs or demo_definitions(settings)
    syncs = platform_config().syncs
    if not syncs:
        return []
    ops = {"__".join(sync_key(spec).path): {"config": {"full": True}} for spec in syncs}
    result = execute_job(settings, REVERSE_ETL_JOB, defs=defs, ops=ops)
    lines = []
    for spec in syncs:
        node = "__".join(sync_key(spec).path)
        materialized = result.asset_materializations_for_node(node) if result.success else []
        if not materialized:
            lines.append(f"{spec.name}: FAILED (see the run of {REVERSE_ETL_JOB} in the UI)")
            continue
        meta = {k: v.value for k, v in materialized[-1].metadata.items()}
        lines.append(
            f"{spec.name} ({meta['destination_object']}): added {meta['rows_added']}, "
            f"changed {meta['rows_changed']}, removed {meta['rows_removed']}, failed "
            f"{meta['rows_failed']}; {meta['api_calls']} API calls, {meta['duration_s']:.1f}s"
        )
    return lines


def evaluate_freshness(settings: PlatformSettings) -> dict[str, int]:
    """Evaluate every asset's freshness policy once, as the daemon's freshness loop does every
    30 s under ``medallion dev``, and record the states on the instance, so the UI shows pass,
    warn or fail right after a demo instead of "Not evaluated". Returns assets per state."""
    # Dagster's own evaluation (the daemon's iteration), on an in-process code location.
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.freshness import FreshnessDaemon

    use_instance(settings)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="medallion_platform.definitions", attribute="defs"),
        location_name="medallion_platform",
    )
    with (
        DagsterInstance.get() as instance,
        WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget([origin])) as workspace,
    ):
        asyncio.run(FreshnessDaemon()._evaluate_assets(workspace))
        keys = [
            node.key
            for node in workspace.create_request_context().asset_graph.asset_nodes
            if node.freshness_policy_or_from_metadata is not None
        ]
        records = instance.get_freshness_state_records(keys)
    return dict(Counter(record.freshness_state.value.lower() for record in records.values()))
