"""Redis Streams as a ``StreamSource``: one stream is one partition ("0"), positions are entry IDs.

Entries carry a ``payload`` field (the message value, bytes) and an optional ``key`` field.
Redis Streams have no record headers and no null values (so no tombstones): an entry is a list
of field-value pairs. Fields other than ``payload`` and ``key`` are kept, in order, where a
Kafka record's headers go (bronze ``_headers``), so nothing a producer XADDs is dropped; an
entry without ``payload`` is kept too, flagged (bronze ``_parse_error``), not read as a
tombstone. redis-py returns an entry's fields as a dict: a field name repeated within one
entry keeps only its last value.
Reads are ``XRANGE (<after> + COUNT n``: exclusive, non-destructive and replayable, so the
warehouse's committed ID alone decides what is read next (no consumer group state to drift).
Needs Redis >= 6.2 for the exclusive ``(`` range start.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from medallion_platform.connectors.streams.base import (
    BrokerUnavailable,
    Positions,
    StreamMessage,
    StreamSource,
)

PARTITION = "0"
PAYLOAD_FIELD = b"payload"
KEY_FIELD = b"key"
COMMITTED_KEY_PREFIX = "medallion:committed:"
LAG_PAGE = 1_000
DEFAULT_LAG_CAP = 100_000
_ENTRY_ID = re.compile(r"^\d+(-\d+)?$")

T = TypeVar("T")


def committed_key(stream: str) -> str:
    """Where ``acknowledge`` records the warehouse's committed ID, for operators to inspect."""
    return f"{COMMITTED_KEY_PREFIX}{stream}"


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """``"1700000000000-3"`` → ``(1700000000000, 3)``; IDs compare as this tuple, not as text."""
    if not _ENTRY_ID.match(entry_id):
        raise ValueError(f"not a Redis stream entry ID: {entry_id!r}")
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _client(
    url: str,
    password: str | None,
    connect_timeout_s: float,
    socket_timeout_s: float,
) -> redis.Redis:
    # One quick retry only: the default exponential backoff would stall a sensor for seconds
    # before it learns the broker is down. A password in the URL wins over ``password``.
    pool = redis.ConnectionPool.from_url(
        url,
        password=password,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        retry=Retry(ConstantBackoff(0.1), retries=1),
    )
    return redis.Redis(connection_pool=pool)


def _address(client: redis.Redis) -> str:
    """``host:port`` for error messages: never the URL, which may carry a password."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _call(client: redis.Redis, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; connection trouble (refused, timeout, AUTH, loading) → ``BrokerUnavailable``."""
    try:
        return fn()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # redis-py's messages name host:port and errno, never the password (AUTH failures and
        # -LOADING during an AOF replay are ConnectionError subclasses too).
        raise BrokerUnavailable(
            f"Redis at {_address(client)} unavailable during {what}: {type(exc).__name__}: {exc}"
        ) from exc


def produce(
    url: str,
    stream: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    password: str | None = None,
) -> list[str]:
    """XADD ``(key, payload)`` pairs in order (pipelined); returns the entry IDs. Tests and demo."""
    client = _client(url, password, connect_timeout_s=2.0, socket_timeout_s=10.0)
    try:

        def add_all() -> list[str]:
            pipe = client.pipeline(transaction=False)
            for key, payload in messages:
                fields: dict[bytes, bytes] = {PAYLOAD_FIELD: payload}
                if key is not None:
                    fields[KEY_FIELD] = key
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            return [entry_id.decode() for entry_id in pipe.execute()]

        return _call(client, "XADD", add_all)
    finally:
        client.close()


