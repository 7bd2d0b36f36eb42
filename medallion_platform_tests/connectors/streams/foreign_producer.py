"""A second Kafka client (kafka-python, pure Python, not librdkafka) that produces test input.

Why: a test that writes with our own ``produce`` and reads with our own consumer checks that
the two agree, not that we keep what other producers send. kafka-python encodes record
batches itself (headers, null values, gzip / snappy / lz4 / zstd), and the broker's answer
(partition, offset) for each record is the truth the tests compare bronze with.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from kafka import KafkaProducer

Headers = list[tuple[str, bytes]]
COMPRESSIONS = [None, "gzip", "snappy", "lz4", "zstd"]


@dataclass(frozen=True)
class Record:
    """What was sent, and where the broker put it."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int = -1
    offset: int = -1


def send(
    bootstrap_servers: str,
    topic: str,
    records: list[tuple[bytes | None, bytes | None, Headers, int | None]],
    *,
    compression: str | None = None,
    linger_ms: int = 5,
) -> list[Record]:
    """Send ``(key, value, headers, partition)`` in order and wait for every acknowledgement.

    ``partition`` None lets kafka-python's own partitioner (murmur2 of the key, as the Java
    client's) choose. One producer per call, so records share compressed batches."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        compression_type=compression,
        linger_ms=linger_ms,
        acks="all",
        max_request_size=8 * 1024 * 1024,  # room for the > 1 MB messages
        request_timeout_ms=30_000,
        retries=0,  # a retry could reorder or duplicate: the tests want exact offsets
    )
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=headers, partition=partition)
            for key, value, headers, partition in records
        ]
        producer.flush(timeout=60)
        sent = []
        for (key, value, headers, _), future in zip(records, futures, strict=True):
            meta = future.get(timeout=30)
            sent.append(Record(key, value, headers, meta.partition, meta.offset))
        # Compressed size / raw size of the batches sent: below 1 only if they were compressed.
        rate = producer.metrics()["producer-metrics"]["compression-rate-avg"]
        if compression is not None and not rate < 1:
            raise AssertionError(f"kafka-python sent no {compression} batch (rate {rate})")
        return sent
    finally:
        producer.close(timeout=10)


def restore_headers(text: str | None) -> Headers:
    """Bronze ``_headers`` JSON back to what the producer sent (base64 items decoded)."""
    if text is None:
        return []

    def item(x: str | dict | None) -> bytes | str | None:
        if isinstance(x, dict):
            return base64.b64decode(x["base64"])
        return x

    pairs = []
    for key, value in json.loads(text):
        restored = item(value)
        pairs.append((item(key), restored.encode() if isinstance(restored, str) else restored))
    return pairs


def restore_value(payload: str | None, parse_error: str | None) -> bytes | None:
    """Bronze ``payload`` back to the message's bytes (base64 when flagged as binary)."""
    if payload is None:
        return None
    if parse_error and "binary payload" in parse_error:
        return base64.b64decode(payload)
    return payload.encode()


def click_event(n: int, **extra: object) -> bytes:
    """A valid clickstream event (the ``events`` contract) numbered ``n``, as JSON bytes."""
    body = {
        "event_id": f"evt_{n:016x}",
        "event_type": "page_view",
        "occurred_at": "2025-10-01T12:00:00+00:00",
        "anonymous_id": f"anon_{n}",
        "channel": "organic",
        "page": "/",
    }
    return json.dumps(body | extra, ensure_ascii=False).encode()
