"""A Kafka topic as a ``StreamSource`` (confluent-kafka / librdkafka; no Dagster imports).

Why manual assignment rather than a group subscription: the warehouse, not the consumer group,
owns the positions. Every read (``read_batches``: one per ingest run, its batches in turn)
assigns all partitions at exactly ``after[p] + 1``, so a rerun after a crash rereads precisely
what was not committed. The group's offsets are written only by ``acknowledge`` (after the
warehouse commit), for lag dashboards and other tooling.

Positions are partition ids and offsets as decimal strings (``{"0": "41"}``). Every broker call
has a timeout; an unreachable broker raises ``BrokerUnavailable`` naming the bootstrap servers.
The ``security`` config (SASL etc.) is passed to librdkafka as is and never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from itertools import repeat
from operator import is_not, itemgetter
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from medallion_platform.connectors.collector import collector_paused
from medallion_platform.connectors.streams.base import (
    BrokerUnavailable,
    Headers,
    MessageColumns,
    PositionPastEnd,
    Positions,
    StreamMessage,
    StreamSource,
    arrow_array,
)

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S = 5.0
_CONSUME_CHUNK = 10_000
_POLL_SLICE_S = 0.05
_BROKER_DOWN_CODES = frozenset(
    {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._TIMED_OUT}
)


def _client_config(bootstrap_servers: str, security: dict[str, str] | None) -> dict[str, Any]:
    """librdkafka config shared by all clients; its own logs go to Python logging, not stderr."""
    return {
        **(security or {}),
        "bootstrap.servers": bootstrap_servers,
        "logger": log,
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.max.ms": 1000,
    }


def _unavailable(bootstrap_servers: str, what: str, exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"Kafka broker at {bootstrap_servers} unavailable ({what}): {exc}")


@dataclass(slots=True)
class _Reading:
    """Where one assignment stands: the offset wanted next and the partitions not yet at
    their end, per partition id; what was found past its end; whether a poll went idle."""

    next_offset: dict[int, int]
    pending: set[int]
    past_end: dict[str, str] = field(default_factory=dict)
    idle: bool = False

    def split(
        self, table: pa.Table, partition_ids: list[int], headers: list[Headers | None] | None
    ) -> dict[int, MessageColumns]:
        """One ``consume()``'s rows per partition, in their order, moving each partition's next
        offset on. Drops rows of a partition not assigned or below the offset wanted next (a
        stale prefetch from an earlier assignment). Arrow filters per partition, not per row."""
        present = set(partition_ids)
        parts: dict[int, MessageColumns] = {}
        for partition in present:
            wanted = self.next_offset.get(partition)
            if wanted is None:
                continue
            rows = None if len(present) == 1 else pc.equal(table["partition"], partition)
            mine = table if rows is None else table.filter(rows)
            low, high = (m.as_py() for m in pc.min_max(mine["offset"]).values())
            keep = None if low >= wanted else pc.greater_equal(mine["offset"], wanted)
            if keep is not None:
                mine = mine.filter(keep)
            self.next_offset[partition] = max(wanted, high + 1)
            if not mine.num_rows:
                continue
            own = headers
            for mask in (rows, keep):
                if own is not None and mask is not None:
                    own = [h for h, ok in zip(own, mask.to_pylist(), strict=True) if ok]
            parts[partition] = MessageColumns(mine, own)
        return parts


class KafkaSource(StreamSource):
    """One topic, all its partitions; not thread-safe (one librdkafka consumer, reused)."""

    offset_type: Literal["BIGINT", "VARCHAR"] = "BIGINT"

    def __init__(
        self,
        name: str,
        topic: str,
        *,
        bootstrap_servers: str,
        group_id: str,
        security: dict[str, str] | None = None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        exact_high_watermark: bool = False,
    ) -> None:
        self.name = name
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.request_timeout_s = request_timeout_s
        self.exact_high_watermark = exact_high_watermark
        self._security = dict(security or {})
        self._consumer: Consumer | None = None

    def __repr__(self) -> str:  # no security config in reprs or logs
        return f"KafkaSource({self.name!r}, topic={self.topic!r}, at {self.bootstrap_servers})"

    # -- librdkafka plumbing ---------------------------------------------------------------

    @property
    def consumer(self) -> Consumer:
        """The underlying consumer, created on first use (tests check committed offsets on it)."""
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **_client_config(self.bootstrap_servers, self._security),
                    "group.id": self.group_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    # Positions below the log start are clamped by us; past the end is an error.
                    "auto.offset.reset": "error",
                    "enable.partition.eof": True,
                    # Batch reads want end-of-partition quickly, not long polls on idle ones.
                    "fetch.wait.max.ms": 100,
                    # 1000 ms default outlasts the 1 s idle read: ingest runs stopped early.
                    "fetch.queue.backoff.ms": 10,
                }
            )
        return self._consumer

    def _partitions(self) -> list[int]:
        """Partition ids of the topic; empty when the topic does not exist (yet)."""
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=self.request_timeout_s)
        except KafkaException as exc:
            raise _unavailable(self.bootstrap_servers, f"metadata for {self.topic!r}", exc) from exc
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            code = topic.error.code() if topic is not None and topic.error else None
            if code in _BROKER_DOWN_CODES:
                raise _unavailable(self.bootstrap_servers, "metadata", KafkaException(topic.error))
            log.warning("Kafka topic %r not found at %s", self.topic, self.bootstrap_servers)
            return []
        return sorted(topic.partitions)

    def _watermarks(self, partition: int) -> tuple[int, int]:
        """(low, high): the first offset still held and the offset the next message will get."""
        try:
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=self.request_timeout_s, cached=False
            )
        except KafkaException as exc:
            raise _unavailable(self.bootstrap_servers, f"offsets of {self.topic!r}", exc) from exc
        return int(low), int(high)

    # -- StreamSource ----------------------------------------------------------------------

    def read_batch(
        self, after: Positions, max_messages: int, timeout_s: float = 1.0
    ) -> list[StreamMessage]:
        """Up to ``max_messages`` messages after ``after``, ordered by (partition, offset): the
        first batch of ``read_batches``."""
        with closing(
            self.read_batches(after, max_messages, max_messages=max_messages, timeout_s=timeout_s)
        ) as batches:
            first = next(batches, None)
        return [] if first is None else first.messages()

    def read_batches(
        self,
        after: Positions,
        batch_size: int,
        *,
        max_messages: int | None = None,
        timeout_s: float = 1.0,
    ) -> Iterator[MessageColumns]:
        """Everything after ``after`` (or ``max_messages`` of it) in batches of up to
        ``batch_size``, each ordered by (partition, offset), from one assignment.

        Why one assignment for all the batches: assigning again for each one throws away what
        librdkafka fetched ahead and lists the partitions' ends again (on Tansu an extra fetch
        per partition, see ``_confirm_ends``); kept assigned, the client fetches while the
        caller commits. The caller is done with a batch when it asks for the next one.

        Ends after the batch in which every partition reported end-of-partition (the fetch's
        high watermark, which stays right on brokers whose ListOffsets is off) or a poll
        returned nothing within ``timeout_s``. A position below the log start (retention)
        resumes at the log start; one past the end raises ``PositionPastEnd`` instead of the
        batch that found it.
        """
        if batch_size <= 0 or (max_messages is not None and max_messages <= 0):
            return
        starts = self._starts(after)
        if not starts:
            return
        reading = _Reading(next_offset=dict(starts), pending=set(starts))
        read = 0
        try:
            self.consumer.assign([TopicPartition(self.topic, p, o) for p, o in starts.items()])
            while reading.pending and not reading.idle:
                if max_messages is not None and read >= max_messages:
                    return
                want = batch_size if max_messages is None else min(batch_size, max_messages - read)
                batch = self._fill(reading, want, timeout_s)
                if reading.past_end:
                    raise PositionPastEnd(self.name, reading.past_end)
                if not len(batch):
                    return
                read += len(batch)
                yield batch
        except KafkaException as exc:
            raise _unavailable(self.bootstrap_servers, f"reading {self.topic!r}", exc) from exc
        finally:
            self._unassign()

    def _starts(self, after: Positions) -> dict[int, int]:
        """The offset to read next per partition (after ``after``, not below the log start);
        raises ``PositionPastEnd`` when one lies beyond its partition's end."""
        starts: dict[int, int] = {}
        ends: dict[int, tuple[int, int]] = {}
        for partition in self._partitions():
            low, _high = ends[partition] = self._watermarks(partition)
            key = str(partition)
            starts[partition] = max(int(after[key]) + 1, low) if key in after else low
        if starts:
            self._check_not_past_end(starts, ends)
        return starts

    def _fill(self, reading: _Reading, want: int, timeout_s: float) -> MessageColumns:
        """Up to ``want`` messages from the assigned partitions, as one batch ordered by
        (partition, offset): each partition's chunks in turn, no sort and no copy."""
        consumer = self.consumer
        buckets: dict[int, list[MessageColumns]] = {}
        kept = 0
        idle_until = time.monotonic() + timeout_s
        while kept < want and reading.pending:
            # consume() waits its full timeout unless it gets num_messages, so poll in short
            # slices: end-of-partition events then end the batch at once.
            with collector_paused():  # 10,000 Messages die together
                messages = consumer.consume(
                    num_messages=min(_CONSUME_CHUNK, want - kept), timeout=_POLL_SLICE_S
                )
                parts = self._columns(messages, reading) if messages else {}
                del messages  # every Message dies here, before the collector runs again
            if not parts:
                if time.monotonic() >= idle_until:
                    reading.idle = True
                    break
                continue
            idle_until = time.monotonic() + timeout_s
            for partition, part in parts.items():
                buckets.setdefault(partition, []).append(part)
                kept += len(part)
        return MessageColumns.concat([part for p in sorted(buckets) for part in buckets[p]])

    def _columns(self, messages: list[Message], reading: _Reading) -> dict[int, MessageColumns]:
        """The wanted messages of one ``consume()`` as columns, per partition.

        Each field is taken from all the messages at once (``map`` over the method, in C),
        so no Python code runs per message unless a message carries an error event, headers
        or no timestamp.
        """
        errors = list(map(Message.error, messages))
        if any(map(is_not, errors, repeat(None))):
            for message, error in zip(messages, errors, strict=True):
                if error is not None:
                    self._event(message, error, reading)
            messages = [m for m, e in zip(messages, errors, strict=True) if e is None]
            if not messages:
                return {}
        count = len(messages)
        partition_ids = list(map(Message.partition, messages))
        stamps = list(map(Message.timestamp, messages))
        if TIMESTAMP_NOT_AVAILABLE in map(itemgetter(0), stamps):
            times = pa.array(
                [None if kind == TIMESTAMP_NOT_AVAILABLE else t for kind, t in stamps], pa.int64()
            )
        else:
            times = pa.array(np.fromiter(map(itemgetter(1), stamps), np.int64, count))
        table = pa.table(
            {
                # numpy for integers: pa.array() of a list of small ints can take µs each
                "partition": pa.array(np.fromiter(partition_ids, np.int64, count)),
                "offset": pa.array(np.fromiter(map(Message.offset, messages), np.int64, count)),
                "key": arrow_array(list(map(Message.key, messages)), pa.binary()),
                # None for a tombstone (null value), b"" for an empty one
                "value": arrow_array(list(map(Message.value, messages)), pa.binary()),
                "timestamp_ms": times,
            }
        )
        headers = list(map(Message.headers, messages))
        rows = [tuple(h) if h else None for h in headers] if any(headers) else None
        return reading.split(table, partition_ids, rows)

    def _check_not_past_end(self, starts: dict[int, int], ends: dict[int, tuple[int, int]]) -> None:
        """Raise ``PositionPastEnd`` if a start lies beyond its partition's end.

        A start past the listed end is confirmed with a fetch first (some brokers list too
        low an end, see ``_confirm_ends``), so this costs nothing while a consumer is behind.
        """
        suspicious = {p: ends[p] for p, start in starts.items() if start > ends[p][1]}
        if not suspicious:
            return
        confirmed = self._confirm_ends(suspicious)
        past = {
            str(p): f"committed offset {starts[p] - 1}, but the log ends before offset "
            f"{confirmed[p][1]}"
            for p in suspicious
            if starts[p] > confirmed[p][1]
        }
        if past:
            raise PositionPastEnd(self.name, past)

    def _unassign(self) -> None:
        try:
            self.consumer.unassign()
        except KafkaException:  # pragma: no cover - only when the consumer is broken
            log.debug("unassign failed", exc_info=True)

    def _event(self, message: Message, error: KafkaError, reading: _Reading) -> None:
        """An error event among the consumed messages: end of a partition, a position past its
        end (never skipped: the caller decides, see ``PositionPastEnd``), or a client error."""
        if error.code() == KafkaError._PARTITION_EOF:
            reading.pending.discard(message.partition())
            return
        if error.code() == KafkaError._AUTO_OFFSET_RESET:
            # Position past the end: the topic was recreated or the log truncated. Never
            # silently skip or reread; the caller decides (PositionPastEnd).
            partition = message.partition()
            reading.past_end[str(partition)] = (
                f"wanted offset {reading.next_offset.get(partition)}, broker says {error.str()}"
            )
            reading.pending.discard(partition)
            return
        if error.fatal() or error.code() == KafkaError._ALL_BROKERS_DOWN:
            raise KafkaException(error)
        log.warning("%s: consumer error on %r: %s", self.name, self.topic, error)

    def _ends(self) -> dict[int, tuple[int, int]]:
        """(low, high) per partition; ``exact_high_watermark`` confirms high with a fetch."""
        ends = {p: self._watermarks(p) for p in self._partitions()}
        if self.exact_high_watermark:
            ends = self._confirm_ends(ends)
        return ends

    def _confirm_ends(self, ends: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """Fetch from ``high - 1`` to end-of-partition and take the fetch's high watermark.

        Why: Tansu 0.6.0 answers ListOffsets(latest) with the last *batch's* base offset + 1,
        so a batch of 500 looks like one message. Reads at most one batch per partition.
        """
        peeks = {p: high - 1 for p, (low, high) in ends.items() if high > low}
        if not peeks:
            return ends
        consumer = self.consumer
        pending = set(peeks)
        deadline = time.monotonic() + self.request_timeout_s
        try:
            consumer.assign([TopicPartition(self.topic, p, o) for p, o in peeks.items()])
            while pending and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=_CONSUME_CHUNK, timeout=_POLL_SLICE_S):
                    error = message.error()
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
            if pending:
                raise _unavailable(
                    self.bootstrap_servers,
                    f"end of {self.topic!r} partitions {sorted(pending)}",
                    TimeoutError(f"no end-of-partition within {self.request_timeout_s} s"),
                )
            confirmed = dict(ends)
            for p in peeks:
                _low, fetched_high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), cached=True
                )
                low, high = ends[p]
                confirmed[p] = (low, max(high, int(fetched_high)))
            return confirmed
        except KafkaException as exc:
            raise _unavailable(self.bootstrap_servers, f"end of {self.topic!r}", exc) from exc
        finally:
            self._unassign()

    def latest(self) -> Positions:
        """Offset of the last message per partition (high watermark - 1); empty ones omitted."""
        return {str(p): str(high - 1) for p, (low, high) in self._ends().items() if high > low}

    def lag(self, committed: Positions) -> dict[str, int]:
        """Messages after ``committed`` per partition (never negative), every partition listed."""
        lags: dict[str, int] = {}
        for partition, (low, high) in self._ends().items():
            key = str(partition)
            next_offset = int(committed[key]) + 1 if key in committed else low
            lags[key] = max(0, high - max(next_offset, low))
        return lags

    def acknowledge(self, committed: Positions) -> None:
        """Commit the group's offsets (position + 1, Kafka's convention) synchronously."""
        if not committed:
            return
        offsets = [
            TopicPartition(self.topic, int(partition), int(offset) + 1)
            for partition, offset in sorted(committed.items(), key=lambda kv: int(kv[0]))
        ]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise _unavailable(
                self.bootstrap_servers, f"committing {self.group_id!r}", exc
            ) from exc

    def committed(self) -> Positions:
        """The group's committed positions (inclusive), for checks and status pages."""
        partitions = [TopicPartition(self.topic, p) for p in self._partitions()]
        if not partitions:
            return {}
        try:
            result = self.consumer.committed(partitions, timeout=self.request_timeout_s)
        except KafkaException as exc:
            raise _unavailable(self.bootstrap_servers, "committed offsets", exc) from exc
        return {str(tp.partition): str(tp.offset - 1) for tp in result if tp.offset >= 0}

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- helpers for tests and the demo ----------------------------------------------------------