class RedisStreamSource(StreamSource):
    """Reads one Redis stream; the warehouse, not this object, owns the committed position."""

    offset_type: Literal["BIGINT", "VARCHAR"] = "VARCHAR"  # entry IDs ("<ms>-<seq>")

    def __init__(
        self,
        name: str,
        stream: str,
        *,
        url: str,
        password: str | None = None,
        connect_timeout_s: float = 2.0,
        socket_timeout_s: float = 5.0,
        lag_cap: int = DEFAULT_LAG_CAP,
    ) -> None:
        self.name = name
        self.stream = stream
        self.lag_cap = lag_cap
        self._socket_timeout_s = socket_timeout_s
        self._client = _client(url, password, connect_timeout_s, socket_timeout_s)

    @property
    def address(self) -> str:
        return _address(self._client)

    def read_batch(
        self, after: Positions, max_messages: int, timeout_s: float = 1.0
    ) -> list[StreamMessage]:
        """XRANGE after the position; if nothing is there, block on XREAD up to ``timeout_s``."""
        if max_messages <= 0:
            return []
        position = after.get(PARTITION)
        if position is not None:
            parse_entry_id(position)
        start = f"({position}" if position is not None else "-"

        def read() -> list[tuple[bytes, dict[bytes, bytes]]]:
            entries = self._client.xrange(self.stream, min=start, max="+", count=max_messages)
            if entries or timeout_s <= 0:
                return entries
            # Stay under the socket timeout, and never 0 ms (which would block forever).
            block_ms = max(1, int(min(timeout_s, self._socket_timeout_s * 0.8) * 1000))
            reply = self._client.xread(
                {self.stream: position or "0-0"}, count=max_messages, block=block_ms
            )
            return reply[0][1] if reply else []

        entries = _call(self._client, "XRANGE", read)
        return [self._message(entry_id, fields) for entry_id, fields in entries]

    def latest(self) -> Positions:
        """The newest entry's ID (XREVRANGE + - COUNT 1); empty when the stream has none."""
        entries = _call(
            self._client,
            "XREVRANGE",
            lambda: self._client.xrevrange(self.stream, max="+", min="-", count=1),
        )
        return {PARTITION: entries[0][0].decode()} if entries else {}

    def lag(self, committed: Positions) -> dict[str, int]:
        """Entries after the committed ID; exact up to ``lag_cap``, then ``lag_cap`` (a floor).

        Redis has no O(1) "rank of an ID", and ``entries-added`` counts deleted/trimmed entries
        too, so the middle case counts by paging XRANGE. Cheap exact cases first: nothing
        committed or committed before the first entry → XLEN; at or past the last entry → 0.
        """
        position = committed.get(PARTITION)

        def count() -> int:
            length = self._client.xlen(self.stream)
            if length == 0:
                return 0
            if position is None:
                return length
            mark = parse_entry_id(position)
            first = self._client.xrange(self.stream, min="-", max="+", count=1)
            last = self._client.xrevrange(self.stream, max="+", min="-", count=1)
            if mark < parse_entry_id(first[0][0].decode()):
                return length
            if mark >= parse_entry_id(last[0][0].decode()):
                return 0
            counted, start = 0, f"({position}"
            while counted < self.lag_cap:
                page = self._client.xrange(
                    self.stream, min=start, max="+", count=min(LAG_PAGE, self.lag_cap - counted)
                )
                counted += len(page)
                if len(page) < LAG_PAGE:
                    break
                start = f"({page[-1][0].decode()}"
            return min(counted, self.lag_cap)

        return {PARTITION: _call(self._client, "XLEN/XRANGE", count)}

    def acknowledge(self, committed: Positions) -> None:
        """SET ``medallion:committed:<stream>``: informational for operators, never read back."""
        position = committed.get(PARTITION)
        if position is None:
            return
        parse_entry_id(position)
        _call(self._client, "SET", lambda: self._client.set(committed_key(self.stream), position))

    def close(self) -> None:
        self._client.close()

    def _message(self, entry_id: bytes, fields: dict[bytes, bytes]) -> StreamMessage:
        offset = entry_id.decode()
        others = tuple((k, v) for k, v in fields.items() if k not in (PAYLOAD_FIELD, KEY_FIELD))
        error = None
        if PAYLOAD_FIELD not in fields:
            # Kept and flagged (silver quarantines it), never skipped: the position passes it.
            error = f"entry {offset} of stream {self.stream!r} has no 'payload' field"
        return StreamMessage(
            partition=PARTITION,
            offset=offset,
            key=fields.get(KEY_FIELD),
            value=fields.get(PAYLOAD_FIELD),
            timestamp_ms=parse_entry_id(offset)[0],
            headers=others or None,
            error=error,
        )
