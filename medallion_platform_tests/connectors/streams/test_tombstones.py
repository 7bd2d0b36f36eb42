"""A contract's tombstone policy, over a compacted-topic-like stream that kafka-python sends to
the real Tansu broker: customer profiles keyed by the message key, new versions, tombstones
(null values), keys that come back, malformed values and a tombstone with an empty key.

The expected silver table is computed in plain Python, as Kafka's log compaction would leave
the topic: per key, the last valid record in offset order, and none if it is a tombstone.
"""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from medallion_platform.connectors.streams import ingest_stream
from medallion_platform.connectors.streams.kafka import KafkaSource, create_topic
from medallion_platform.contracts import Contract, apply_contract
from medallion_platform.devkit.brokers.tansu import TansuBroker
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.connectors.streams.foreign_producer import Record, send

pytest.importorskip("kafka")

COLUMNS = [
    {"name": "customer_id", "source": "_key", "pattern": "cus_[0-9]{4}"},
    {"name": "email", "source": "payload", "json_path": "$.email", "required": True},
    {"name": "tier", "source": "payload", "json_path": "$.tier"},
]


def profiles_contract(tombstones: str) -> Contract:
    return Contract(
        name="customer_profiles",
        description="The latest profile of each customer (a compacted topic).",
        source="profiles",
        business_key=["customer_id"],
        tombstones=tombstones,
        columns=COLUMNS,
    )


def rounds(seed: int = 3) -> list[list[tuple[bytes | None, bytes | None, list, None]]]:
    """Three rounds of versions, tombstones and warts over 40 customers."""
    rng = random.Random(seed)
    out = []
    for r in range(3):
        batch: list[tuple[bytes | None, bytes | None, list, None]] = []
        for i in range(300):
            key = f"cus_{rng.randrange(40):04d}".encode()
            roll = rng.random()
            if roll < 0.25:
                batch.append((key, None, [("reason", b"erased")], None))
            elif roll < 0.28:
                batch.append((key, b"{not json", [], None))  # malformed: quarantined
            else:
                profile = {
                    "email": f"{key.decode()}+{r}.{i}@example.com",
                    "tier": rng.choice("abc"),
                }
                batch.append((key, json.dumps(profile).encode(), [], None))
        batch.append((b"", None, [], None))  # a tombstone with an empty key (none can be null)
        out.append(batch)
    return out


def compacted(sent: list[Record], state: dict[str, tuple]) -> dict[str, tuple]:
    """What log compaction keeps, applying ``sent`` (in offset order per key) to ``state``."""
    state = dict(state)
    for record in sent:
        if not record.key:
            continue
        key = record.key.decode()
        if record.value is None:
            state.pop(key, None)
            continue
        try:
            profile = json.loads(record.value)
        except json.JSONDecodeError:
            continue
        state[key] = (profile["email"], profile["tier"])
    return state


def silver(warehouse: Warehouse) -> dict[str, tuple]:
    with warehouse.connect() as conn:
        got = conn.execute("SELECT customer_id, email, tier FROM silver.customer_profiles")
        return {k: (e, t) for k, e, t in got.fetchall()}


def quarantine(warehouse: Warehouse) -> dict[str, str]:
    """``_source`` (``profiles[partition]@offset``) → reason."""
    with warehouse.connect() as conn:
        sql = "SELECT _source, _reason FROM quarantine.customer_profiles"
        return dict(conn.execute(sql).fetchall())


def where(record: Record) -> str:
    return f"profiles[{record.partition}]@{record.offset}"


def test_delete_removes_the_key_like_log_compaction_and_a_rebuild_agrees(
    kafka_broker: TansuBroker, warehouse: Warehouse
) -> None:
    contract = profiles_contract("delete")
    servers = kafka_broker.bootstrap_servers
    create_topic(servers, "profiles-delete", 2)
    expected: dict[str, tuple] = {}
    deleted_total = 0
    all_sent: list[Record] = []
    with KafkaSource("profiles", "profiles-delete", bootstrap_servers=servers, group_id="p") as src:
        for batch in rounds():
            sent = send(servers, "profiles-delete", batch, compression="lz4")
            all_sent += sent
            before, expected = expected, compacted(sent, expected)
            ingest_stream(warehouse, "profiles", src, batch_size=128)
            with warehouse.transaction() as conn:
                stats = apply_contract(conn, contract)
            assert silver(warehouse) == expected
            keyed_tombstones = sum(r.value is None and bool(r.key) for r in sent)
            assert stats.tombstones == keyed_tombstones
            assert stats.deleted == len(set(before) - set(expected))  # keys that were there
            deleted_total += stats.deleted
    assert deleted_total > 0 and 0 < len(expected) < 40
    # Quarantined: the malformed values, and the tombstones without a key (nothing to
    # delete); a tombstone with its key never is.
    reasons = quarantine(warehouse)
    keyless = {where(r) for r in all_sent if r.value is None and not r.key}
    malformed = {where(r) for r in all_sent if r.value == b"{not json"}
    assert set(reasons) == keyless | malformed and len(keyless) == 3
    assert all(reasons[s] == "customer_id: required value is missing" for s in keyless)
    assert all("payload is not valid JSON" in reasons[s] for s in malformed)

    with warehouse.transaction() as conn:
        apply_contract(conn, contract, rebuild=True)
    assert silver(warehouse) == expected


def test_skip_counts_tombstones_and_keeps_the_last_version(
    kafka_broker: TansuBroker, warehouse: Warehouse
) -> None:
    contract = profiles_contract("skip")
    servers = kafka_broker.bootstrap_servers
    create_topic(servers, "profiles-skip", 2)
    sent = [r for batch in rounds() for r in send(servers, "profiles-skip", batch)]
    with KafkaSource("profiles", "profiles-skip", bootstrap_servers=servers, group_id="p") as src:
        ingest_stream(warehouse, "profiles", src)
    with warehouse.transaction() as conn:
        stats = apply_contract(conn, contract)
    versions = compacted([r for r in sent if r.value is not None], {})
    assert silver(warehouse) == versions
    assert stats.tombstones == sum(r.value is None for r in sent)  # the keyless ones too
    assert stats.deleted == 0
    assert set(quarantine(warehouse)) == {where(r) for r in sent if r.value == b"{not json"}
    assert stats.rows_in == stats.valid + stats.quarantined + stats.tombstones == len(sent)


@pytest.mark.parametrize(
    "change",
    [
        {"columns": [{**COLUMNS[0], "source": "payload", "json_path": "$.id"}, *COLUMNS[1:]]},
        {"keep": "first"},
        {"latest_by": ["email"]},
    ],
    ids=["key from the payload", "keep first", "latest_by"],
)
def test_delete_needs_the_message_key_and_arrival_order(change: dict) -> None:
    spec = profiles_contract("delete").model_dump() | change
    with pytest.raises(ValidationError, match="tombstones: delete removes a message key"):
        Contract(**spec)
