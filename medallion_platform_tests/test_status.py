"""``medallion status`` for streams (committed offsets beside the broker's latest, and the
lag, against a real Kafka-compatible broker) and for CDC slots (against a real PostgreSQL)."""

from __future__ import annotations

import pytest

from medallion_platform.connectors.cdc.ingest import ingest_cdc
from medallion_platform.connectors.streams import ingest_stream
from medallion_platform.connectors.streams.kafka import create_topic, produce
from medallion_platform.connectors.streams.spec import StreamSpec
from medallion_platform.devkit.brokers.tansu import TansuBroker
from medallion_platform.devkit.databases.postgres import PostgresServer
from medallion_platform.status import format_status, read_status
from medallion_platform_tests.cdc_db import cdc_database, insert_customers
from medallion_platform_tests.conftest import PG_TEST_PASSWORD

SPEC = StreamSpec(
    name="status_clicks",
    description="Clicks for the status test.",
    broker="kafka",
    topic="status_clicks",
    address_env="STATUS_TEST_BOOTSTRAP",
)


def test_status_shows_committed_latest_and_lag_per_partition(
    settings, warehouse, kafka_broker: TansuBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = kafka_broker.bootstrap_servers
    create_topic(servers, SPEC.topic, 2)
    produce(servers, SPEC.topic, [(None, b"{}", i % 2) for i in range(100)])
    with SPEC.source(servers) as source:
        ingest_stream(warehouse, SPEC.bronze_table, source, max_messages=60, batch_size=60)
    produce(servers, SPEC.topic, [(None, b"{}", 1)] * 7)  # more arrive after the ingest
    monkeypatch.setenv(SPEC.address_env, servers)

    (stream,) = read_status(settings, streams=[SPEC]).streams
    assert stream.reachable and stream.note is None
    parts = {p.partition: (p.committed, p.latest, p.lag) for p in stream.partitions}
    # 60 of the 107 messages were read, from whichever partition the fetches delivered first.
    assert set(parts) == {"0", "1"} and {latest for _, latest, _ in parts.values()} == {"49", "56"}
    assert sum(int(committed) + 1 for committed, _, _ in parts.values()) == 60
    for committed, latest, lag in parts.values():
        assert lag == int(latest) - int(committed)
    assert stream.lag == 47
    text = format_status(read_status(settings, streams=[SPEC]))
    assert "status_clicks (kafka status_clicks): lag 47" in text
    assert read_status(settings, streams=[SPEC]).model_dump(mode="json")["streams"][0]["lag"] == 47


def test_status_says_when_the_broker_is_not_asked_or_not_there(
    settings, warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse.ensure_layout()
    monkeypatch.delenv(SPEC.address_env, raising=False)
    (stream,) = read_status(settings, streams=[SPEC]).streams
    assert not stream.reachable and stream.lag is None
    assert stream.note == "STATUS_TEST_BOOTSTRAP is not set: broker not asked"

    monkeypatch.setenv(SPEC.address_env, "127.0.0.1:1")  # nothing listens there
    (stream,) = read_status(settings, streams=[SPEC]).streams
    assert not stream.reachable and "broker unreachable" in (stream.note or "")
    assert "lag ?" in format_status(read_status(settings, streams=[SPEC]))


def test_status_shows_each_cdc_slot_with_its_lag_and_last_commit(
    settings, warehouse, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with cdc_database(postgres, "status_slot") as db:
        spec = db.spec.model_copy(update={"dsn_env": "STATUS_DB_DSN", "password_env": "STATUS_PW"})
        warehouse.ensure_layout()
        (slot,) = read_status(settings, streams=[], cdc_sources=[spec]).slots
        assert slot.note == "STATUS_DB_DSN is not set: database not asked"

        monkeypatch.setenv("STATUS_DB_DSN", db.conninfo)
        monkeypatch.setenv("STATUS_PW", "wrong")
        (slot,) = read_status(settings, streams=[], cdc_sources=[spec]).slots
        assert not slot.reachable and "password authentication failed" in (slot.note or "")

        monkeypatch.setenv("STATUS_PW", PG_TEST_PASSWORD)
        (slot,) = read_status(settings, streams=[], cdc_sources=[spec]).slots
        assert slot.reachable and "no replication slot yet" in (slot.note or "")

        insert_customers(db, 1, 3)
        ingest_cdc(warehouse, db.source())
        db.run("UPDATE customers SET segment = 'pro' WHERE customer_id = 'cus_000001'")
        status = read_status(settings, streams=[], cdc_sources=[spec])
        (slot,) = status.slots
        assert slot.reachable and slot.lag_bytes and slot.lag_bytes > 0
        assert slot.confirmed_lsn and slot.committed_position and slot.last_commit_ts
        text = format_status(status)
        assert f"{db.name} (slot medallion_{db.name}): confirmed {slot.confirmed_lsn}" in text

        ingest_cdc(warehouse, db.source())
        (slot,) = read_status(settings, streams=[], cdc_sources=[spec]).slots
        assert slot.lag_bytes is not None and slot.lag_bytes < 64 * 1024  # caught up
