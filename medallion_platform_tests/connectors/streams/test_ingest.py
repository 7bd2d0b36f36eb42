"""Streams into bronze, exactly once, against real brokers (redis-server and Tansu)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medallion_platform.connectors.streams import BrokerUnavailable, ingest_stream
from medallion_platform.connectors.streams.ingest import BronzeLayoutError, load_positions
from medallion_platform.connectors.streams.kafka import KafkaSource, create_topic
from medallion_platform.connectors.streams.kafka import produce as kafka_produce
from medallion_platform.connectors.streams.redis_streams import RedisStreamSource
from medallion_platform.connectors.streams.redis_streams import produce as redis_produce
from medallion_platform.contracts import apply_contract
from medallion_platform.devkit.brokers.redis_server import RedisServer
from medallion_platform.devkit.brokers.tansu import TansuBroker
from medallion_platform.warehouse.warehouse import table_columns
from medallion_platform_tests.connectors.streams.foreign_producer import click_event as _click
from medallion_platform_tests.connectors.streams.foreign_producer import send

TABLE = "events"


def events(n: int, start: int = 0) -> list[tuple[bytes | None, bytes]]:
    """Clickstream-like JSON; every 50th re-sends the previous event (at-least-once), every
    200th is not JSON, every 500th is binary."""
    out: list[tuple[bytes | None, bytes]] = []
    for i in range(start, start + n):
        if i % 500 == 499:
            out.append((None, bytes([0, 255, 1, 254]) * 8))
        elif i % 200 == 199:
            out.append((None, b"{not json"))
        elif i % 50 == 49 and out:
            out.append(out[-1])
        else:
            body = {"event_id": f"ev_{i:07d}", "type": "page_view", "ts": 1_759_276_800 + i}
            out.append((f"cus_{i % 97:06d}".encode(), json.dumps(body).encode()))
    return out


def _count(warehouse, sql: str = f"SELECT count(*) FROM bronze.{TABLE}") -> int:
    with warehouse.connect() as conn:
        return conn.execute(sql).fetchone()[0]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", persist_dir=tmp_path / "redis-data") as server:
        yield server


def test_redis_stream_lands_once_with_flags_and_positions(warehouse, redis) -> None:
    ids = redis_produce(redis.url, "clicks", events(2_000))
    source = RedisStreamSource("clicks", "clicks", url=redis.url)
    report = ingest_stream(warehouse, TABLE, source, batch_size=300)
    assert report.messages == 2_000 and report.batches == 7
    assert report.positions == {"0": ids[-1]}
    assert _count(warehouse) == 2_000
    assert _count(warehouse, f"SELECT count(DISTINCT _offset) FROM bronze.{TABLE}") == 2_000
    binary = _count(
        warehouse, f"SELECT count(*) FROM bronze.{TABLE} WHERE _parse_error LIKE 'binary payload%'"
    )
    assert binary == report.flagged == 4
    again = ingest_stream(warehouse, TABLE, source, batch_size=300)
    assert again.messages == 0 and _count(warehouse) == 2_000
    assert redis_produce(redis.url, "clicks", events(10, start=2_000))
    assert ingest_stream(warehouse, TABLE, source).messages == 10


def test_a_broker_restart_between_runs_loses_and_doubles_nothing(warehouse, redis) -> None:
    redis_produce(redis.url, "clicks", events(1_000))
    source = RedisStreamSource("clicks", "clicks", url=redis.url)
    ingest_stream(warehouse, TABLE, source, max_messages=600, batch_size=200)
    redis.restart()
    redis_produce(redis.url, "clicks", events(500, start=1_000))
    report = ingest_stream(warehouse, TABLE, RedisStreamSource("clicks", "clicks", url=redis.url))
    assert report.messages == 900
    assert _count(warehouse) == 1_500
    assert _count(warehouse, f"SELECT count(DISTINCT _offset) FROM bronze.{TABLE}") == 1_500


def test_broker_down_raises_and_commits_nothing(warehouse, redis) -> None:
    redis_produce(redis.url, "clicks", events(100))
    source = RedisStreamSource("clicks", "clicks", url=redis.url)
    ingest_stream(warehouse, TABLE, source, max_messages=40, batch_size=40)
    redis.stop()
    with pytest.raises(BrokerUnavailable):
        ingest_stream(warehouse, TABLE, source)
    assert _count(warehouse) == 40
    with warehouse.connect() as conn:
        assert len(load_positions(conn, source)) == 1
    redis.start()
    assert ingest_stream(warehouse, TABLE, source).messages == 60
    assert _count(warehouse) == 100


KILL_SCRIPT = """
import sys
from medallion_platform.connectors.streams import ingest_stream
from medallion_platform.connectors.streams.redis_streams import RedisStreamSource
from medallion_platform.warehouse import Warehouse

