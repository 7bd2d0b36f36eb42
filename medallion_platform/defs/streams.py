"""Event streams in Dagster: a bronze asset per declared stream and the lag-driven sensor."""

import hashlib
import json
import time
from collections.abc import Mapping, Sequence

from dagster import (
    AssetKey,
    AssetsDefinition,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    sensor,
)
from pydantic import Field

from medallion_platform.connectors.bronze import BRONZE_SCHEMA
from medallion_platform.connectors.streams import BrokerUnavailable, ingest_stream
from medallion_platform.connectors.streams.base import StreamSource
from medallion_platform.connectors.streams.spec import StreamSpec
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


class StreamBrokerResource(EnvResource):
    """Where a stream's broker is (and its secret), read from the environment at run time."""

    address: str | None = Field(default=None, description="Kafka bootstrap servers or Redis URL.")
    password: str | None = Field(default=None, description="Broker secret, if any.")
    username: str | None = Field(default=None, description="Kafka SASL user, if any.")

    def source(self, spec: StreamSpec) -> StreamSource:
        values = self.values(f"stream {spec.name}")
        return spec.source(values["address"], values["password"], values["username"])


def stream_resource_key(spec: StreamSpec) -> str:
    return f"stream_{spec.name}"


def stream_env_fields(spec: StreamSpec) -> EnvFields:
    """The resource's fields and the variables that hold them, for runs and the sensor."""
    return {
        "address": spec.address_env,
        "password": spec.password_env,
        "username": spec.kafka_security.username_env if spec.kafka_security else None,
    }


def build_stream_resource(spec: StreamSpec) -> StreamBrokerResource:
    return StreamBrokerResource(env=env_names(stream_env_fields(spec)))


def stream_bronze_key(spec: StreamSpec) -> AssetKey:
    return AssetKey([BRONZE_SCHEMA, spec.bronze_table])


def build_stream_bronze_asset(spec: StreamSpec) -> AssetsDefinition:
    """``bronze/<stream>``: every message as received, with partition and offset."""
    resource_key = stream_resource_key(spec)

    @asset(
        key=stream_bronze_key(spec),
        group_name="bronze",
        description=(
            f"{spec.description.strip()}\n\nEvery message of `{spec.topic}` ({spec.broker}) as "
            "received: `payload` (text, or base64 flagged as binary; NULL with `_tombstone` "
            "for a null value), `_headers` (JSON `[key, value]` pairs), `_partition` and "
            "`_offset` (integers; a Redis entry ID is text), `_key`, broker timestamp, lineage. "
            "Offsets commit with the rows (exactly once); the broker is acknowledged after."
        ),
        owners=[spec.owner],
        kinds={"duckdb", spec.broker},
        tags={"layer": "bronze", "source": "stream"},
        metadata={"topic": spec.topic, "broker": spec.broker},
        required_resource_keys={"warehouse", resource_key},
    )
    def _bronze(context) -> MaterializeResult:
        broker: StreamBrokerResource = getattr(context.resources, resource_key)
        warehouse: WarehouseResource = context.resources.warehouse
        wh = warehouse.warehouse()
        source = broker.source(spec)
        try:
            report = ingest_stream(
                wh,
                spec.bronze_table,
                source,
                run_id=context.run_id,
                batch_size=spec.batch_size,
                max_message_bytes=spec.max_message_bytes,
                offset_reset=spec.offset_reset,
            )
        finally:
            source.close()
        with wh.connect() as conn:
            desc = describe_table(conn, BRONZE_SCHEMA, spec.bronze_table)
        return MaterializeResult(
            metadata={
                **table_metadata(desc),
                "rows_added": report.messages,
                "batches": report.batches,
                "flagged_messages": report.flagged,
                "tombstones": report.tombstones,
                "binary_header_items": report.binary_headers,
                "positions": MetadataValue.json(report.positions),
                "batch_ids": MetadataValue.json(report.batch_ids),
            }
        )

    return _bronze


def build_event_stream_sensor(
    streams: Sequence[StreamSpec],
    job_name: str,
    selections: Mapping[str, Sequence[AssetKey]],
    *,
    minimum_interval_seconds: int = 30,
):
    """Compares each broker's latest positions with the cursor: never reads a payload, never
    opens the warehouse. A run is requested when ``min_lag`` messages wait, or when a smaller
    backlog has waited ``max_delay_seconds`` (timed by the sensor from when it first saw it).
    The broker's variables are read at each tick (see ``defs/env.py``): while one is unset,
    the stream is skipped by name."""

    @sensor(
        name="event_stream_sensor",
        job_name=job_name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Watches each stream's lag and requests a run that ingests it.",
    )
    def event_stream_sensor(context: SensorEvaluationContext) -> SensorResult:
        cursor: dict = json.loads(context.cursor or "{}")
        now = time.time()
        requests, notes = [], []
        for spec in streams:
            values, unset = read_env_fields(stream_env_fields(spec))
            if unset:
                notes.append(unset_reason(spec.name, unset))
                continue
            state = cursor.get(spec.name, {"requested": {}, "pending_since": None})
            source = StreamBrokerResource(**values).source(spec)
            try:
                latest = source.latest()
                lag = sum(source.lag(state["requested"]).values())
            except BrokerUnavailable as exc:
                notes.append(f"{spec.name}: broker unavailable ({exc})")
                continue
            finally:
                source.close()
            if lag == 0:
                state["pending_since"] = None
            else:
                state["pending_since"] = state["pending_since"] or now
                waited = now - state["pending_since"]
                if lag >= spec.sensor.min_lag or waited >= spec.sensor.max_delay_seconds:
                    digest = hashlib.sha256(json.dumps(latest, sort_keys=True).encode())
                    requests.append(
                        RunRequest(
                            run_key=f"stream:{spec.name}:{digest.hexdigest()[:16]}",
                            asset_selection=list(selections[spec.name]),
                            tags={"medallion/trigger": "event_stream", "medallion/lag": str(lag)},
                        )
                    )
                    state = {"requested": latest, "pending_since": None}
                else:
                    notes.append(f"{spec.name}: {lag} waiting for {waited:.0f}s")
            cursor[spec.name] = state
        if requests:
            return SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
        return SensorResult(
            skip_reason=SkipReason("; ".join(notes) or "No stream has messages waiting."),
            cursor=json.dumps(cursor, sort_keys=True),
        )

    return event_stream_sensor
