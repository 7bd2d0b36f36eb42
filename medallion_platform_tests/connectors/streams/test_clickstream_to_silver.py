"""The demo clickstream (duplicates, late, out-of-order and malformed events) through a killed
ingest and a broker restart, into silver: exactly the distinct valid events, and exactly the
malformed messages quarantined. Real brokers: Tansu (a 3-partition Kafka topic) and
redis-server; the kill is a real SIGKILL of a real subprocess.

What counts as valid is decided in plain Python (``clickstream_truth``), independently of the
contract's SQL.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.streams import PositionPastEnd, ingest_stream
from medallion_platform.connectors.streams.base import StreamSource
from medallion_platform.connectors.streams.kafka import KafkaSource, create_topic
from medallion_platform.connectors.streams.kafka import produce as kafka_produce
from medallion_platform.connectors.streams.redis_streams import RedisStreamSource
from medallion_platform.connectors.streams.redis_streams import produce as redis_produce
from medallion_platform.contracts import Contract, apply_contract
from medallion_platform.devkit.brokers.redis_server import RedisServer
from medallion_platform.devkit.brokers.tansu import TansuBroker
from medallion_platform.devkit.demo.clickstream import generate_clickstream
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.clickstream_truth import parse_valid, truth
from medallion_platform_tests.connectors.streams.foreign_producer import (
    restore_headers,
    restore_value,
    send,
)

EVENTS = 2_500
TOPIC = "clickstream"
PARTITIONS = 3
Message = tuple[bytes, bytes]


# -- brokers ------------------------------------------------------------------------------


class Broker:
    """One broker behind the same four verbs, so the scenario below reads once for both."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        if kind == "kafka":
            self.server: TansuBroker | RedisServer = TansuBroker(work / "tansu")
        else:
            self.server = RedisServer(work / "redis", persist_dir=work / "redis-data")

    @property
    def address(self) -> str:
        if isinstance(self.server, TansuBroker):
            return self.server.bootstrap_servers
        return self.server.url

    def start(self) -> None:
        self.server.start()
        if self.kind == "kafka":
            create_topic(self.address, TOPIC, PARTITIONS)

    def restart(self) -> None:
        """Kafka here keeps topics in memory, so its restart loses them (see the test)."""
        self.server.restart()
        if self.kind == "kafka":
            create_topic(self.address, TOPIC, PARTITIONS)

    def publish(self, messages: list[Message]) -> None:
        if self.kind == "kafka":
            # Keyed by visitor: one visitor's events stay in one partition, in order.
            kafka_produce(self.address, TOPIC, [(k, v, None) for k, v in messages])
        else:
            redis_produce(self.address, TOPIC, messages)

    def source(self) -> StreamSource:
        if self.kind == "kafka":
            return KafkaSource("events", TOPIC, bootstrap_servers=self.address, group_id="t")
        return RedisStreamSource("events", TOPIC, url=self.address)

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def running(kind: str, work: Path) -> Iterator[Broker]:
    broker = Broker(kind, work)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


KILL_SCRIPT = """
import sys
from medallion_platform.connectors.streams import ingest_stream
from medallion_platform.connectors.streams.kafka import KafkaSource
from medallion_platform.connectors.streams.redis_streams import RedisStreamSource
from medallion_platform.warehouse import Warehouse

path, kind, address = sys.argv[1:4]
if kind == "kafka":
    source = KafkaSource("events", "clickstream", bootstrap_servers=address, group_id="t")
else:
    source = RedisStreamSource("events", "clickstream", url=address)
def on_batch(batches, total):
    print(f"batch {batches} {total}", flush=True)
ingest_stream(Warehouse(path), "events", source, batch_size=100, on_batch=on_batch)
print("done", flush=True)
"""


def kill_after_batches(warehouse: Warehouse, broker: Broker, work: Path, batches: int) -> None:
    """Run an ingest in a child process and SIGKILL it once ``batches`` batches committed."""
    script = work / "ingest_child.py"
    script.write_text(KILL_SCRIPT)
    child = subprocess.Popen(
        [sys.executable, str(script), str(warehouse.path), broker.kind, broker.address],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in child.stdout], daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=60)
            assert line != "done\n", "the child finished before it could be killed"
            if line.startswith(f"batch {batches} "):
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(timeout=30)


def ingest_and_merge(warehouse: Warehouse, broker: Broker, contract: Contract, **kwargs):
    source = broker.source()
    try:
        ingest_stream(warehouse, "events", source, batch_size=400, **kwargs)
    finally:
        source.close()
    with warehouse.transaction() as conn:
        return apply_contract(conn, contract)


def rows(warehouse: Warehouse, sql: str) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(sql).fetchall()


