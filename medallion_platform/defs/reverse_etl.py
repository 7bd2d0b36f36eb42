"""Reverse ETL in Dagster: one asset per declared sync, its check, the destinations' resources.

The work is done by :mod:`medallion_platform.reverse_etl` (no Dagster there); these assets
open the warehouse and a destination client, call the engine and describe the result:

- ``reverse_etl/<sync>``: downstream of the gold/ml tables its query reads, kinds
  ``{<destination>, duckdb}``, a freshness policy (synced within ``freshness_minutes``) and
  ``AutomationCondition.eager()``: it runs when an upstream table is updated, once the
  automation sensor (:func:`build_reverse_etl_automation_sensor`) is running. Each
  materialization carries the run's counts (added/changed/removed/failed/skipped), API calls,
  retries, rate-limited answers and duration. Run config ``full: true`` resends every row
  (``medallion sync --full``). Run config ``dry_run: true`` plans and records
  the diff, sends nothing and changes no state; it is reported as an observation, not a
  materialization, so a dry run never makes a sync look fresh.
- check ``failure_rate_below_threshold`` (ERROR): the latest real run's failed / attempted
  records is at most the sync's ``failure_rate_threshold``.
- ``<destination>_destination`` resources: the names of the variables the client's settings
  come from (URL, token, Zendesk's agent email, as each client's ``info.env`` declares them),
  read when a sync opens its client (a variable not set fails that sync with one line naming
  it, ``defs/env.py``); their values never reach logs, metadata or errors (the
  clients mask them).
"""

import os
from datetime import timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    Config,
    DefaultSensorStatus,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from medallion_platform.defs.env import EnvResource, require_env
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.reverse_etl import state
from medallion_platform.reverse_etl.destinations import destination_class, destination_info
from medallion_platform.reverse_etl.destinations.base import Destination
from medallion_platform.reverse_etl.engine import SyncResult, execute
from medallion_platform.reverse_etl.spec import SyncSpec, client_options
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse.warehouse import table_exists, transaction

REVERSE_ETL_GROUP = "reverse_etl"
CHECK_NAME = "failure_rate_below_threshold"


def sync_key(spec: SyncSpec) -> AssetKey:
    return AssetKey([REVERSE_ETL_GROUP, spec.name])


def destination_resource_key(destination: str) -> str:
    return f"{destination}_destination"


class DestinationResource(EnvResource):
    """A destination's address and credentials: its client's arguments, each read from the
    environment variable its ``info.env`` names when a sync opens the client (``defs/env.py``).
    ``client(spec)`` opens the destination client a sync writes through."""

    destination: str = Field(description="A destination of reverse_etl/destinations.")

    def client(self, spec: SyncSpec, **options: Any) -> Destination:
        client = destination_class(self.destination)
        settings = require_env(f"destination {self.destination}", self.env)
        # Optional settings (Salesforce's token or connected app): read when set.
        optional = {
            s.option: os.environ[s.name]
            for s in client.info.env
            if not s.required and os.environ.get(s.name)
        }
        return client(**optional, **settings, **client_options(spec), **options)


def build_destination_resource(destination: str) -> DestinationResource:
    """The names of the variables of the destination's required settings: nothing secret is
    in the definitions."""
    info = destination_info(destination)
    env = {s.option: s.name for s in info.env if s.required}
    return DestinationResource(destination=destination, env=env)


class SyncRunConfig(Config):
    """Run config of a sync asset: ``{"dry_run": true}`` plans without sending."""

    dry_run: bool = Field(
        default=False,
        description="Plan and record the diff (counts and a sample), send nothing and change "
        "no state. The sync's own dry_run setting also makes every run a dry run.",
    )
    full: bool = Field(
        default=False,
        description="Forget what was synced and send every row again (after the destination "
        "was emptied or restored, as the demo's emulators are at every start; upserts by "
        "identity make it safe). Not with dry_run.",
    )


def _description(spec: SyncSpec) -> str:
    return (
        f"{spec.description.strip()}\n\nReverse ETL ({spec.mode}): rows of "
        f"{', '.join(spec.tables)} to {spec.destination} {spec.object}, matched by "
        f"{spec.identity.field} = {spec.identity.column}. Only rows whose mapped fields changed "
        "since the last confirmed sync are sent."
    )


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")[:300]

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _static_metadata(spec: SyncSpec) -> dict[str, Any]:
    mapping = _markdown(
        ["destination field", "from"],
        [[spec.identity.field, f"{spec.identity.column} (identity)"]]
        + [[name, field.describe()] for name, field in spec.mapping.items()],
    )
    return {
        "destination": spec.destination,
        "destination_object": spec.object,
        "mode": spec.mode,
        "identity": f"{spec.identity.column} -> {spec.identity.field}",
        "batch_size": spec.effective_batch_size,
        "failure_rate_threshold": spec.failure_rate_threshold,
        "mapping": MetadataValue.md(mapping),
        "source": MetadataValue.md(f"```sql\n{spec.source}\n```"),
    }