source = RedisStreamSource("clicks", "clicks", url=sys.argv[2])
def on_batch(batches, total):
    print(f"batch {batches} {total}", flush=True)
ingest_stream(Warehouse(sys.argv[1]), "events", source, batch_size=500, on_batch=on_batch)
print("done", flush=True)
"""


def test_a_killed_ingest_resumes_at_the_committed_offset(warehouse, redis, tmp_path) -> None:
    redis_produce(redis.url, "clicks", events(20_000))
    script = tmp_path / "ingest_child.py"
    script.write_text(KILL_SCRIPT)
    child = subprocess.Popen(
        [sys.executable, str(script), str(warehouse.path), redis.url],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in child.stdout], daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=60)
            assert line != "done\n", "the child finished before it could be killed"
            if line.startswith("batch 3 "):
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(timeout=30)
    committed = _count(warehouse)
    assert 1_500 <= committed < 20_000
    source = RedisStreamSource("clicks", "clicks", url=redis.url)
    with warehouse.connect() as conn:
        position = load_positions(conn, source)["0"]
        # The committed position is exactly the last committed row: no gap, no extra.
        last_row = conn.execute(
            f"SELECT _offset FROM bronze.{TABLE} ORDER BY _batch_id DESC, _row_number DESC LIMIT 1"
        ).fetchone()[0]
    assert position == last_row
    assert committed % 500 == 0  # whole batches only: the killed batch left nothing
    report = ingest_stream(warehouse, TABLE, source, batch_size=5_000)
    assert report.messages == 20_000 - committed
    assert _count(warehouse) == 20_000
    assert _count(warehouse, f"SELECT count(DISTINCT _offset) FROM bronze.{TABLE}") == 20_000


def test_kafka_multi_partition_topic_lands_once_per_partition(warehouse, tmp_path) -> None:
    with TansuBroker(tmp_path / "tansu") as broker:
        servers = broker.bootstrap_servers
        create_topic(servers, "clicks", 3)
        batch = [(k, v, i % 3) for i, (k, v) in enumerate(events(3_000))]
        kafka_produce(servers, "clicks", batch)
        source = KafkaSource("clicks", "clicks", bootstrap_servers=servers, group_id="medallion")
        try:
            report = ingest_stream(warehouse, TABLE, source, batch_size=400)
            assert report.messages == 3_000
            assert set(report.positions) == {"0", "1", "2"}
            assert all(int(p) == 999 for p in report.positions.values())
            kafka_produce(servers, "clicks", [(None, b'{"late": true}', 1)] * 5)
            assert ingest_stream(warehouse, TABLE, source).messages == 5
            assert source.committed() == {"0": "999", "1": "1004", "2": "999"}
        finally:
            source.close()
    per_partition = dict(
        _rows
        for _rows in _all(
            warehouse, f"SELECT _partition, count(*) FROM bronze.{TABLE} GROUP BY 1 ORDER BY 1"
        )
    )
    assert per_partition == {0: 1_000, 1: 1_005, 2: 1_000}  # BIGINT, not text


def _all(warehouse, sql: str) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(sql).fetchall()


# The stream columns of bronze before positions were typed (and before tombstones and
# headers were kept), as an existing warehouse has them.
OLD_LAYOUT = {
    "_batch_id": "BIGINT",
    "_ingested_at": "TIMESTAMP WITH TIME ZONE",
    "_source": "VARCHAR",
    "_row_number": "BIGINT",
    "_parse_error": "VARCHAR",
    "_extra_fields": "VARCHAR",
    "_stream": "VARCHAR",
    "_partition": "VARCHAR",
    "_offset": "VARCHAR",
    "_key": "VARCHAR",
    "_broker_timestamp_ms": "BIGINT",
    "_payload_bytes": "BIGINT",
    "payload": "VARCHAR",
}


def _downgrade_to_old_layout(warehouse) -> None:
    """Turn a bronze table written now back into the old layout, rows and all."""
    with warehouse.transaction() as conn:
        for column in ("_partition", "_offset"):
            conn.execute(f"ALTER TABLE bronze.{TABLE} ALTER COLUMN {column} SET DATA TYPE VARCHAR")
        for column in ("_tombstone", "_headers"):
            conn.execute(f"ALTER TABLE bronze.{TABLE} DROP COLUMN {column}")
        assert table_columns(conn, "bronze", TABLE) == OLD_LAYOUT


def test_an_old_bronze_table_with_text_positions_is_converted_by_the_next_ingest(
    warehouse, kafka_broker, config
) -> None:
    """An existing warehouse whose bronze.events has VARCHAR ``_partition``/``_offset``: the
    next ingest converts them in place (values kept), adds the new columns, resumes after the
    committed offsets, and silver carries on incrementally and equals a rebuild."""
    servers = kafka_broker.bootstrap_servers
    create_topic(servers, "old-layout", 2)
    records = [(f"anon_{i % 7}".encode(), _click(i), [], i % 2) for i in range(300)]
    send(servers, "old-layout", records[:200])
    source = KafkaSource("events", "old-layout", bootstrap_servers=servers, group_id="old")
    try:
        ingest_stream(warehouse, TABLE, source, batch_size=70)
        _downgrade_to_old_layout(warehouse)
        with warehouse.transaction() as conn:
            before = apply_contract(conn, config.contract("events"))
        assert before.inserted == 200
        old_rows = _all(warehouse, f"SELECT _partition, _offset, payload FROM bronze.{TABLE}")

        send(servers, "old-layout", [*records[200:], (b"anon_1", None, [("h", b"v")], 1)])
        report = ingest_stream(warehouse, TABLE, source, batch_size=70)
    finally:
        source.close()
    assert report.messages == 101 and report.tombstones == 1
    with warehouse.connect() as conn:
        columns = table_columns(conn, "bronze", TABLE)
        kept = conn.execute(
            f"SELECT _partition, _offset, payload FROM bronze.{TABLE} WHERE _tombstone IS NULL"
        ).fetchall()
        offsets = conn.execute(
            f"SELECT _partition, list(_offset ORDER BY _offset) FROM bronze.{TABLE} GROUP BY 1"
        ).fetchall()
        positions = load_positions(conn, source)
    assert {c: columns[c] for c in ("_partition", "_offset", "_tombstone", "_headers")} == {
        "_partition": "BIGINT",
        "_offset": "BIGINT",
        "_tombstone": "BOOLEAN",
        "_headers": "JSON",
    }
    # The old rows, values kept (NULL _tombstone: read before tombstones were told apart).
    assert sorted(kept) == sorted((int(p), int(o), v) for p, o, v in old_rows)
    assert dict(offsets) == {0: list(range(150)), 1: list(range(151))}  # no gap, no repeat
    assert positions == {"0": "149", "1": "150"}

    with warehouse.transaction() as conn:
        after = apply_contract(conn, config.contract("events"))
    assert (after.inserted, after.tombstones, after.quarantined) == (100, 1, 0)
    silver = "SELECT * FROM silver.events ORDER BY event_id"
    before_rebuild = _all(warehouse, silver)
    assert len(before_rebuild) == 300
    with warehouse.transaction() as conn:
        apply_contract(conn, config.contract("events"), rebuild=True)
    assert _all(warehouse, silver) == before_rebuild


def test_text_positions_that_are_not_integers_stop_the_conversion_and_change_nothing(
    warehouse, kafka_broker
) -> None:
    """A bronze table that held Redis entry IDs cannot take Kafka offsets: the error names the
    row, and the table, its rows and the committed positions stay as they were."""
    servers = kafka_broker.bootstrap_servers
    create_topic(servers, "not-integers", 1)
    send(servers, "not-integers", [(None, _click(i), [], 0) for i in range(5)])
    source = KafkaSource("events", "not-integers", bootstrap_servers=servers, group_id="x")
    try:
        ingest_stream(warehouse, TABLE, source, max_messages=3)
        _downgrade_to_old_layout(warehouse)
        with warehouse.transaction() as conn:
            conn.execute(
                f"UPDATE bronze.{TABLE} SET _offset = '1700000000000-0' WHERE _offset = '1'"
            )
        with pytest.raises(
            BronzeLayoutError,
            match=r"bronze.events._offset cannot become BIGINT: row events\[0\]@1 holds "
            r"'1700000000000-0'",
        ):
            ingest_stream(warehouse, TABLE, source)
        with warehouse.connect() as conn:
            assert table_columns(conn, "bronze", TABLE) == OLD_LAYOUT
            assert load_positions(conn, source) == {"0": "2"}
        assert _count(warehouse) == 3
    finally:
        source.close()
