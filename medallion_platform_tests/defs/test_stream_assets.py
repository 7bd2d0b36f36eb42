"""Stream assets and the event-stream sensor through Dagster, against a real redis-server
(and the real Tansu broker, fed by kafka-python, for tombstones and headers).

The packaged configuration declares no stream yet (the demo does not publish events yet);
these tests declare one, as a user would in config/streams.yaml.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.streams.kafka import create_topic
from medallion_platform.connectors.streams.redis_streams import produce
from medallion_platform.connectors.streams.spec import StreamSpec
from medallion_platform.definitions import MAIN_JOB, build_definitions
from medallion_platform.devkit.brokers.redis_server import RedisServer
from medallion_platform_tests.connectors.streams.foreign_producer import click_event, send

SPEC = StreamSpec(
    name="events",
    description="Clickstream events from the storefront.",
    broker="redis",
    topic="clicks",
    address_env="EVENTS_REDIS_URL",
    sensor={"min_lag": 100, "max_delay_seconds": 60},
)


@pytest.fixture
def redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        monkeypatch.setenv("EVENTS_REDIS_URL", server.url)
        yield server


@pytest.fixture
def defs(settings, config: PlatformConfig):
    return build_definitions(settings, config.model_copy(update={"streams": [SPEC]}))


def _tick(defs, redis: RedisServer | None, cursor: str | None):
    """One tick as the daemon runs it: the resources the sensor requires, built from the code
    location's own (``EnvVar`` fields; the ``redis`` fixture sets EVENTS_REDIS_URL)."""
    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def("event_stream_sensor")
    context = build_sensor_context(
        cursor=cursor,
        instance=DagsterInstance.ephemeral(),
        definitions=defs,
        resources={
            k: v
            for k, v in repository.get_top_level_resources().items()
            if k in sensor.required_resource_keys
        },
    )
    return sensor(context)


def _events(n: int) -> list[tuple[bytes | None, bytes]]:
    return [(None, json.dumps({"event_id": f"ev_{i}"}).encode()) for i in range(n)]


def test_the_sensor_waits_for_enough_lag_or_enough_time(defs, redis, settings) -> None:
    first = _tick(defs, redis, None)
    assert not first.run_requests and "No stream" in first.skip_reason.skip_message

    produce(redis.url, "clicks", _events(50))
    small = _tick(defs, redis, first.cursor)
    assert not small.run_requests and "50 waiting" in small.skip_reason.skip_message

    aged = json.loads(small.cursor)
    aged["events"]["pending_since"] = time.time() - 120  # the backlog has waited 2 minutes
    by_age = _tick(defs, redis, json.dumps(aged))
    assert len(by_age.run_requests) == 1
    assert AssetKey(["bronze", "events"]) in by_age.run_requests[0].asset_selection

    produce(redis.url, "clicks", _events(150))
    by_lag = _tick(defs, redis, by_age.cursor)
    assert len(by_lag.run_requests) == 1 and by_lag.run_requests[0].tags["medallion/lag"] == "150"
    assert not settings.warehouse_path.exists()  # the sensor never opened the warehouse


def test_a_broker_that_is_down_is_reported_not_raised(defs, redis) -> None:
    redis.stop()
    result = _tick(defs, redis, None)
    assert not result.run_requests and "broker unavailable" in result.skip_reason.skip_message


