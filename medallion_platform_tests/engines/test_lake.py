"""The lake's commit rule on real folders: what a reader resolves, what is kept, what goes."""

from __future__ import annotations

from pathlib import Path

from medallion_platform.engines.lake import Lake


def _snapshot(lake: Lake, layer: str, table: str) -> Path:
    folder = lake.new_snapshot(layer, table)
    folder.mkdir(parents=True)
    (folder / "part-00000.parquet").write_bytes(b"PAR1")
    return folder


def test_a_replaced_snapshot_stays_until_the_next_commit(tmp_path) -> None:
    """A reader that resolved the old snapshot (a DuckDB view, until its run commits the new
    one) can still read it; the one before it goes."""
    lake = Lake(tmp_path)
    first = _snapshot(lake, "gold", "dim_date")
    lake.commit("gold.dim_date", {"gold.dim_date": first})
    second = _snapshot(lake, "gold", "dim_date")
    lake.commit("gold.dim_date", {"gold.dim_date": second})
    assert lake.table_path("gold", "dim_date") == second and first.is_dir()
    third = _snapshot(lake, "gold", "dim_date")
    lake.commit("gold.dim_date", {"gold.dim_date": third})
    assert lake.table_path("gold", "dim_date") == third
    assert second.is_dir() and not first.exists()


def test_a_unit_of_several_tables_is_found_from_each(tmp_path) -> None:
    """A contract's silver, history and quarantine are one commit; each table finds it."""
    lake = Lake(tmp_path)
    tables = {
        f"{layer}.{table}": _snapshot(lake, layer, table)
        for layer, table in (
            ("silver", "customers"),
            ("silver", "customers_history"),
            ("quarantine", "customers"),
        )
    }
    lake.commit("silver.customers", tables, {"watermark": 7})
    for name, folder in tables.items():
        assert lake.table_path(*name.split(".")) == folder
        assert lake.unit_of(*name.split(".")) == "silver.customers"
    assert lake.read_commit("silver.customers_history") is None  # a redirect, not a unit
    # A writer that dies before its commit leaves a folder nothing points at.
    orphan = _snapshot(lake, "silver", "customers_history")
    assert lake.table_path("silver", "customers_history") == tables["silver.customers_history"]
    assert lake.read_commit("silver.customers").position == {"watermark": 7}
    assert orphan.is_dir()
