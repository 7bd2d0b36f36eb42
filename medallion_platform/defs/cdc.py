"""Change data capture in Dagster: one bronze multi-asset per source database (its tables
share one replication slot, so they are captured together) and the slot-lag sensor."""

import json
from collections.abc import Mapping, Sequence

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    multi_asset,
    sensor,
)
from pydantic import Field

from medallion_platform.connectors.bronze import BRONZE_SCHEMA
from medallion_platform.connectors.cdc.ingest import ingest_cdc, position_source
from medallion_platform.connectors.cdc.pgoutput import int_to_lsn
from medallion_platform.connectors.cdc.postgres import PostgresChangeSource
from medallion_platform.connectors.cdc.spec import CdcSource
from medallion_platform.defs.env import (
    EnvFields,
    EnvResource,
    env_names,
    read_env_fields,
    unset_reason,
)
from medallion_platform.defs.metadata import table_metadata
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.warehouse.tables import describe_table


class CdcDatabaseResource(EnvResource):
    """Where a source database is, read from the environment at run time; the password
    travels to libpq apart from the connection string and is never logged."""

    dsn: str | None = Field(default=None, description="libpq connection string, no password.")
    password: str | None = Field(default=None, description="The database password.")

    def source(self, spec: CdcSource) -> PostgresChangeSource:
        values = self.values(f"CDC source {spec.name}")
        return PostgresChangeSource(spec, values["dsn"], values["password"])


def cdc_resource_key(spec: CdcSource) -> str:
    return f"cdc_{spec.name}"


def cdc_env_fields(spec: CdcSource) -> EnvFields:
    """The resource's fields and the variables that hold them, for runs and the sensor."""
    return {"dsn": spec.dsn_env, "password": spec.password_env}


def build_cdc_resource(spec: CdcSource) -> CdcDatabaseResource:
    return CdcDatabaseResource(env=env_names(cdc_env_fields(spec)))


def cdc_bronze_keys(spec: CdcSource) -> list[AssetKey]:
    return [AssetKey([BRONZE_SCHEMA, spec.bronze_table(t)]) for t in spec.tables]


def build_cdc_bronze_assets(spec: CdcSource) -> AssetsDefinition:
    """``bronze/<source>_<table>`` for every captured table, filled by one capture run."""
    resource_key = cdc_resource_key(spec)
    envelope = (
        "One row per change in Debezium's envelope: `op` (r snapshot, c insert, u update, "
        "d delete, t truncate), `key`, `before` (under REPLICA IDENTITY FULL), `after` (JSON "
        "of PostgreSQL's text values), `lsn`, `commit_lsn`, `seq`, `xid`, `commit_ts`, "
        "lineage. Positions commit with the rows (exactly once); the replication slot is "
        f"advanced after. Slot `{spec.slot_name}`, publication `{spec.publication_name}`."
    )

    @multi_asset(
        name=f"cdc_{spec.name}",
        specs=[
            AssetSpec(
                key,
                group_name="bronze",
                description=f"{table.description or table.qualified}\n\n{envelope}",
                owners=[spec.owner],
                kinds={"duckdb", "postgres"},
                tags={"layer": "bronze", "source": "cdc"},
                metadata={"source_table": table.qualified, "source": spec.name},
            )
            for table, key in zip(spec.tables, cdc_bronze_keys(spec), strict=True)
        ],
        required_resource_keys={"warehouse", resource_key},
        description=f"Capture {spec.description}",
    )
    def _cdc(context):
        database: CdcDatabaseResource = getattr(context.resources, resource_key)
        warehouse: WarehouseResource = context.resources.warehouse
        wh = warehouse.warehouse()
        report = ingest_cdc(wh, database.source(spec), run_id=context.run_id)
        for warning in report.warnings:
            context.log.warning(warning)
        for change in report.schema_changes:
            context.log.warning(f"{spec.name}: schema change: {change.detail}")
        context.log.info(
            f"{spec.name}: {report.snapshot_rows} snapshot rows, {report.changes} changes in "
            f"{report.transactions} transactions; slot at {report.confirmed_lsn}"
        )
        with wh.connect() as conn:
            for table, key in zip(spec.tables, cdc_bronze_keys(spec), strict=True):
                bronze = spec.bronze_table(table)
                desc = describe_table(conn, BRONZE_SCHEMA, bronze)
                changes = [
                    c.model_dump() for c in report.schema_changes if c.table == table.qualified
                ]
                yield MaterializeResult(
                    asset_key=key,
                    metadata={
                        **table_metadata(desc),
                        "rows_added": report.rows_by_table.get(bronze, 0),
                        "snapshot_taken": report.snapshot_rows > 0,
                        "transactions": report.transactions,
                        "position": report.position or "",
                        "slot_confirmed_lsn": report.confirmed_lsn or "",
                        "schema_changes": MetadataValue.json(changes),
                    },
                )

    return _cdc


def build_cdc_sensor(
    sources: Sequence[CdcSource],
    job_name: str,
    selections: Mapping[str, Sequence[AssetKey]],
):
    """Reads each slot's lag (two LSNs from ``pg_replication_slots``), never a change, never
    the warehouse. One run is requested per new WAL position while bytes are pending; the
    cursor keeps the last position requested per source. The connection variables are read
    at each tick (see ``defs/env.py``): while one is unset, the source is skipped by name."""

    @sensor(
        name="cdc_sensor",
        job_name=job_name,
        minimum_interval_seconds=min(s.sensor.minimum_interval_seconds for s in sources),
        default_status=DefaultSensorStatus.RUNNING,
        description="Watches each replication slot's lag and requests a run that captures it.",
    )
    def cdc_sensor(context: SensorEvaluationContext) -> SensorResult:
        cursor: dict[str, str] = json.loads(context.cursor or "{}")
        requests, notes = [], []
        for spec in sources:
            values, unset = read_env_fields(cdc_env_fields(spec))
            if unset:
                notes.append(unset_reason(spec.name, unset))
                continue
            try:
                state = CdcDatabaseResource(**values).source(spec).slot_state()
            except Exception as exc:  # unreachable database: say so, try again next tick
                notes.append(f"{spec.name}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                continue
            if state is not None and state.wal_status == "lost":
                notes.append(  # a run could only fail: say what to do instead
                    f"{spec.name}: slot {spec.slot_name} was invalidated by the server (it held "
                    "more WAL than max_slot_wal_keep_size). Forget the source's positions "
                    f"(DELETE FROM _meta.positions WHERE source = '{position_source(spec)}') "
                    "and materialize its bronze assets by hand: that run takes a fresh snapshot"
                )
                continue
            if state is None:  # first run: the capture creates the slot and snapshots
                position = "no-slot"
                pending = True
            else:
                position = int_to_lsn(state.current_lsn)
                pending = state.lag_bytes >= spec.sensor.min_lag_bytes
            if not pending:
                notes.append(f"{spec.name}: nothing pending")
            elif cursor.get(spec.name) == position:
                notes.append(f"{spec.name}: a run was already requested for {position}")
            else:
                requests.append(
                    RunRequest(
                        run_key=f"cdc:{spec.name}:{position}",
                        asset_selection=list(selections[spec.name]),
                        tags={
                            "medallion/trigger": "cdc",
                            "medallion/lag_bytes": str(state.lag_bytes if state else 0),
                        },
                    )
                )
                cursor[spec.name] = position
        if requests:
            return SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
        return SensorResult(
            skip_reason=SkipReason("; ".join(notes) or "No CDC source configured."),
            cursor=json.dumps(cursor, sort_keys=True),
        )

    return cdc_sensor