def result_metadata(result: SyncResult) -> dict[str, Any]:
    """A run's figures as metadata (the same keys for every sync, so the UI can chart them)."""
    metadata: dict[str, Any] = {
        "rows_added": result.added,
        "rows_changed": result.changed,
        "rows_removed": result.removed,
        "rows_failed": result.failed,
        "rows_skipped": result.skipped,
        "rows_unchanged": result.unchanged,
        "source_rows": result.source_rows,
        "api_calls": result.api_calls,
        "retries": result.retries,
        "rate_limited": result.rate_limited,
        "duration_s": MetadataValue.float(result.duration_s),
        "failure_rate": MetadataValue.float(round(result.failure_rate, 6)),
        "dry_run": result.dry_run,
        "destination_object": f"{result.destination} {result.object}",
        "sync_run_id": result.run_id,
    }
    if result.failures:
        rows = [[f.identity or "", f.action, f.error] for f in result.failures]
        metadata["failures_sample"] = MetadataValue.md(
            _markdown(["identity", "action", "destination's error"], rows)
        )
    if result.planned:
        metadata["planned_sample"] = MetadataValue.json(
            [row.model_dump(exclude_none=True) for row in result.planned]
        )
    return metadata


def build_sync_asset(spec: SyncSpec) -> AssetsDefinition:
    """``reverse_etl/<name>``: one run of the sync engine (see the module docstring)."""
    resource_key = destination_resource_key(spec.destination)
    key = sync_key(spec)

    @asset(
        key=key,
        deps=[AssetKey(table.split(".")) for table in spec.tables],
        group_name=REVERSE_ETL_GROUP,
        description=_description(spec),
        owners=[spec.owner],
        kinds={spec.destination, "duckdb"},
        tags={"layer": REVERSE_ETL_GROUP},
        metadata=_static_metadata(spec),
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=timedelta(minutes=spec.freshness_minutes)
        ),
        automation_condition=AutomationCondition.eager(),
        required_resource_keys={"warehouse", resource_key},
        output_required=False,
    )
    def _sync(context: AssetExecutionContext, config: SyncRunConfig):
        warehouse: WarehouseResource = context.resources.warehouse
        dry_run = config.dry_run or spec.dry_run
        # The client first: a destination that is not configured fails before the warehouse
        # is locked. A dry run needs no credentials at all.
        client = None if dry_run else getattr(context.resources, resource_key).client(spec)
        if config.full and dry_run:
            raise ValueError(f"{spec.name}: a full resync cannot be a dry run")
        try:
            with warehouse.warehouse().connect() as conn:
                if config.full:
                    with transaction(conn):
                        state.ensure_sync_tables(conn)
                        state.reset(conn, spec.name)
                result = execute(
                    conn, spec, client, dry_run=dry_run, run_id=context.run_id, log=context.log.info
                )
        finally:
            if client is not None:
                client.close()
        if result.dry_run:
            yield AssetObservation(asset_key=key, metadata=result_metadata(result))
            return
        if result.failed:
            context.log.warning(
                f"{spec.name}: {result.failed} of {result.attempted} records were rejected by "
                f"{spec.destination} (see {CHECK_NAME} and _meta.sync_row_outcomes); they are "
                "retried at the next run"
            )
        yield MaterializeResult(metadata=result_metadata(result))

    return _sync


def build_failure_rate_check(spec: SyncSpec) -> AssetChecksDefinition:
    """The latest real run's failed / attempted records is within the sync's threshold."""

    @asset_check(
        asset=sync_key(spec),
        name=CHECK_NAME,
        description=(
            f"In the latest run, at most {spec.failure_rate_threshold:.1%} of the records sent "
            f"to {spec.destination} were rejected (failed / attempted). Rejected records are "
            "retried at the next run; their errors are in _meta.sync_row_outcomes."
        ),
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            run = (
                state.latest_run(conn, spec.name)
                if table_exists(conn, "_meta", "sync_runs")
                else None
            )
        if run is None:
            return AssetCheckResult(
                passed=True,
                severity=AssetCheckSeverity.ERROR,
                metadata={"note": "no run of this sync is recorded yet: nothing was attempted"},
            )
        attempted = run["added"] + run["changed"] + run["removed"] + run["failed"]
        rate = run["failed"] / attempted if attempted else 0.0
        return AssetCheckResult(
            passed=rate <= spec.failure_rate_threshold,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "failure_rate": MetadataValue.float(round(rate, 6)),
                "threshold": MetadataValue.float(spec.failure_rate_threshold),
                "failed": run["failed"],
                "attempted": attempted,
                "sync_run_id": run["run_id"],
                "run_error": run["error"] or "",
            },
        )

    return _check


def build_reverse_etl_defs(
    syncs: list[SyncSpec], settings: PlatformSettings | None = None
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition], dict[str, DestinationResource]]:
    """Assets, checks and the destination resources of the declared syncs.

    ``settings`` is not needed (the state lives in the warehouse the shared ``warehouse``
    resource opens); it is accepted so the call reads like the other builders'."""
    del settings
    assets = [build_sync_asset(spec) for spec in syncs]
    checks = [build_failure_rate_check(spec) for spec in syncs]
    resources = {
        destination_resource_key(name): build_destination_resource(name)
        for name in dict.fromkeys(spec.destination for spec in syncs)
    }
    return assets, checks, resources


def build_reverse_etl_automation_sensor(
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> AutomationConditionSensorDefinition:
    """Evaluates the syncs' ``AutomationCondition.eager()``: a sync runs after its upstream
    gold/ml tables are updated. Running by default, since freshness relies on it."""
    return AutomationConditionSensorDefinition(
        "reverse_etl_automation",
        target=AssetSelection.groups(REVERSE_ETL_GROUP),
        default_status=default_status,
        description="Runs each reverse-ETL sync once its upstream gold/ml tables have changed.",
    )