def assert_silver_is_exactly(warehouse: Warehouse, first: dict[str, dict]) -> None:
    silver = {
        r[0]: r[1:]
        for r in rows(
            warehouse,
            "SELECT event_id, event_type, occurred_at, anonymous_id, channel, revenue, "
            "event_date FROM silver.events",
        )
    }
    assert len(silver) == len(rows(warehouse, "SELECT event_id FROM silver.events"))
    assert set(silver) == set(first)
    for event_id, event in first.items():
        occurred = datetime.fromisoformat(event["occurred_at"]).astimezone(UTC)
        revenue = None if event["revenue"] is None else Decimal(str(event["revenue"]))
        assert silver[event_id] == (
            event["event_type"],
            occurred.replace(tzinfo=None),
            event["anonymous_id"],
            event["channel"],
            revenue,
            occurred.date(),  # late events sit in the day they happened, not the day they came
        ), event_id


def quarantined_payloads(warehouse: Warehouse) -> Counter[bytes]:
    raws = rows(warehouse, "SELECT _raw FROM quarantine.events")
    return Counter(json.loads(raw)["payload"].encode() for (raw,) in raws)


# -- the scenario ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["kafka", "redis"])
def test_duplicates_late_events_a_kill_and_a_broker_restart_leave_silver_exact(
    kind: str, warehouse: Warehouse, config: PlatformConfig, tmp_path: Path
) -> None:
    contract = config.contract("events")
    messages, manifest = generate_clickstream(EVENTS, seed=5)
    first, malformed = truth(messages)
    assert manifest.duplicates > 0 and manifest.late > 0 and malformed  # the warts are there
    assert len(first) == manifest.events and len(malformed) == manifest.malformed
    cut1, cut2 = int(len(messages) * 0.4), int(len(messages) * 0.7)

    with running(kind, tmp_path) as broker:
        broker.publish(messages[:cut1])
        kill_after_batches(warehouse, broker, tmp_path, batches=3)
        killed_at = rows(warehouse, "SELECT count(*) FROM bronze.events")[0][0]
        assert killed_at % 100 == 0 and 300 <= killed_at < cut1  # whole batches only
        ingest_and_merge(warehouse, broker, contract)  # resumes at the committed offsets

        broker.publish(messages[cut1:cut2])
        broker.restart()
        if kind == "kafka":
            # This Tansu build keeps topics in memory: the restarted broker is empty, and the
            # producer replays what it sent. Same keys, same order: the same offsets.
            broker.publish(messages[:cut2])
        stats = ingest_and_merge(warehouse, broker, contract)
        assert stats.rows_in == cut2 - cut1

        broker.publish(messages[cut2:])
        # At-least-once: the producer re-sends a stretch it is unsure about, across batches.
        broker.publish(messages[cut2 - 50 : cut2])
        ingest_and_merge(warehouse, broker, contract)

    bronze = rows(
        warehouse, "SELECT count(*), count(DISTINCT (_partition, _offset)) FROM bronze.events"
    )[0]
    assert bronze == (len(messages) + 50, len(messages) + 50)  # each delivery once, no gap
    assert_silver_is_exactly(warehouse, first)
    resent_malformed = [v for _k, v in messages[cut2 - 50 : cut2] if parse_valid(v) is None]
    assert quarantined_payloads(warehouse) == Counter(malformed + resent_malformed)
    reasons = rows(warehouse, "SELECT _reason, _source FROM quarantine.events")
    assert all(reason and re.fullmatch(r"events\[\w+\]@[\w-]+", src) for reason, src in reasons)

    # Rebuilding silver from bronze gives the same table.
    before = rows(warehouse, "SELECT * FROM silver.events ORDER BY event_id")
    with warehouse.transaction() as conn:
        apply_contract(conn, contract, rebuild=True)
    assert rows(warehouse, "SELECT * FROM silver.events ORDER BY event_id") == before


def test_a_recreated_topic_shorter_than_the_committed_offsets_stops_the_ingest(
    warehouse: Warehouse, config: PlatformConfig, tmp_path: Path
) -> None:
    """The broker lost the topic and got back less than was committed: reading on would skip
    whatever it holds now, so the ingest stops, unless told to read it again from the start
    (silver then drops the events it already has)."""
    contract = config.contract("events")
    messages, _ = generate_clickstream(1_000, seed=9)
    first, malformed = truth(messages)
    with running("kafka", tmp_path) as broker:
        broker.publish(messages)
        ingest_and_merge(warehouse, broker, contract)
        broker.restart()  # empty again
        broker.publish(messages[:100])
        with pytest.raises(PositionPastEnd, match="past the end of the log") as error:
            ingest_and_merge(warehouse, broker, contract)
        assert "offset_reset: earliest" in str(error.value)
        assert rows(warehouse, "SELECT count(*) FROM bronze.events")[0][0] == len(messages)

        # Told to: it reads the partitions again from their start, and then carries on.
        stats = ingest_and_merge(warehouse, broker, contract, offset_reset="earliest")
        assert stats.rows_in == 100 and stats.inserted == 0  # all seen before
        broker.publish(messages[100:])
        stats = ingest_and_merge(warehouse, broker, contract)
        assert stats.rows_in == len(messages) - 100 and stats.inserted == 0
    assert_silver_is_exactly(warehouse, first)
    assert quarantined_payloads(warehouse) == Counter(malformed * 2)  # each delivery kept


