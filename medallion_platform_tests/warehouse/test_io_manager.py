"""WarehouseIOManager through real Dagster runs (ephemeral instance) on a real DuckDB file."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd
import polars as pl

from medallion_platform.defs.io_manager import WarehouseIOManager
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.tables import SqlQuery, TableRef

DAYS = dg.DailyPartitionsDefinition(start_date="2026-10-01")


def run(
    warehouse: Warehouse, assets: list, *, partition_key: str | None = None, ok: bool = True
) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        assets,
        resources={"io_manager": WarehouseIOManager(database=str(warehouse.path))},
        partition_key=partition_key,
        raise_on_error=False,
    )
    assert result.success is ok, [
        e.event_specific_data for e in result.all_events if e.is_step_failure
    ]
    return result


def query(warehouse: Warehouse, sql: str) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(sql).fetchall()


def columns(warehouse: Warehouse, table: str) -> dict[str, str]:
    with warehouse.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(f"DESCRIBE {table}").fetchall()}


def metadata_of(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


# --- frames round-trip ---------------------------------------------------------------------


def test_pandas_and_polars_round_trip_across_types(warehouse: Warehouse) -> None:
    seen: dict[str, Any] = {}

    @dg.asset(key_prefix=["gold"])
    def from_pandas() -> pd.DataFrame:
        return pd.DataFrame({"id": [1, 2, 3], "label": ["a", "b", None], "x": [0.5, 1.5, 2.5]})

    @dg.asset(key_prefix=["gold"], ins={"upstream": dg.AssetIn(key=from_pandas.key)})
    def as_polars(upstream: pl.DataFrame) -> pl.DataFrame:
        seen["as_polars"] = upstream
        return upstream.with_columns((pl.col("id") * 10).alias("id10"))

    @dg.asset(key_prefix=["gold"], ins={"upstream": dg.AssetIn(key=as_polars.key)})
    def as_pandas(upstream: pd.DataFrame) -> pd.DataFrame:
        seen["as_pandas"] = upstream
        return upstream

    @dg.asset(key_prefix=["gold"], ins={"upstream": dg.AssetIn(key=from_pandas.key)})
    def same_type(upstream: pd.DataFrame) -> pd.DataFrame:
        seen["same_type"] = upstream
        return upstream.head(1)

    run(warehouse, [from_pandas, as_polars, as_pandas, same_type])

    polars_in = seen["as_polars"]
    assert isinstance(polars_in, pl.DataFrame)
    assert polars_in.sort("id").to_dict(as_series=False) == {
        "id": [1, 2, 3],
        "label": ["a", "b", None],
        "x": [0.5, 1.5, 2.5],
    }
    pandas_in = seen["as_pandas"]
    assert isinstance(pandas_in, pd.DataFrame)
    assert sorted(pandas_in["id10"].tolist()) == [10, 20, 30]
    assert list(pandas_in.columns) == ["id", "label", "x", "id10"]
    assert isinstance(seen["same_type"], pd.DataFrame) and len(seen["same_type"]) == 3

    assert query(warehouse, "SELECT id, id10 FROM gold.as_pandas ORDER BY id") == [
        (1, 10),
        (2, 20),
        (3, 30),
    ]
    assert query(warehouse, "SELECT count(*) FROM gold.same_type") == [(1,)]
    assert columns(warehouse, "gold.as_polars") == {
        "id": "BIGINT",
        "label": "VARCHAR",
        "x": "DOUBLE",
        "id10": "BIGINT",
    }


def test_empty_frames_create_empty_tables_with_their_columns(warehouse: Warehouse) -> None:
    @dg.asset(key_prefix=["gold"])
    def empty_pandas() -> pd.DataFrame:
        return pd.DataFrame({"id": pd.Series([], dtype="int64"), "x": pd.Series([], dtype="f8")})

    @dg.asset(key_prefix=["gold"])
    def empty_polars() -> pl.DataFrame:
        return pl.DataFrame(schema={"id": pl.Int64, "name": pl.Utf8, "day": pl.Date})

    result = run(warehouse, [empty_pandas, empty_polars])

    assert columns(warehouse, "gold.empty_pandas") == {"id": "BIGINT", "x": "DOUBLE"}
    assert columns(warehouse, "gold.empty_polars") == {
        "id": "BIGINT",
        "name": "VARCHAR",
        "day": "DATE",
    }
    assert query(warehouse, "SELECT count(*) FROM gold.empty_polars") == [(0,)]
    assert metadata_of(result, "gold__empty_polars")["dagster/row_count"] == 0


def test_rematerializing_replaces_schema_and_rows(warehouse: Warehouse) -> None:
    version = {"n": 1}

    @dg.asset(key_prefix=["gold"])
    def evolving() -> pd.DataFrame:
        if version["n"] == 1:
            return pd.DataFrame({"id": [1, 2, 3], "old": ["a", "b", "c"]})
        return pd.DataFrame({"id": [7], "new": [1.5], "more": [True]})

    run(warehouse, [evolving])
    assert query(warehouse, "SELECT count(*) FROM gold.evolving") == [(3,)]

    version["n"] = 2
    run(warehouse, [evolving])

    assert columns(warehouse, "gold.evolving") == {
        "id": "BIGINT",
        "new": "DOUBLE",
        "more": "BOOLEAN",
    }
    assert query(warehouse, "SELECT * FROM gold.evolving") == [(7, 1.5, True)]


# --- lazy types ----------------------------------------------------------------------------


def test_sql_query_output_is_built_in_the_warehouse_and_read_as_a_table_ref(
    warehouse: Warehouse,
) -> None:
    received: dict[str, Any] = {}

    @dg.asset(key_prefix=["gold"])
    def numbers() -> SqlQuery:
        return SqlQuery("SELECT range AS n FROM range(1000)")

    @dg.asset(key_prefix=["gold"], ins={"numbers": dg.AssetIn(key=numbers.key)})
    def evens(numbers: TableRef) -> SqlQuery:
        received["ref"] = numbers
        return SqlQuery(f"SELECT n FROM ({numbers.select_sql}) WHERE n % 2 = 0")

    @dg.asset(key_prefix=["gold"], deps=[evens], ins={"numbers": dg.AssetIn(key=numbers.key)})
    def unannotated(numbers) -> SqlQuery:  # type: ignore[no-untyped-def]
        received["default"] = numbers
        return SqlQuery("SELECT 1 AS one")

    result = run(warehouse, [numbers, evens, unannotated])

    ref = received["ref"]
    assert isinstance(ref, TableRef)
    assert (ref.schema, ref.table) == ("gold", "numbers")
    assert ref.name == '"gold"."numbers"'
    assert ref.select_sql == "SELECT * FROM gold.numbers"
    assert isinstance(received["default"], TableRef)  # the default load type is the handle
    assert query(warehouse, "SELECT count(*), sum(n) FROM gold.numbers") == [(1000, 499500)]
    assert query(warehouse, "SELECT count(*), max(n) FROM gold.evens") == [(500, 998)]
    assert metadata_of(result, "gold__numbers")["dagster/row_count"] == 1000


def test_materialization_metadata_describes_the_table(warehouse: Warehouse) -> None:
    @dg.asset(key_prefix=["gold"])
    def described() -> pd.DataFrame:
        return pd.DataFrame({"sku": ["SKU-1", "SKU-2"], "price": [9.5, 19.25], "_lineage": [1, 2]})

    result = run(warehouse, [described])
    metadata = metadata_of(result, "gold__described")
    events = result.get_asset_materialization_events()
    assert [e.asset_key for e in events] == [dg.AssetKey(["gold", "described"])]

    assert metadata["dagster/row_count"] == 2
    schema = metadata["dagster/column_schema"]
    assert [(c.name, c.type) for c in schema.columns] == [
        ("sku", "VARCHAR"),
        ("price", "DOUBLE"),
        ("_lineage", "BIGINT"),
    ]
    assert metadata["dagster/table_name"] == "gold.described"
    preview = metadata["preview"]
    assert preview.splitlines()[0] == "| sku | price |"  # lineage columns are not previewed
    assert "| SKU-2 | 19.25 |" in preview


def test_a_failed_write_keeps_the_previous_table(warehouse: Warehouse) -> None:
    sql = {"text": "SELECT range AS n FROM range(5)"}

    @dg.asset(key_prefix=["gold"])
    def fragile() -> SqlQuery:
        return SqlQuery(sql["text"])

    run(warehouse, [fragile])
    sql["text"] = "SELECT n FROM no_such_table"
    run(warehouse, [fragile], ok=False)

    assert query(warehouse, "SELECT count(*), sum(n) FROM gold.fragile") == [(5, 10)]


# --- partitions ----------------------------------------------------------------------------


def _daily_asset(rows_for: dict[str, pd.DataFrame]):  # type: ignore[no-untyped-def]
    @dg.asset(key_prefix=["gold"], partitions_def=DAYS, metadata={"partition_expr": "day"})
    def daily(context) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        return rows_for[context.partition_key]

    return daily


def _frame(day: str, values: list[int], **extra: list) -> pd.DataFrame:
    return pd.DataFrame({"day": [pd.Timestamp(day)] * len(values), "v": values, **extra})


def test_partitions_replace_only_their_slice_and_add_new_columns(warehouse: Warehouse) -> None:
    rows_for = {
        "2026-10-01": _frame("2026-10-01", [1, 2]),
        "2026-10-02": _frame("2026-10-02", [3, 4, 5]),
    }
    daily = _daily_asset(rows_for)
    run(warehouse, [daily], partition_key="2026-10-01")
    result = run(warehouse, [daily], partition_key="2026-10-02")
    metadata = metadata_of(result, "gold__daily")
    assert metadata["dagster/partition_row_count"] == 3
    assert metadata["dagster/row_count"] == 5

    rows_for["2026-10-01"] = _frame("2026-10-01", [10])
    run(warehouse, [daily], partition_key="2026-10-01")
    assert query(warehouse, "SELECT strftime(day, '%d'), v FROM gold.daily ORDER BY day, v") == [
        ("01", 10),
        ("02", 3),
        ("02", 4),
        ("02", 5),
    ]

    rows_for["2026-10-03"] = _frame("2026-10-03", [6], note=["late"])
    run(warehouse, [daily], partition_key="2026-10-03")
    assert list(columns(warehouse, "gold.daily")) == ["day", "v", "note"]
    assert query(warehouse, "SELECT strftime(day, '%d'), v, note FROM gold.daily ORDER BY v") == [
        ("02", 3, None),
        ("02", 4, None),
        ("02", 5, None),
        ("03", 6, "late"),
        ("01", 10, None),
    ]


def test_partitioned_input_reads_only_its_slice(warehouse: Warehouse) -> None:
    rows_for = {
        "2026-10-01": _frame("2026-10-01", [1, 2]),
        "2026-10-02": _frame("2026-10-02", [3]),
    }
    daily = _daily_asset(rows_for)
    received: dict[str, Any] = {}

    @dg.asset(
        key_prefix=["gold"],
        partitions_def=DAYS,
        metadata={"partition_expr": "day"},
        ins={"daily": dg.AssetIn(key=daily.key)},
    )
    def daily_copy(daily: pl.DataFrame) -> pl.DataFrame:
        received["rows"] = daily
        return daily

    run(warehouse, [daily], partition_key="2026-10-01")
    run(warehouse, [daily, daily_copy], partition_key="2026-10-02")
    assert isinstance(received["rows"], pl.DataFrame)
    assert received["rows"]["v"].to_list() == [3]
    assert query(warehouse, "SELECT v FROM gold.daily_copy") == [(3,)]


def test_a_failed_partition_write_keeps_the_old_slice(warehouse: Warehouse) -> None:
    rows_for = {"2026-10-01": _frame("2026-10-01", [1, 2])}
    daily = _daily_asset(rows_for)
    run(warehouse, [daily], partition_key="2026-10-01")

    # v cannot become a BIGINT from text: the insert fails after the slice was deleted.
    rows_for["2026-10-01"] = _frame("2026-10-01", [0]).assign(v=["not a number"])
    run(warehouse, [daily], partition_key="2026-10-01", ok=False)

    assert query(warehouse, "SELECT v FROM gold.daily ORDER BY v") == [(1,), (2,)]


def test_a_partition_can_add_a_timezone_aware_column(warehouse: Warehouse) -> None:
    rows_for = {
        "2026-10-01": _frame("2026-10-01", [1]),
        "2026-10-02": _frame("2026-10-02", [2], seen_at=[pd.Timestamp("2026-10-02", tz="UTC")]),
    }
    daily = _daily_asset(rows_for)
    io_manager = WarehouseIOManager(database=str(warehouse.path))
    for key in rows_for:
        dg.materialize([daily], resources={"io_manager": io_manager}, partition_key=key)
    assert columns(warehouse, "gold.daily")["seen_at"] == "TIMESTAMP WITH TIME ZONE"
