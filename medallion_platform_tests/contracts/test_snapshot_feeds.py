"""Snapshot feeds: every file is the whole table again (a nightly full export).

Only keys whose values changed are applied, keys missing from the newest snapshot are
deleted (flagged or removed), a bad row sent again is quarantined once, and one run over all
the snapshots (a rebuild) gives the same tables as a run per snapshot.
"""

from __future__ import annotations

import pytest

from medallion_platform.connectors.files import FileFeed, ingest_files
from medallion_platform.contracts import Column, Contract, apply_contract
from medallion_platform.contracts.spec import Rule
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.conftest import write_csv

HEADER = "id,name,price\n"
SNAPSHOTS = [
    # night 1: a, b, c, and a row that breaks the contract (price not a number)
    "a,Tent,10.00\nb,Stove,20.00\nc,Lamp,5.00\nx,Broken,ten\n",
    # night 2: a unchanged, b repriced, c gone, x still broken, d new
    "a,Tent,10.00\nb,Stove,25.00\nx,Broken,ten\nd,Mug,3.00\n",
    # night 3: a unchanged, b unchanged, c back (same values as before), d gone, x fixed
    "a,Tent,10.00\nb,Stove,25.00\nc,Lamp,5.00\nx,Broken,12.00\n",
]
FEED = FileFeed(name="catalog", description="x", folder="catalog", contract="catalog")


def _contract(deletes: str = "flag") -> Contract:
    return Contract(
        name="catalog",
        description="nightly full catalog export",
        source="files_catalog",
        business_key=["id"],
        mode="snapshot",
        snapshot_deletes=deletes,
        columns=[
            Column(name="id"),
            Column(name="name", required=True),
            Column(name="price", type="decimal(8,2)", required=True),
        ],
        rules=[Rule(name="price_positive", sql="price > 0")],
    )


def _drop(settings, night: int, body: str) -> None:
    write_csv(settings.landing_dir, f"catalog/catalog_{night}.csv", HEADER + body)
    report = ingest_files(Warehouse(settings.warehouse_path), FEED, settings.landing_dir)
    assert [f.status for f in report.files] == ["loaded"]


def _silver(warehouse, deletes: str = "flag") -> dict[str, tuple]:
    flag = ", _deleted" if deletes == "flag" else ""
    with warehouse.connect() as conn:
        rows = conn.execute(
            f"SELECT id, CAST(price AS VARCHAR), _batch_id{flag} FROM silver.catalog ORDER BY id"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _quarantine(warehouse) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(
            "SELECT _batch_id, _reason FROM quarantine.catalog ORDER BY _batch_id"
        ).fetchall()


def test_only_changes_apply_missing_keys_are_flagged_and_bad_rows_quarantined_once(
    warehouse, settings
) -> None:
    contract = _contract()
    stats = []
    batches = []
    for night, body in enumerate(SNAPSHOTS, 1):
        _drop(settings, night, body)
        with warehouse.transaction() as conn:
            stats.append(apply_contract(conn, contract))
            batches.append(conn.execute("SELECT max(_batch_id) FROM bronze.files_catalog"))
            batches[-1] = batches[-1].fetchone()[0]
        if night == 1:
            assert _silver(warehouse) == {
                "a": ("10.00", batches[0], False),
                "b": ("20.00", batches[0], False),
                "c": ("5.00", batches[0], False),
            }
        if night == 2:
            assert _silver(warehouse) == {
                "a": ("10.00", batches[0], False),  # unchanged: lineage of its first delivery
                "b": ("25.00", batches[1], False),
                "c": ("5.00", batches[0], True),  # missing tonight: flagged, last values kept
                "d": ("3.00", batches[1], False),
            }
    s1, s2, s3 = stats
    assert (s1.inserted, s1.updated, s1.unchanged, s1.deleted) == (3, 0, 0, 0)
    assert (s2.inserted, s2.updated, s2.unchanged, s2.deleted) == (1, 1, 1, 1)
    assert (s3.inserted, s3.updated, s3.unchanged, s3.deleted) == (1, 1, 2, 1)
    # night 3: x fixed (new), c back (its flag cleared: updated), b unchanged, d flagged
    assert _silver(warehouse) == {
        "a": ("10.00", batches[0], False),
        "b": ("25.00", batches[1], False),
        "c": ("5.00", batches[0], False),
        "d": ("3.00", batches[1], True),
        "x": ("12.00", batches[2], False),
    }
    assert (s1.quarantined, s1.already_quarantined) == (1, 0)
    assert (s2.quarantined, s2.already_quarantined) == (0, 1)  # not piled up again
    assert _quarantine(warehouse) == [(batches[0], "price: cannot parse 'ten' as decimal(8,2)")]

    # One run over the three snapshots (a rebuild) gives the same tables.
    before = (_silver(warehouse), _quarantine(warehouse))
    with warehouse.transaction() as conn:
        rebuilt = apply_contract(conn, contract, rebuild=True)
    assert rebuilt.rebuilt and (_silver(warehouse), _quarantine(warehouse)) == before


def test_remove_mode_drops_missing_keys_and_a_header_only_file_deletes_nothing(
    warehouse, settings
) -> None:
    contract = _contract("remove")
    _drop(settings, 1, SNAPSHOTS[0])
    _drop(settings, 2, SNAPSHOTS[1])
    with warehouse.transaction() as conn:
        stats = apply_contract(conn, contract)
    assert set(_silver(warehouse, "remove")) == {"a", "b", "d"}
    assert (stats.inserted, stats.deleted) == (4, 1)  # c: applied from night 1, gone by 2
    _drop(settings, 3, "")  # an export that failed half-way: header, no rows
    with warehouse.transaction() as conn:
        empty = apply_contract(conn, contract)
    assert empty.deleted == 0 and set(_silver(warehouse, "remove")) == {"a", "b", "d"}


def test_a_key_whose_row_is_invalid_in_the_newest_snapshot_is_not_deleted(
    warehouse, settings
) -> None:
    contract = _contract()
    _drop(settings, 1, "a,Tent,10.00\nb,Stove,20.00\n")
    _drop(settings, 2, "a,Tent,-1.00\nb,Stove,20.00\n")  # a breaks price_positive tonight
    for _ in range(2):
        with warehouse.transaction() as conn:
            apply_contract(conn, contract)
    assert _silver(warehouse)["a"][0::2] == ("10.00", False)  # still there, last good values
    assert [reason for _, reason in _quarantine(warehouse)] == [
        "rule price_positive failed: price > 0"
    ]


def test_snapshot_mode_is_refused_where_it_cannot_mean_anything() -> None:
    base = _contract().model_dump()
    with pytest.raises(ValueError, match="keep: latest"):
        Contract.model_validate({**base, "keep": "first"})
    with pytest.raises(ValueError, match="_deleted"):
        Contract.model_validate(
            {**base, "columns": [*base["columns"], {"name": "_deleted", "type": "boolean"}]}
        )