def test_an_unset_address_variable_is_one_clear_skip_not_an_error(
    defs, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``dagster dev`` started before the broker's variable is exported: each tick is a skip
    that names it and how to set it, not an error with a traceback."""
    monkeypatch.delenv("EVENTS_REDIS_URL", raising=False)
    caplog.set_level(logging.WARNING)
    result = _tick(defs, None, None)
    assert not result.run_requests
    message = result.skip_reason.skip_message
    assert message.startswith("events: EVENTS_REDIS_URL is not set."), message
    assert 'eval "$(medallion services up)"' in message
    assert not [r for r in caplog.records if r.exc_info]


def test_the_bronze_asset_ingests_exactly_once(defs, redis, settings) -> None:
    produce(redis.url, "clicks", _events(1_234))
    job = defs.resolve_job_def(MAIN_JOB)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    for expected in (1_234, 0):
        with DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(
                instance=instance,
                asset_selection=[AssetKey(["bronze", "events"])],
                run_config=quiet,
            )
        (event,) = result.get_asset_materialization_events()
        meta = event.event_specific_data.materialization.metadata
        assert meta["rows_added"].value == expected
        assert meta["dagster/row_count"].value == 1_234


def test_a_run_while_the_broker_is_down_fails_clearly_and_the_next_one_resumes(
    defs, settings, tmp_path, monkeypatch
) -> None:
    redis = RedisServer(tmp_path / "redis-aof", persist_dir=tmp_path / "redis-data").start()
    monkeypatch.setenv("EVENTS_REDIS_URL", redis.url)
    try:
        _down_then_back(defs, redis)
    finally:
        redis.stop()


def _down_then_back(defs, redis: RedisServer) -> None:
    produce(redis.url, "clicks", _events(300))
    job = defs.resolve_job_def(MAIN_JOB)
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

    def run():
        with DagsterInstance.ephemeral() as instance:
            return job.execute_in_process(
                instance=instance,
                asset_selection=[AssetKey(["bronze", "events"])],
                run_config=quiet,
                raise_on_error=False,
            )

    assert run().success
    produce(redis.url, "clicks", _events(200))
    redis.stop()
    down = run()
    assert not down.success
    (failure,) = [e for e in down.all_events if e.event_type_value == "STEP_FAILURE"]
    cause = failure.event_specific_data.error.cause  # Dagster wraps the step's exception
    assert cause.cls_name == "BrokerUnavailable", cause
    assert f"127.0.0.1:{redis.port}" in cause.message and "unavailable" in cause.message
    redis.start()  # same port; nothing of the failed run was committed
    (event,) = run().get_asset_materialization_events()
    meta = event.event_specific_data.materialization.metadata
    assert meta["rows_added"].value == 200 and meta["dagster/row_count"].value == 500


KAFKA_SPEC = SPEC.model_copy(
    update={
        "broker": "kafka",
        "topic": "assets-foreign",
        "address_env": "EVENTS_KAFKA_BOOTSTRAP",
        "contract": "events",
    }
)


def test_bronze_and_silver_report_tombstones_and_binary_headers(
    settings, config: PlatformConfig, kafka_broker, monkeypatch
) -> None:
    """The packaged ``events`` contract over a Kafka stream that kafka-python fed: the bronze
    run's metadata counts tombstones and base64 header items, silver's counts the tombstones
    it skipped, and none of them is in quarantine."""
    servers = kafka_broker.bootstrap_servers
    monkeypatch.setenv("EVENTS_KAFKA_BOOTSTRAP", servers)
    create_topic(servers, "assets-foreign", 1)
    records = [(b"anon_1", click_event(i), [("trace", b"\xfe%d" % i)], 0) for i in range(20)]
    records += [(b"anon_1", None, [], 0), (b"anon_2", None, [], 0)]
    send(servers, "assets-foreign", records)
    defs = build_definitions(settings, config.model_copy(update={"streams": [KAFKA_SPEC]}))
    selection = [AssetKey([layer, "events"]) for layer in ("bronze", "silver", "quarantine")]
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(MAIN_JOB).execute_in_process(
            instance=instance,
            asset_selection=selection,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
    meta = {
        tuple(e.asset_key.path): e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    bronze, silver = meta[("bronze", "events")], meta[("silver", "events")]
    assert bronze["rows_added"].value == 22 and bronze["tombstones"].value == 2
    assert bronze["binary_header_items"].value == 20
    assert silver["tombstones"].value == 2 and silver["rows_added"].value == 20
    assert meta[("quarantine", "events")]["rows_added"].value == 0