def test_oversized_and_binary_messages_are_kept_raw_and_quarantined_with_the_reason(
    warehouse: Warehouse, config: PlatformConfig, tmp_path: Path
) -> None:
    messages, _ = generate_clickstream(20, seed=3)
    good = [(k, v) for k, v in messages if parse_valid(v) is not None]
    big = json.loads(good[0][1]) | {"page": "/p/" + "x" * 600, "event_id": "evt_" + "a" * 16}
    binary = bytes([0x00, 0xFF, 0xFE, 0x80]) * 10
    stream = [*good[1:4], (b"k", json.dumps(big).encode()), (b"k", binary), *good[4:6]]
    with running("redis", tmp_path) as broker:
        broker.publish(stream)
        source = broker.source()
        report = ingest_stream(warehouse, "events", source, max_message_bytes=500)
        source.close()
    assert report.messages == len(stream) and report.flagged == 2
    with warehouse.transaction() as conn:
        stats = apply_contract(conn, config.contract("events"))
    assert (stats.valid, stats.quarantined) == (5, 2)  # the batch went through
    reasons = dict(rows(warehouse, "SELECT _source, _reason FROM quarantine.events"))
    assert len(reasons) == 2
    assert any("exceeds max_message_bytes (500)" in r for r in reasons.values())
    assert any("binary payload (40 bytes), kept as base64" in r for r in reasons.values())
    # Bronze still holds both exactly: the big one as text, the binary one as base64.
    kept = {
        p for (p,) in rows(warehouse, "SELECT payload FROM bronze.events WHERE _parse_error <> ''")
    }
    assert kept == {json.dumps(big), base64.b64encode(binary).decode()}


def test_a_foreign_producer_s_headers_and_tombstones_survive_a_kill_into_silver(
    warehouse: Warehouse, config: PlatformConfig, tmp_path: Path
) -> None:
    """Another client (kafka-python, zstd batches) sends the clickstream with headers on every
    message (a binary trace id among them) and a tombstone per hundred; the ingest is killed
    mid-way. Bronze holds each record once at the offset the broker gave it, headers and
    null values included; the committed positions are exactly the rows'; silver is the
    truth, and the tombstones are counted, not quarantined."""
    contract = config.contract("events")
    messages, _ = generate_clickstream(1_500, seed=21)
    first, malformed = truth(messages)
    records: list = []
    for i, (key, value) in enumerate(messages):
        trace = i.to_bytes(4, "big") + b"\xff"  # never UTF-8
        records.append((key, value, [("source", b"storefront"), ("trace", trace)], None))
        if i % 100 == 99:  # the visitor erased: a tombstone on its key
            records.append((key, None, [("reason", b"erased")], None))
    tombstones = len(records) - len(messages)

    with running("kafka", tmp_path) as broker:
        sent = send(broker.address, TOPIC, records, compression="zstd")
        kill_after_batches(warehouse, broker, tmp_path, batches=3)
        killed_at = rows(warehouse, "SELECT count(*) FROM bronze.events")[0][0]
        assert killed_at % 100 == 0 and 300 <= killed_at < len(sent)  # whole batches only
        stats = ingest_and_merge(warehouse, broker, contract)
        again = ingest_and_merge(warehouse, broker, contract)
        with broker.source() as source:
            committed = source.committed()

    assert (stats.tombstones, stats.rows_in) == (tombstones, len(sent))
    assert (again.rows_in, again.tombstones) == (0, 0)
    bronze = {
        (p, o): (restore_value(v, e), t, restore_headers(h))
        for p, o, v, e, t, h in rows(
            warehouse,
            "SELECT _partition, _offset, payload, _parse_error, _tombstone, "
            "CAST(_headers AS VARCHAR) FROM bronze.events",
        )
    }
    assert len(bronze) == rows(warehouse, "SELECT count(*) FROM bronze.events")[0][0]
    assert bronze == {(r.partition, r.offset): (r.value, r.value is None, r.headers) for r in sent}
    with warehouse.connect() as conn:
        positions = dict(
            conn.execute(
                "SELECT key, position FROM _meta.positions WHERE source = 'stream:events'"
            ).fetchall()
        )
    last = {str(p): str(max(o for q, o in bronze if q == p)) for p, _ in bronze}
    assert positions == last == committed
    assert_silver_is_exactly(warehouse, first)
    assert quarantined_payloads(warehouse) == Counter(malformed)
    before = rows(warehouse, "SELECT * FROM silver.events ORDER BY event_id")
    with warehouse.transaction() as conn:
        assert apply_contract(conn, contract, rebuild=True).tombstones == tombstones
    assert rows(warehouse, "SELECT * FROM silver.events ORDER BY event_id") == before
