"""Streams: ``ingest_stream`` from Kafka (Tansu) and Redis Streams killed right after a batch was
acknowledged, a random fraction into the next one (reading, appending, committing or
acknowledging), or anywhere; then rerun.

Truth: the messages the trial produced (each payload unique). After any kill, each partition's
committed position is exactly its last row in bronze, bronze holds every offset up to it and
no further, and the broker was told no more than the warehouse committed (acknowledged only
after the commit). After the reruns every message is in bronze exactly once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from math import ceil
from pathlib import Path
from typing import Any

import pytest
import redis

from medallion_platform.connectors.streams.kafka import KafkaSource, create_topic
from medallion_platform.connectors.streams.kafka import produce as kafka_produce
from medallion_platform.connectors.streams.redis_streams import committed_key
from medallion_platform.connectors.streams.redis_streams import produce as redis_produce
from medallion_platform.devkit.brokers.redis_server import RedisServer
from medallion_platform.devkit.brokers.tansu import TansuBroker
from medallion_platform_tests.faults.children import Job
from medallion_platform_tests.faults.harness import Trial, draw_plan, query, reading, trial_seeds

TABLE = "events"
PARTITIONS = 3


def _messages(trial: Trial, n: int) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"cus_{i % 97:04d}".encode(),
            json.dumps({"event_id": f"ev-{trial.outcome.seed}-{i:06d}"}).encode(),
        )
        for i in range(n)
    ]


def _check_positions(
    trial: Trial,
    warehouse: Path,
    name: str,
    order: dict[str, list[str]],
    acknowledged: dict[str, str],
    when: str,
) -> None:
    """Per partition: bronze holds exactly the offsets up to the committed position, and the
    broker's acknowledged position is not past it."""
    with reading(warehouse) as q:
        positions = dict(
            q("SELECT key, position FROM _meta.positions WHERE source = ?", [f"stream:{name}"])
        )
        # Bronze types positions (BIGINT partition; Kafka offsets BIGINT, Redis entry IDs
        # text); _meta.positions and the broker's order name them as text.
        rows = q(f"SELECT _partition::VARCHAR, _offset::VARCHAR FROM bronze.{TABLE}")
    landed: dict[str, list[str]] = {}
    for partition, offset in rows:
        landed.setdefault(partition, []).append(offset)
    for partition, offsets in order.items():
        rank = {offset: n for n, offset in enumerate(offsets)}
        position = positions.get(partition)
        upto = rank[position] + 1 if position is not None else 0
        held = landed.get(partition, [])
        trial.expect(
            sorted(held, key=lambda o: rank.get(o, -1)) == offsets[:upto],
            f"{when}: partition {partition} holds {len(held)} rows ({len(set(held))} offsets), "
            f"its position {position} covers {upto}",
        )
        acked = acknowledged.get(partition)
        if acked is not None:
            trial.expect(
                position is not None and rank[acked] <= rank[position],
                f"{when}: partition {partition} acknowledged {acked}, committed only {position}",
            )


def _trial(
    trial: Trial,
    warehouse: Path,
    job: Job,
    messages: int,
    batch: int,
    name: str,
    order: dict[str, list[str]],
    acknowledged: Callable[[], dict[str, str]],
) -> None:
    """Kill, check, maybe kill the rerun too, rerun; ``acknowledged`` reads the broker side."""
    plan = trial.first_plan({"acknowledged": ceil(messages / batch)}, timer_s=0.3)
    if trial.run(job, plan).status == "killed":
        _check_positions(trial, warehouse, name, order, acknowledged(), "after the kill")
        if trial.second_crash():
            again = draw_plan(trial.rng, {"acknowledged": 1}, timer_s=0.2)
            if trial.run(job, again).status == "killed":
                _check_positions(
                    trial, warehouse, name, order, acknowledged(), "after the second kill"
                )
    trial.run(job)
    _check_positions(trial, warehouse, name, order, acknowledged(), "at the end")


def _account(trial: Trial, warehouse: Path, produced: list[tuple[bytes, bytes]]) -> None:
    trial.account(
        [v.decode() for _, v in produced],
        [p for (p,) in query(warehouse, f"SELECT payload FROM bronze.{TABLE}")],
    )


@pytest.mark.parametrize("seed", trial_seeds())
def test_kafka_ingest_killed_then_rerun_loses_and_doubles_nothing(
    seed: int, tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    with Trial("kafka", seed) as trial:
        servers = kafka_broker.bootstrap_servers
        topic = f"faults-{seed}-{uuid.uuid4().hex[:8]}"
        create_topic(servers, topic, PARTITIONS)
        produced = _messages(trial, trial.rng.randint(800, 1_500))
        kafka_produce(servers, topic, [(k, v, i % PARTITIONS) for i, (k, v) in enumerate(produced)])
        order = {
            str(p): [str(o) for o in range(len(produced[p::PARTITIONS]))] for p in range(PARTITIONS)
        }
        batch = trial.rng.choice([250, 400])
        warehouse = tmp_path / "warehouse.duckdb"
        params: dict[str, Any] = {
            "broker": "kafka",
            "name": topic,
            "topic": topic,
            "servers": servers,
            "group": topic,
            "table": TABLE,
            "batch_size": batch,
        }
        probe = KafkaSource(topic, topic, bootstrap_servers=servers, group_id=topic)
        try:
            _trial(
                trial,
                warehouse,
                Job("stream", str(warehouse), params),
                len(produced),
                batch,
                topic,
                order,
                probe.committed,
            )
        finally:
            probe.close()
        _account(trial, warehouse, produced)
        trial.assert_clean()


@pytest.mark.parametrize("seed", trial_seeds())
def test_redis_ingest_killed_then_rerun_loses_and_doubles_nothing(
    seed: int, tmp_path: Path, redis_server: RedisServer
) -> None:
    with Trial("redis", seed) as trial:
        stream = f"faults-{seed}-{uuid.uuid4().hex[:8]}"
        produced = _messages(trial, trial.rng.randint(1_000, 2_000))
        ids = redis_produce(redis_server.url, stream, produced)
        order = {"0": ids}
        batch = trial.rng.choice([200, 300, 500])
        warehouse = tmp_path / "warehouse.duckdb"
        params = {
            "broker": "redis",
            "name": stream,
            "topic": stream,
            "url": redis_server.url,
            "table": TABLE,
            "batch_size": batch,
        }
        probe = redis.Redis.from_url(redis_server.url)

        def acknowledged() -> dict[str, str]:
            raw = probe.get(committed_key(stream))
            return {"0": raw.decode()} if raw else {}

        try:
            _trial(
                trial,
                warehouse,
                Job("stream", str(warehouse), params),
                len(produced),
                batch,
                stream,
                order,
                acknowledged,
            )
        finally:
            probe.close()
        _account(trial, warehouse, produced)
        trial.assert_clean()
