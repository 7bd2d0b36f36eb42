"""What the platform needs from an event stream, whatever the broker (no Dagster imports).

A position is per partition: Kafka's offsets (integers as text), Redis Streams' entry IDs.
Bronze stores a Kafka offset as BIGINT and a Redis entry ID as text (``offset_type``).
``read_batch`` reads strictly after the given positions; ``latest`` reports the broker's last
position per partition without reading payloads (the sensor's cheap check); ``acknowledge``
tells the broker what the warehouse has committed, and is called only after that commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Positions = dict[str, str]
"""Partition → last position consumed (inclusive). A missing partition reads from the start."""
Headers = tuple[tuple[str | bytes, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message as read from the broker.

    A plain slotted dataclass, not a pydantic model: one is created per message on the hot
    path (a pydantic model cost about 1.9 µs a message); pydantic models stay at the config
    boundaries.
    """

    partition: str
    offset: str
    value: bytes | None
    """``None`` is a tombstone (Kafka's null value), never the same as ``b""``."""
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: Headers | None = None
    """Kafka's record headers in order (keys may repeat; a value may be null). Redis Streams
    have no headers: an entry's fields other than its payload and key come here instead."""
    error: str | None = None
    """What the broker client found wrong with the message; it is kept and flagged, and its
    ``value`` is then ``None`` without being a tombstone."""

    @property
    def tombstone(self) -> bool:
        return self.value is None and self.error is None


@dataclass(slots=True)
class MessageColumns:
    """A batch as parallel lists, one per field, in the order of ``read_batch``.

    What bronze is built from: a broker client that reads into these lists directly (Kafka's
    ``read_columns``) creates no object per message, and bronze types whole columns at once."""

    partition: list[str] | list[int] = field(default_factory=list)
    offset: list[str] | list[int] = field(default_factory=list)
    key: list[bytes | None] = field(default_factory=list)
    value: list[bytes | None] = field(default_factory=list)
    timestamp_ms: list[int | None] = field(default_factory=list)
    headers: list[Headers | None] = field(default_factory=list)
    error: list[str | None] | None = None
    """Per message, what the client found wrong (see ``StreamMessage.error``); None: nothing."""

    def __len__(self) -> int:
        return len(self.value)

    @classmethod
    def from_messages(cls, messages: list[StreamMessage]) -> MessageColumns:
        errors = [m.error for m in messages]
        return cls(
            partition=[m.partition for m in messages],
            offset=[m.offset for m in messages],
            key=[m.key for m in messages],
            value=[m.value for m in messages],
            timestamp_ms=[m.timestamp_ms for m in messages],
            headers=[m.headers for m in messages],
            error=errors if any(errors) else None,
        )

    def positions(self) -> Positions:
        """The last position per partition (messages are in order within a partition)."""
        return dict(zip(map(str, self.partition), map(str, self.offset), strict=True))


class StreamSource(Protocol):
    name: str
    offset_type: Literal["BIGINT", "VARCHAR"]
    """How bronze types ``_offset``: Kafka offsets are integers, Redis entry IDs are not."""

    def read_batch(
        self, after: Positions, max_messages: int, timeout_s: float = 1.0
    ) -> list[StreamMessage]:
        """Up to ``max_messages`` messages after ``after``, in order within each partition."""
        ...

    def latest(self) -> Positions:
        """The last position per partition that holds a message (no payloads read)."""
        ...

    def lag(self, committed: Positions) -> dict[str, int]:
        """Messages waiting after ``committed``, per partition."""
        ...

    def acknowledge(self, committed: Positions) -> None:
        """Record on the broker side what the warehouse committed (after the commit)."""
        ...

    def close(self) -> None: ...


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached; nothing was read or committed."""


class PositionPastEnd(RuntimeError):
    """A committed position lies past the end of its partition: the topic was deleted and
    recreated (an in-memory broker restarted) or its log truncated. Reading on from there
    would silently skip whatever the partition holds now, so nothing is read."""

    def __init__(self, stream: str, partitions: dict[str, str]) -> None:
        self.stream = stream
        self.partitions = partitions
        detail = "; ".join(f"partition {p}: {why}" for p, why in sorted(partitions.items()))
        super().__init__(
            f"stream {stream}: the committed position is past the end of the log ({detail}). "
            "The topic was recreated or truncated. Nothing was read or committed. To read "
            "those partitions again from their start (silver drops what it already has), set "
            "offset_reset: earliest on the stream and rerun."
        )
