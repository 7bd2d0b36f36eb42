"""Bronze rows of API records, column by column, against the per-record reference.

``bronze_rows`` replaced, for speed, a loop that flattened each record with
``flatten_object`` and built the table with ``records_table``; both stay (the files connector
uses them), so every table it builds here must equal theirs, value for value and column for
column, whatever the records hold.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import pyarrow as pa

from medallion_platform.connectors.files.readers import flatten_object, records_table
from medallion_platform.connectors.rest.pager import _fingerprint
from medallion_platform.connectors.rest.rows import bronze_rows, raw_json


def reference(records: list[dict[str, Any]], required: list[str]) -> pa.Table:
    """What the sync built before: one flatten_object per record, then records_table."""
    flat = []
    for n, record in enumerate(records, start=1):
        row = flatten_object(record, n, required, where=f"record {n}")
        row["_raw"] = json.dumps(record, separators=(",", ":"))
        row["_source"] = f"https://api.example/v1/things?page=1#row={n}"
        flat.append(row)
    return records_table(flat)


def columnar(records: list[dict[str, Any]], required: list[str]) -> pa.Table:
    n = len(records)
    return bronze_rows(
        records,
        numbers=list(range(1, n + 1)),
        sources=[f"https://api.example/v1/things?page=1#row={i}" for i in range(1, n + 1)],
        raws=[raw_json(r) for r in records],
        required=required,
        wheres=[f"record {i}" for i in range(1, n + 1)],
    )


def same(got: pa.Table, want: pa.Table) -> None:
    if want.num_rows == 0:  # nothing to append either way (the reference has no _raw column)
        assert got.num_rows == 0
        return
    data = [c for c in want.column_names if not c.startswith("_")]
    assert [c for c in got.column_names if not c.startswith("_")] == data  # evolution order
    assert sorted(got.column_names) == sorted(want.column_names)
    for name in want.column_names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


VALUES: list[Any] = [
    None,
    "",
    'text, with "quotes" and ünïcode 東京',
    0,
    -17,
    2**70,
    True,
    False,
    1.5,
    1e16,
    100.0,
    math.inf,
    {"order_id": "ord_1", "nested": {"a": [1, 2.5, None, True]}},
    [1, "two", {"three": 3}],
    [],
    {},
]


def test_a_stripe_page_is_what_the_per_record_loop_made() -> None:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "amount": 1099,
        "paid": True,
        "refunded": False,
        "metadata": {"order_id": "ord_0000001"},
        "payment_method_details": {"type": "card", "card": {"brand": "visa"}},
        "description": None,
    }
    records = [{**charge, "id": f"ch_{i}", "amount": i} for i in range(100)]
    same(columnar(records, ["id"]), reference(records, ["id"]))
    row = columnar(records, ["id"]).slice(3, 1).to_pylist()[0]
    assert row["paid"] == "true" and row["refunded"] == "false" and row["amount"] == "3"
    assert row["metadata"] == '{"order_id": "ord_0000001"}'  # json.dumps' own spacing


def test_records_of_many_shapes_are_what_the_per_record_loop_made() -> None:
    """Key sets that differ from record to record, keys that collide once normalized (``ID``
    and ``id``), keys new late in the batch, a missing primary key, every kind of value."""
    rng = random.Random(14)
    keys = ["id", "ID", "Amount", "amount", "metadata", "created at", "_private", "x" * 70]
    for _ in range(200):
        records = []
        for _ in range(rng.randint(0, 30)):
            chosen = rng.sample(keys, rng.randint(0, len(keys)))
            records.append({k: rng.choice(VALUES) for k in chosen})
        same(columnar(records, ["id"]), reference(records, ["id"]))


def test_a_record_without_its_primary_key_is_flagged_with_its_number() -> None:
    records = [{"id": "a", "v": 1}, {"v": 2}, {"id": "c", "v": 3}]
    table = columnar(records, ["id"])
    assert table.column("_parse_error").to_pylist() == [
        None,
        "record 2: missing required field(s) id",
        None,
    ]
    same(table, reference(records, ["id"]))


def test_the_pagers_record_texts_are_raw_and_give_the_fingerprint_earlier_runs_committed() -> None:
    """The pager encodes each record once (bronze's ``_raw``) and fingerprints the page from
    those texts; the digest must stay that of ``json.dumps`` of the whole page, which runs
    before this change committed as their last page's."""
    rng = random.Random(7)
    for _ in range(50):
        records = [
            {f"k{i}": rng.choice(VALUES) for i in range(5)} for _ in range(rng.randint(1, 9))
        ]
        raws = list(map(raw_json, records))
        assert raws == [json.dumps(r, separators=(",", ":")) for r in records]
        page = json.dumps(records, separators=(",", ":"), default=str).encode()
        assert _fingerprint(raws) == hashlib.blake2b(page, digest_size=16).hexdigest()
