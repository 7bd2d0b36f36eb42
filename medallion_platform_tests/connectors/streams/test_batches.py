"""Kafka read as columns, one assignment per ingest run, against the real Tansu broker.

``KafkaSource.read_batches`` keeps its partitions assigned from one batch to the next and
builds each batch from whole ``consume()`` calls split by partition: these tests hold each
bronze row to its own message (headers included) across partitions and batches, and keep a
producer writing while the ingest reads, so partitions reach their end and grow again under
the same assignment. Then the contract's JSON reading on the stream's own bronze.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.streams import ingest_stream
from medallion_platform.connectors.streams.ingest import load_positions
from medallion_platform.connectors.streams.kafka import KafkaSource, create_topic
from medallion_platform.contracts import apply_contract
from medallion_platform.devkit.brokers.tansu import TansuBroker
from medallion_platform.warehouse import Warehouse

PARTITIONS = 3


@pytest.fixture
def topic(kafka_broker: TansuBroker) -> str:
    name = f"batches-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker.bootstrap_servers, name, PARTITIONS)
    return name


@pytest.fixture
def source(kafka_broker: TansuBroker, topic: str) -> Iterator[KafkaSource]:
    with KafkaSource(
        "clicks", topic, bootstrap_servers=kafka_broker.bootstrap_servers, group_id=topic
    ) as kafka:
        yield kafka


def _produce(servers: str, topic: str, numbers: range, headers_every: int = 7) -> None:
    """Message ``i`` goes to partition ``i % 3`` with value ``{"i": i}``; every
    ``headers_every``-th carries headers naming it, the others none."""
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 5})
    for i in numbers:
        headers = [("n", str(i).encode()), ("kind", b"marked")] if i % headers_every == 0 else None
        producer.produce(
            topic,
            value=json.dumps({"i": i}).encode(),
            key=f"k{i}".encode(),
            partition=i % PARTITIONS,
            headers=headers,
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def _bronze(warehouse: Warehouse) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(
            "SELECT _batch_id, _row_number, _partition, _offset, _key, payload, "
            "CAST(_headers AS VARCHAR) FROM bronze.clicks ORDER BY _batch_id, _row_number"
        ).fetchall()


def test_each_row_keeps_its_own_headers_and_batches_stay_in_partition_order(
    kafka_broker: TansuBroker, topic: str, source: KafkaSource, warehouse: Warehouse
) -> None:
    total = 4_000
    _produce(kafka_broker.bootstrap_servers, topic, range(total))

    report = ingest_stream(warehouse, "clicks", source, batch_size=1_500)

    assert report.messages == total and report.batches == 3
    rows = _bronze(warehouse)
    assert len(rows) == total
    seen = set()
    for _batch, _row, partition, offset, key, payload, headers in rows:
        i = json.loads(payload)["i"]
        assert (partition, key) == (i % PARTITIONS, f"k{i}")
        marked = [["n", str(i)], ["kind", "marked"]] if i % 7 == 0 else None
        assert (json.loads(headers) if headers else None) == marked, i
        seen.add((partition, offset))
    assert len(seen) == total
    per_partition = {p: sorted(o for q, o in seen if q == p) for p in range(PARTITIONS)}
    assert all(offsets == list(range(len(offsets))) for offsets in per_partition.values())
    # Within a batch: row numbers 1..n in (partition, offset) order.
    for batch_id in {r[0] for r in rows}:
        batch = [r for r in rows if r[0] == batch_id]
        assert [r[1] for r in batch] == list(range(1, len(batch) + 1))
        assert [(r[2], r[3]) for r in batch] == sorted((r[2], r[3]) for r in batch)
    with warehouse.connect() as conn:
        committed = load_positions(conn, source)
    assert committed == {str(p): str(len(per_partition[p]) - 1) for p in range(PARTITIONS)}
    assert source.committed() == committed


def test_messages_produced_while_the_ingest_reads_land_once(
    kafka_broker: TansuBroker, topic: str, source: KafkaSource, warehouse: Warehouse
) -> None:
    """After each of the first commits more messages arrive, also in partitions the
    assignment already saw end: every one lands once, at its offset (in the run reading
    then, or the next, as the sensor would start it)."""
    servers = kafka_broker.bootstrap_servers
    _produce(servers, topic, range(600))
    produced, commits = [600], [0]

    def more(_batches: int, _total: int) -> None:
        commits[0] += 1
        if commits[0] <= 3:
            _produce(servers, topic, range(produced[0], produced[0] + 300))
            produced[0] += 300

    reports = [ingest_stream(warehouse, "clicks", source, batch_size=250, on_batch=more)]
    while sum(source.lag(reports[-1].positions).values()) and len(reports) < 5:
        reports.append(ingest_stream(warehouse, "clicks", source, batch_size=250, on_batch=more))
    assert reports[0].batches >= 2
    assert commits[0] >= 3 and produced[0] == 1_500
    assert sum(r.messages for r in reports) == 1_500

    rows = _bronze(warehouse)
    assert sorted(json.loads(r[5])["i"] for r in rows) == list(range(1_500))
    assert len({(r[2], r[3]) for r in rows}) == 1_500
    assert reports[-1].positions == {str(p): "499" for p in range(PARTITIONS)}


def test_json_text_is_trimmed_only_to_say_why_it_is_not_json(
    kafka_broker: TansuBroker,
    topic: str,
    source: KafkaSource,
    warehouse: Warehouse,
    config: PlatformConfig,
) -> None:
    """The events contract on payloads at the edges of its JSON check: JSON with spaces
    around it is JSON (its other faults are named, and quarantine shows the text as bronze
    holds it); text that is not JSON is named so, trimmed; a blank payload is missing
    values, not bad JSON."""
    good = {
        "event_id": "evt_0123456789abcdef",
        "event_type": "page_view",
        "occurred_at": "2026-11-20T10:03:12.123Z",
        "anonymous_id": "anon_000123",
        "customer_id": None,
        "channel": "organic",
        "page": "/",
        "sku": None,
        "order_id": None,
        "revenue": None,
        "currency": "USD",
    }
    spaced_bad_type = "  " + json.dumps(good | {"event_type": "hover"}) + " \t"
    payloads = [
        json.dumps(good),
        spaced_bad_type,
        "\u00a0{not json\u3000",
        "   ",
        "",
    ]
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for payload in payloads:
        producer.produce(topic, value=payload.encode(), partition=0)
    assert producer.flush(30) == 0
    ingest_stream(warehouse, "events", source)
    with warehouse.transaction() as conn:
        stats = apply_contract(conn, config.contract("events"))
    assert (stats.valid, stats.quarantined, stats.inserted) == (1, 4, 1)

    with warehouse.connect() as conn:
        got = conn.execute(
            "SELECT _row_number, _reason, _raw FROM quarantine.events ORDER BY _row_number"
        ).fetchall()
    by_row = {row: (reason, json.loads(raw)) for row, reason, raw in got}
    reason, raw = by_row[2]
    assert reason.startswith("event_type: 'hover' is not one of") and "JSON" not in reason
    assert raw["payload"] == spaced_bad_type  # as bronze holds it
    reason, raw = by_row[3]
    assert reason.startswith("event_id: payload is not valid JSON")
    assert raw["payload"] == "{not json"
    for row in (4, 5):
        reason, raw = by_row[row]
        assert "not valid JSON" not in reason and "event_id: required value is missing" in reason
        assert raw["payload"] is None
