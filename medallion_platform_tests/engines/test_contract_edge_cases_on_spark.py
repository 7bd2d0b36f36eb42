"""Contract edge cases agree across engines: change logs (SCD1 with deletes removed or
flagged, truncates, SCD2 history, late changes), JSON read inside messages, stream
tombstones, redeliveries, and what Spark refuses.

Each case is hand-written bronze in two batches (so the second run merges with what the
first committed) applied by DuckDB's ``apply_contract`` and by Spark's, compared table by
table and by the run statistics the silver asset reports. Each case also asserts the
outcome the edge case is about, so agreement on a wrong answer cannot pass.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from medallion_platform.config import platform_config
from medallion_platform.contracts import Contract, apply_contract
from medallion_platform.contracts.spark import apply_contract_spark
from medallion_platform.engines.duckdb_lake import export_bronze
from medallion_platform.engines.lake import Lake
from medallion_platform_tests.engines.compare import contract_differences

CDC_COLUMNS = {"op": "VARCHAR", "key": "VARCHAR", "after": "VARCHAR", "commit_lsn": "BIGINT",
               "seq": "BIGINT", "commit_ts": "TIMESTAMPTZ"}  # fmt: skip
STREAM_COLUMNS = {"payload": "VARCHAR", "_tombstone": "BOOLEAN", "_parse_error": "VARCHAR"}
STATS = ("rows_in", "valid", "quarantined", "inserted", "updated", "superseded", "deleted",
         "tombstones", "reasons", "rows_by_day", "from_batch_id", "to_batch_id",
         "rebuilt")  # fmt: skip


def change(op: str, lsn: int, seq: int, key: dict, after: dict | str | None = None) -> dict:
    """A change-log row as CDC capture writes it (``after`` as JSON text, or broken text)."""
    return {
        "op": op,
        "key": json.dumps(key),
        "after": after if after is None or isinstance(after, str) else json.dumps(after),
        "commit_lsn": lsn,
        "seq": seq,
        "commit_ts": f"2026-03-01 00:00:{lsn % 60:02d}+00",
    }


def message(payload: dict | str | None) -> dict:
    """A stream message: a JSON payload, broken text, or a tombstone (None)."""
    text = payload if payload is None or isinstance(payload, str) else json.dumps(payload)
    return {"payload": text, "_tombstone": payload is None, "_parse_error": None}


def both_engines(
    conn: duckdb.DuckDBPyConnection,
    lake: Lake,
    engine,
    contract: Contract,
    columns: dict[str, str],
    batches: list[list[dict]],
) -> list[tuple]:
    """Load each batch into bronze, apply the contract on DuckDB and on Spark; the runs'
    statistics (DuckDB's, Spark's) per batch."""
    cols = ", ".join(f"{c} {t}" for c, t in columns.items())
    conn.execute("CREATE SCHEMA IF NOT EXISTS bronze")
    conn.execute(
        f"CREATE TABLE bronze.{contract.source} (_batch_id BIGINT, _source VARCHAR, "
        f"_row_number BIGINT, _ingested_at TIMESTAMPTZ, {cols})"
    )
    runs = []
    for batch_id, rows in enumerate(batches, start=1):
        for n, row in enumerate(rows, start=1):
            conn.execute(
                f"INSERT INTO bronze.{contract.source} VALUES (?, ?, ?, now(), "
                f"{', '.join('?' * len(columns))})",
                [batch_id, f"{contract.source}@{batch_id}:{n}", n, *(row[c] for c in columns)],
            )
        duck = apply_contract(conn, contract)
        assert export_bronze(conn, lake, contract.source) == [batch_id]
        runs.append((duck, apply_contract_spark(engine, contract)))
    return runs


def assert_agree(conn, lake, contract, runs) -> None:
    found = contract_differences(conn, lake, contract)
    assert found == {table: [] for table in found}
    for duck, spark in runs:
        assert {s: getattr(spark, s) for s in STATS} == {s: getattr(duck, s) for s in STATS}


@pytest.fixture
def setup(spark, tmp_path):
    from medallion_platform.engines.spark import SparkEngine

    conn = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    lake = Lake(tmp_path / "lake")
    yield conn, lake, SparkEngine(spark, lake)
    conn.close()


CUSTOMERS = Contract.model_validate(
    {
        "name": "customers",
        "description": "current customers, every version in customers_history",
        "source": "app_customers",
        "business_key": ["customer_id"],
        "changes": {"deletes": "remove", "history": "customers_history"},
        "columns": [
            {"name": "customer_id", "source": "key", "json_path": "$.id", "pattern": "cus_[0-9]+"},
            {
                "name": "email",
                "source": "after",
                "json_path": "$.email",
                "required": True,
                "pattern": "[^@ ]+@[^@ ]+",
            },
            {"name": "segment", "source": "after", "json_path": "$.segment"},
            {"name": "score", "source": "after", "json_path": "$.score", "type": "double"},
            {
                "name": "updated_at",
                "source": "after",
                "json_path": "$.updated_at",
                "type": "timestamptz",
                "required": True,
            },
        ],
    }
)


def customer(n: int, email: str, segment: str | None = "casual", **more) -> dict:
    return {"email": email, "segment": segment, "updated_at": "2026-03-01T10:00:00+02:00",
            "score": 1.50, **more}  # fmt: skip


def test_change_log_scd1_and_history_agree(setup) -> None:
    conn, lake, engine = setup
    c1, c2, c3, c4, c5 = ({"id": f"cus_{n}"} for n in range(1, 6))
    batches = [
        [
            change("r", 10, 1, c1, customer(1, "one@acme.test")),
            change("r", 10, 2, c2, customer(2, "two@acme.test")),
            change("c", 20, 1, c3, customer(3, "three@acme.test", None)),
            change("u", 30, 1, c1, customer(1, "one@acme.test", "pro", score=2)),
            change("d", 40, 1, c2),  # a delete carries its key only
            change("u", 50, 1, c3, customer(3, "not-an-email")),  # quarantined
            change("c", 60, 1, c4, '{"email": "four@acme.test", '),  # broken JSON
            change("d", 61, 1, {"other": 1}),  # a delete without its key
        ],
        [
            # Late: older than the stored version (30), arriving after it. Current state
            # keeps 30; history gains a version between 10 and 30.
            change("u", 25, 1, c1, customer(1, "one@acme.test", "bargain_hunter")),
            change("c", 70, 1, c2, customer(2, "two.again@acme.test")),  # back after delete
            change("u", 90, 1, c3, customer(3, "three@acme.test", "pro", score="1e3")),
            change("c", 95, 1, c5, customer(5, "five@acme.test", score="high")),  # bad double
            change("c", 95, 2, c5, customer(5, "five@acme.test")),
        ],
    ]
    runs = both_engines(conn, lake, engine, CUSTOMERS, CDC_COLUMNS, batches)
    assert_agree(conn, lake, CUSTOMERS, runs)
    current = dict(conn.execute("SELECT customer_id, segment FROM silver.customers").fetchall())
    assert current == {"cus_1": "pro", "cus_2": "casual", "cus_3": "pro", "cus_5": "casual"}
    versions = conn.execute(
        "SELECT _commit_lsn, _op, is_current FROM silver.customers_history "
        "WHERE customer_id = 'cus_1' ORDER BY _commit_lsn"
    ).fetchall()
    assert versions == [(10, "r", False), (25, "u", False), (30, "u", True)]
    reasons = {r for (r,) in conn.execute("SELECT _reason FROM quarantine.customers").fetchall()}
    assert "email: 'not-an-email' does not match the expected pattern" in reasons
    assert any("after is not valid JSON" in r for r in reasons)
    assert "customer_id: required value is missing" in reasons
    assert "score: cannot parse 'high' as double" in reasons
    # cus_2 was created and deleted within run 1 (never stored): inserted, not deleted, by
    # run 2; the late cus_1 version updates nothing.
    assert [(d.inserted, d.updated, d.deleted) for d, _ in runs] == [(2, 0, 0), (2, 1, 0)]


ORDERS = Contract.model_validate(
    {
        "name": "orders",
        "description": "current orders; deletes and truncates flagged",
        "source": "app_orders",
        "business_key": ["order_id"],
        "changes": {"deletes": "flag"},
        "columns": [
            {"name": "order_id", "source": "key", "json_path": "$.id"},
            {"name": "status", "source": "after", "json_path": "$.status", "required": True},
            {
                "name": "total",
                "source": "after",
                "json_path": "$.total",
                "type": "decimal(12,2)",
                "required": True,
                "min": 0,
            },
            {"name": "lines", "source": "after", "json_path": "$.lines", "type": "integer"},
        ],
    }
)


def test_flagged_deletes_and_truncate_agree(setup) -> None:
    conn, lake, engine = setup
    o1, o2, o3, o4 = ({"id": f"ord_{n}"} for n in range(1, 5))
    batches = [
        [
            change("c", 10, 1, o1, {"status": "placed", "total": "10.00", "lines": "2"}),
            change("c", 11, 1, o2, {"status": "placed", "total": 20.5, "lines": "3.0"}),
            change("u", 12, 1, o1, {"status": "paid", "total": "10.00", "lines": 2}),
            change("d", 13, 1, o2),  # flagged, keeping its last values
            change("u", 14, 1, o1, {"status": "paid", "total": "-1", "lines": 2}),  # < min
        ],
        [
            change("c", 20, 1, o3, {"status": "placed", "total": "5.5", "lines": "1.5"}),
            change("c", 21, 1, o3, {"status": "placed", "total": "5.50", "lines": 1}),
            change("t", 30, 1, {}),  # ends every row older than itself
            change("u", 35, 1, o1, {"status": "shipped", "total": "10.00", "lines": 2}),
            change("c", 40, 1, o4, {"status": "placed", "total": "12.999", "lines": 1}),
        ],
    ]
    runs = both_engines(conn, lake, engine, ORDERS, CDC_COLUMNS, batches)
    assert_agree(conn, lake, ORDERS, runs)
    rows = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT order_id, status, _deleted, _op FROM silver.orders ORDER BY 1"
        ).fetchall()
    }
    assert rows == {
        "ord_1": ("shipped", False, "u"),  # changed after the truncate: live again
        "ord_2": ("placed", True, "d"),  # deleted before it, keeping its last values
        "ord_3": ("placed", True, "t"),  # older than the truncate: flagged by it
    }
    assert runs[1][0].deleted == 1  # ord_3, by the truncate


EVENTS = platform_config().contract("events")


def event(n: int, day: str, **more) -> dict:
    return {"event_id": f"evt_{n:016x}", "event_type": "page_view", "anonymous_id": f"a{n}",
            "channel": "organic", "occurred_at": f"{day}T23:59:59.5+00:00", **more}  # fmt: skip


def test_stream_json_redeliveries_and_skipped_tombstones_agree(setup) -> None:
    conn, lake, engine = setup
    batches = [
        [
            message(event(1, "2026-03-01")),
            message(
                event(
                    2,
                    "2026-03-02",
                    event_type="purchase",
                    order_id="o1",
                    revenue=59.99,
                    currency="USD",
                )
            ),
            message(None),  # a tombstone: skipped and counted, never quarantined
            message('{"event_id": "evt_00000000000000ff", "event_type": '),  # truncated JSON
            message(event(3, "2026-03-02", event_type="purchase")),  # no order: rule fails
            message(event(4, "2026-03-02", occurred_at="yesterday")),
        ],
        [
            message(event(1, "2026-03-01", channel="email")),  # a redelivery: the first stays
            message(event(5, "2026-02-27")),  # late: lands in its own (old) day
            message(event(6, "2026-03-03", revenue="1e-7")),
            message(None),
        ],
    ]
    runs = both_engines(conn, lake, engine, EVENTS, STREAM_COLUMNS, batches)
    assert_agree(conn, lake, EVENTS, runs)
    assert conn.execute(
        "SELECT channel FROM silver.events WHERE event_id = 'evt_0000000000000001'"
    ).fetchall() == [("organic",)]
    assert [(d.tombstones, d.quarantined) for d, _ in runs] == [(1, 3), (1, 1)]
    assert runs[1][0].rows_by_day == {"2026-02-27": 1}


PROFILES = Contract.model_validate(
    {
        "name": "profiles",
        "description": "a compacted stream of profiles: a tombstone deletes its key",
        "source": "profile_stream",
        "business_key": ["profile_id"],
        "tombstones": "delete",
        "columns": [
            {"name": "profile_id", "source": "_key"},
            {"name": "plan", "source": "payload", "json_path": "$.plan", "required": True},
        ],
    }
)


def test_tombstones_that_delete_agree(setup) -> None:
    conn, lake, engine = setup

    def msg(key: str, plan: str | None) -> dict:
        return {**message(None if plan is None else {"plan": plan}), "_key": key}

    columns = {**STREAM_COLUMNS, "_key": "VARCHAR"}
    batches = [
        [msg("p1", "free"), msg("p2", "pro"), msg("p3", "free"), msg("p3", None)],
        [msg("p1", None), msg("p2", "team"), msg("p3", "pro"), msg("p4", None)],
    ]
    runs = both_engines(conn, lake, engine, PROFILES, columns, batches)
    assert_agree(conn, lake, PROFILES, runs)
    assert dict(conn.execute("SELECT profile_id, plan FROM silver.profiles").fetchall()) == {
        "p2": "team",  # updated
        "p3": "pro",  # deleted in batch 1, back in batch 2
    }
    assert runs[1][0].deleted == 1  # p1 (p4 never existed)


def test_snapshot_feeds_are_refused_clearly(setup) -> None:
    _, _, engine = setup
    products = platform_config().contract("products").model_copy(update={"mode": "snapshot"})
    with pytest.raises(
        NotImplementedError, match=r"products: snapshot feeds .* keep this contract"
    ):
        apply_contract_spark(engine, products)
