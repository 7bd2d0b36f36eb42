"""Event streams (Kafka, Redis Streams): read after committed positions, exactly once."""

from medallion_platform.connectors.streams.base import (
    BrokerUnavailable,
    PositionPastEnd,
    Positions,
    StreamMessage,
    StreamSource,
)
from medallion_platform.connectors.streams.ingest import StreamIngestReport, ingest_stream

__all__ = [
    "BrokerUnavailable",
    "PositionPastEnd",
    "Positions",
    "StreamIngestReport",
    "StreamMessage",
    "StreamSource",
    "ingest_stream",
]
