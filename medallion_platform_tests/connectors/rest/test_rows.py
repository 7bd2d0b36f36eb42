"""Bronze rows of API records: each record's JSON in ``_raw``, and what silver reads from it.

Bronze used to flatten each record into text columns (``flatten_object``, which the files
connector keeps using); silver now reads each field from ``_raw`` with a ``json_path``. The
text DuckDB reads at a path must be what the flattening wrote, value for value, or (numbers in
exponent form, nested values) the same number or the same JSON.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import duckdb
import pyarrow as pa

from medallion_platform.connectors.files.readers import flatten_object
from medallion_platform.connectors.rest.pager import _fingerprint
from medallion_platform.connectors.rest.rows import bronze_rows, field_sets, raw_json

SOURCE = "https://api.example/v1/things?page=1#row={}"


def rows(records: list[dict[str, Any]], required: list[str], **stamps: list[Any]) -> pa.Table:
    n = len(records)
    return bronze_rows(
        records,
        numbers=list(range(1, n + 1)),
        sources=[SOURCE.format(i) for i in range(1, n + 1)],
        raws=[raw_json(r) for r in records],
        required=required,
        wheres=[f"record {i}" for i in range(1, n + 1)],
        stamps=stamps or None,
    )


VALUES: list[Any] = [
    None,
    "",
    'text, with "quotes" and ünïcode 東京',
    0,
    -17,
    2**63,
    2**70,
    True,
    False,
    1.5,
    1e16,
    1e-7,
    100.0,
    0.1,
    {"order_id": "ord_1", "nested": {"a": [1, 2.5, None, True]}},
    [1, "two", {"three": 3}],
    [],
    {},
]


def test_a_stripe_page_is_its_records_json_with_lineage_and_nothing_else() -> None:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "amount": 1099,
        "paid": True,
        "metadata": {"order_id": "ord_0000001"},
        "description": None,
    }
    records = [{**charge, "id": f"ch_{i}", "amount": i} for i in range(100)]
    table = rows(records, ["id"])
    assert table.column_names == [
        "_raw",
        "_source",
        "_row_number",
        "_parse_error",
        "_extra_fields",
    ]
    assert [json.loads(r) for r in table.column("_raw").to_pylist()] == records
    assert table.column("_source").to_pylist()[2] == SOURCE.format(3)
    assert table.column("_row_number").to_pylist() == list(range(1, 101))
    assert table.column("_parse_error").null_count == 100  # every record has its id
    assert table.column("_extra_fields").null_count == 100


def test_a_record_without_its_primary_key_is_flagged_with_its_number() -> None:
    records = [{"id": "a", "v": 1}, {"v": 2}, {"id": "c", "v": 3}, {"id": None}]
    assert rows(records, ["id"]).column("_parse_error").to_pylist() == [
        None,
        "record 2: missing required field(s) id",
        None,
        None,  # present, if null: the contract decides (a NULL key is quarantined there)
    ]


def test_a_stamp_is_a_text_column_of_its_own_and_not_part_of_the_record() -> None:
    records = [{"id": "a"}, {"id": "b"}]
    table = rows(records, ["id"], _changed_at=["1700000000", None])
    assert table.column("_changed_at").to_pylist() == ["1700000000", None]
    assert table.column("_raw").to_pylist() == ['{"id":"a"}', '{"id":"b"}']


def test_field_sets_are_the_distinct_key_sets_in_order_of_first_appearance() -> None:
    records = [{"id": 1, "a": 2}, {"id": 2, "a": 3}, {"a": 1, "id": 2}, {"id": 3}, {"id": 4}]
    assert field_sets(records) == [("id", "a"), ("a", "id"), ("id",)]
    assert field_sets([]) == []


def _same_value(read: str | None, flattened: str | None) -> bool:
    if read == flattened:
        return True
    if read is None or flattened is None:
        return False
    try:  # 1e+16 / 10000000000000000.0, 1e-07 / 1e-7: one number, two spellings
        return float(read) == float(flattened)
    except ValueError:  # nested values: DuckDB writes compact JSON, json.dumps spaced
        return json.loads(read) == json.loads(flattened)


def test_each_field_read_from_raw_is_what_the_flattening_wrote() -> None:
    """Random records of every kind of value: for each field, ``json_extract_string`` of its
    path in ``_raw`` (what a contract reads) against ``flatten_object``'s text (what bronze
    held before), stored and read back through DuckDB."""
    rng = random.Random(14)
    keys = ["id", "amount", "metadata", "created", "status", "amount_refunded"]
    records = [{k: rng.choice(VALUES) for k in rng.sample(keys, 4)} for _ in range(500)]
    conn = duckdb.connect()
    conn.register("bronze", rows(records, []))
    paths = [f"$.{k}" for k in keys]
    read = conn.execute(
        "SELECT json_extract_string(_raw::JSON, ?) FROM bronze ORDER BY _row_number", [paths]
    ).fetchall()
    for n, (record, (texts,)) in enumerate(zip(records, read, strict=True), start=1):
        flat = flatten_object(record, n, [], where=f"record {n}")
        for key, text in zip(keys, texts, strict=True):
            assert _same_value(text, flat.get(key)), (record, key, text, flat.get(key))


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