def create_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    *,
    security: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> None:
    """Create ``topic`` (replication factor 1); a topic that already exists is left as it is."""
    admin = AdminClient(_client_config(bootstrap_servers, security))
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    try:
        futures[topic].result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        raise _unavailable(bootstrap_servers, f"creating {topic!r}", exc) from exc
    except TimeoutError as exc:
        raise _unavailable(bootstrap_servers, f"creating {topic!r}", exc) from exc


def produce(
    bootstrap_servers: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes, int | None]],
    *,
    security: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    on_delivered: Callable[[Message], None] | None = None,
    config: Mapping[str, Any] | None = None,
) -> int:
    """Send (key, value, partition) triples and flush; ``None`` partition lets Kafka choose.

    ``on_delivered`` sees each message the broker acknowledged (with its partition and offset);
    ``config`` adds librdkafka producer settings (``linger.ms`` ...). Returns the number sent;
    raises ``BrokerUnavailable`` if any delivery failed.
    """
    producer = Producer({**_client_config(bootstrap_servers, security), **(config or {})})
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error)
        elif on_delivered is not None:
            on_delivered(message)

    sent = 0
    deadline = time.monotonic() + timeout_s
    for key, value, partition in messages:
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:  # local queue full: let deliveries drain
                if time.monotonic() > deadline:
                    raise _unavailable(
                        bootstrap_servers, "produce queue full", TimeoutError()
                    ) from None
                producer.poll(0.1)
        sent += 1
        producer.poll(0)
    remaining = producer.flush(max(0.0, deadline - time.monotonic()))
    if remaining or failures:
        detail = failures[0] if failures else f"{remaining} undelivered after {timeout_s} s"
        raise _unavailable(bootstrap_servers, f"producing to {topic!r}", RuntimeError(detail))
    return sent
