"""What a producer other than ours sends (kafka-python, through the real Tansu broker) lands in
bronze whole: headers, tombstones, empty values, non-UTF-8 keys and values, messages over
1 MB, in uncompressed, gzip, snappy, lz4 and zstd batches; then the ``events`` contract.

Every bronze row is turned back into the bytes that were sent (``restore_*``) and compared
with what kafka-python sent, at the partition and offset the broker acknowledged.
"""

from __future__ import annotations

import json
import os

import pytest
from confluent_kafka import Producer

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.streams import ingest_stream
from medallion_platform.connectors.streams.ingest import load_positions
from medallion_platform.connectors.streams.kafka import KafkaSource, create_topic
from medallion_platform.contracts import apply_contract
from medallion_platform.devkit.brokers.tansu import TansuBroker
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.warehouse import table_columns
from medallion_platform_tests.connectors.streams.foreign_producer import (
    COMPRESSIONS,
    click_event,
    restore_headers,
    restore_value,
    send,
)

pytest.importorskip("kafka")

BIG = 1_500_000


def _records() -> list[tuple[bytes | None, bytes | None, list, int | None]]:
    """One of each thing a real producer sends, over two partitions."""
    big = click_event(9, page="/" + os.urandom(BIG // 2).hex())  # hex: compresses only ~2:1
    return [
        (
            b"anon_1",
            click_event(1),
            [
                ("trace-id", b"abc"),
                ("content-type", b"application/json"),
                ("trace-id", b"def"),  # a repeated key, order kept
                ("span", b"\xff\x00\xfe\x01"),  # not UTF-8
                ("", b""),  # empty key and value
                ("lang", "čaj ☕".encode()),
            ],
            0,
        ),
        (b"anon_1", None, [("reason", b"gdpr")], 0),  # a tombstone, with a header
        (b"anon_2", b"", [], 0),  # an empty value: not a tombstone
        (b"anon_3", click_event(3, page="/ünïcødé"), [], 1),
        (b"\xff\xfekey", click_event(4), [], 1),  # a key that is not UTF-8
        (None, bytes([0x00, 0xFF, 0xFE, 0x80]) * 10, [("bin", b"\x80")], 1),  # binary value
        (b"anon_5", None, [], 1),  # a tombstone without headers
        (b"anon_9", big, [("size", b"big")], 1),  # over 1 MB
        (b"anon_6", click_event(6), [], 0),
    ]


def _bronze(warehouse: Warehouse) -> dict[tuple[int, int], dict]:
    with warehouse.connect() as conn:
        cursor = conn.execute(
            "SELECT _partition, _offset, _key, payload, _parse_error, _tombstone, "
            "CAST(_headers AS VARCHAR) AS _headers, _payload_bytes, _source FROM bronze.events"
        )
        names = [d[0] for d in cursor.description]
        return {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in cursor.fetchall()}


@pytest.mark.parametrize("compression", COMPRESSIONS, ids=lambda c: c or "none")
def test_everything_a_foreign_producer_sends_lands_in_bronze_and_silver(
    compression: str | None,
    kafka_broker: TansuBroker,
    warehouse: Warehouse,
    config: PlatformConfig,
) -> None:
    servers = kafka_broker.bootstrap_servers
    topic = f"foreign-{compression or 'none'}"
    create_topic(servers, topic, 2)
    sent = send(servers, topic, _records(), compression=compression)
    source = KafkaSource("events", topic, bootstrap_servers=servers, group_id="foreign")
    try:
        report = ingest_stream(warehouse, "events", source, batch_size=4)
        committed = source.committed()
    finally:
        source.close()

    assert report.messages == len(sent) and report.batches == 3
    assert (report.tombstones, report.flagged, report.binary_headers) == (2, 2, 2)
    bronze = _bronze(warehouse)
    assert set(bronze) == {(r.partition, r.offset) for r in sent}  # the broker's offsets
    for record in sent:
        row = bronze[(record.partition, record.offset)]
        where = f"{record.partition}@{record.offset}"
        assert row["_source"] == f"events[{record.partition}]@{record.offset}"
        assert row["_tombstone"] is (record.value is None), where
        assert restore_value(row["payload"], row["_parse_error"]) == record.value, where
        assert restore_headers(row["_headers"]) == record.headers, where
        assert row["_payload_bytes"] == (None if record.value is None else len(record.value))
        if record.key is not None and record.key.startswith(b"anon"):
            assert row["_key"] == record.key.decode()

    by_value = {r.value: bronze[(r.partition, r.offset)] for r in sent if r.value is not None}
    assert by_value[b""]["payload"] == "" and by_value[b""]["_tombstone"] is False
    assert json.loads(bronze[(0, sent[0].offset)]["_headers"])[3] == [
        "span",
        {"base64": "/wD+AQ=="},
    ]
    flagged = {r["_parse_error"] for r in bronze.values() if r["_parse_error"]}
    assert flagged == {
        "binary payload (40 bytes), kept as base64",
        f"message of {len(sent[7].value)} bytes exceeds max_message_bytes (1000000)",
    }

    # Typed positions, committed with the rows (and the group told after).
    with warehouse.connect() as conn:
        columns = table_columns(conn, "bronze", "events")
        positions = load_positions(conn, source)
    assert (columns["_partition"], columns["_offset"]) == ("BIGINT", "BIGINT")
    assert (columns["_tombstone"], columns["_headers"]) == ("BOOLEAN", "JSON")
    last = {str(p): str(max(o for q, o in bronze if q == p)) for p, _ in bronze}
    assert positions == last == committed

    # Silver: the valid events, tombstones counted (never quarantined), the rest quarantined.
    with warehouse.transaction() as conn:
        stats = apply_contract(conn, config.contract("events"))
    assert stats.tombstones == 2 and stats.rows_in == len(sent)
    assert (stats.valid, stats.quarantined) == (4, 3)
    with warehouse.connect() as conn:
        silver = {r[0] for r in conn.execute("SELECT event_id FROM silver.events").fetchall()}
        quarantined = dict(
            conn.execute("SELECT _source, _reason FROM quarantine.events").fetchall()
        )
    assert silver == {f"evt_{n:016x}" for n in (1, 3, 4, 6)}
    assert set(quarantined) == {
        f"events[{r.partition}]@{r.offset}" for r in (sent[2], sent[5], sent[7])
    }
    assert "exceeds max_message_bytes" in quarantined[f"events[1]@{sent[7].offset}"]
    assert not any("tombstone" in reason for reason in quarantined.values())


def test_null_header_values_and_a_header_only_tombstone_from_librdkafka(
    kafka_broker: TansuBroker, warehouse: Warehouse
) -> None:
    """kafka-python cannot send a null header value; librdkafka's producer can (our
    ``produce`` helper sends no headers at all, so this is still input we did not shape)."""
    servers = kafka_broker.bootstrap_servers
    create_topic(servers, "null-headers", 1)
    producer = Producer({"bootstrap.servers": servers})
    producer.produce("null-headers", key=b"k", value=None, headers=[("h", None), ("g", b"1")])
    producer.produce("null-headers", key=b"k", value=b"{}", headers={"only": b"x"})
    assert producer.flush(10) == 0
    with KafkaSource("events", "null-headers", bootstrap_servers=servers, group_id="n") as source:
        report = ingest_stream(warehouse, "events", source)
    assert report.messages == 2 and report.tombstones == 1
    with warehouse.connect() as conn:
        got = conn.execute(
            "SELECT _offset, _tombstone, payload, CAST(_headers AS VARCHAR) FROM bronze.events "
            "ORDER BY _offset"
        ).fetchall()
    assert [(o, t, p, json.loads(h)) for o, t, p, h in got] == [
        (0, True, None, [["h", None], ["g", "1"]]),
        (1, False, "{}", [["only", "x"]]),
    ]
