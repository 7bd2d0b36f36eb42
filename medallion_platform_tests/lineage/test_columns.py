"""Column lineage derived from the SQL of the real models, and the edge cases it must follow."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from medallion_platform.config import PlatformConfig, platform_config
from medallion_platform.lineage.columns import (
    ColumnLineageError,
    ColumnRef,
    MissingTablesError,
    column_lineage,
    model_column_lineage,
    read_schemas,
)
from medallion_platform_tests.lineage import create_model_tables


@pytest.fixture(scope="module")
def packaged_config() -> PlatformConfig:
    return platform_config()


@pytest.fixture(scope="module")
def conn(packaged_config: PlatformConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    create_model_tables(connection, packaged_config)
    yield connection
    connection.close()


def lineage_of(name: str, config: PlatformConfig, conn) -> dict[str, frozenset[ColumnRef]]:
    model = next(m for m in config.sql_models if f"{m.layer}.{m.name}" == name)
    return model_column_lineage(model, read_schemas(conn, model.depends_on))


def test_every_model_is_analysed_with_its_real_columns(packaged_config, conn) -> None:
    """For every declared model: one entry per column of the built table, in SELECT order,
    and every source column exists in the table it names."""
    for model in packaged_config.sql_models:
        schemas = read_schemas(conn, model.depends_on)
        lineage = model_column_lineage(model, schemas)
        built = read_schemas(conn, [f"{model.layer}.{model.name}"])
        assert list(lineage) == next(iter(built.values())), model.name
        for column, refs in lineage.items():
            for ref in refs:
                assert ref.column in schemas[ref.table], (model.name, column, ref)


def test_sessions_columns_come_through_window_ctes_and_star(packaged_config, conn) -> None:
    lineage = lineage_of("gold.sessions", packaged_config, conn)
    events = "silver.events"
    # FILTER (WHERE event_type = ...) is part of the value: it is a source column.
    assert lineage["revenue"] == {(events, "revenue"), (events, "event_type")}
    assert lineage["purchases"] == {(events, "event_type")}
    assert lineage["events"] == frozenset()  # count(*) reads no column
    assert lineage["anonymous_id"] == {(events, "anonymous_id")}
    assert lineage["session_date"] == {(events, "occurred_at")}
    # Through SELECT * of two CTEs (the second adds a window over the first).
    assert lineage["session_id"] == {(events, "anonymous_id"), (events, "occurred_at")}


def test_funnel_daily_reads_gold_sessions(packaged_config, conn) -> None:
    lineage = lineage_of("gold.funnel_daily", packaged_config, conn)
    assert list(lineage)[:3] == ["date", "channel", "sessions"]  # SELECT * of the CTE first
    assert lineage["purchases"] == {("gold.sessions", "purchases")}
    assert lineage["date"] == {("gold.sessions", "session_date")}
    assert lineage["sessions"] == frozenset()
    assert lineage["view_to_cart_rate"] == {
        ("gold.sessions", "add_to_carts"),
        ("gold.sessions", "product_views"),
    }


def test_silver_payments_joins_charges_and_refunds(packaged_config, conn) -> None:
    lineage = lineage_of("silver.payments", packaged_config, conn)
    assert lineage["net_amount"] == {
        ("silver.payments_charges", "amount"),
        ("silver.payments_refunds", "amount"),
    }
    assert lineage["refunded_amount"] == {("silver.payments_refunds", "amount")}
    assert lineage["currency"] == {("silver.payments_charges", "currency")}
    assert lineage["refund_count"] == frozenset()


def test_dim_product_aliases_and_case(packaged_config, conn) -> None:
    lineage = lineage_of("gold.dim_product", packaged_config, conn)
    assert lineage["product_name"] == {("silver.products", "name")}
    assert lineage["price_band"] == {("silver.products", "unit_price")}  # CASE WHEN unit_price
    assert lineage["is_active"] == {("silver.products", "active")}


SCHEMAS = {
    "silver.a": ["id", "x", "y", "_batch_id"],
    "silver.b": ["id", "z"],
}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT * FROM silver.a",
            {c: {("silver.a", c)} for c in SCHEMAS["silver.a"]},
        ),
        (
            "SELECT * EXCLUDE (_batch_id) FROM silver.a",
            {"id": {("silver.a", "id")}, "x": {("silver.a", "x")}, "y": {("silver.a", "y")}},
        ),
        (
            "SELECT b.*, a.x AS ax FROM silver.a AS a JOIN silver.b AS b ON a.id = b.id",
            {"id": {("silver.b", "id")}, "z": {("silver.b", "z")}, "ax": {("silver.a", "x")}},
        ),
        (
            "SELECT lag(x) OVER (PARTITION BY id ORDER BY y) AS prev, sum(x) OVER () AS total "
            "FROM silver.a",
            {
                "prev": {("silver.a", "x"), ("silver.a", "id"), ("silver.a", "y")},
                "total": {("silver.a", "x")},
            },
        ),
        (
            "WITH t AS (SELECT id, x + y AS s FROM silver.a WHERE x > 0) "
            "SELECT t.id, count(*) AS n, max(t.s) AS top, 'k' AS k FROM t GROUP BY t.id",
            {
                "id": {("silver.a", "id")},
                "n": set(),
                "top": {("silver.a", "x"), ("silver.a", "y")},
                "k": set(),
            },
        ),
        (  # a table function's rows come from the columns its arguments read
            "WITH span AS (SELECT min(x) AS lo, max(y) AS hi FROM silver.a) "
            "SELECT t.v AS v FROM span, range(lo, hi) AS t(v)",
            {"v": {("silver.a", "x"), ("silver.a", "y")}},
        ),
    ],
)
def test_sql_shapes(sql: str, expected: dict) -> None:
    assert column_lineage(sql, SCHEMAS) == {k: frozenset(v) for k, v in expected.items()}


def test_errors_name_the_model() -> None:
    with pytest.raises(ColumnLineageError, match=r"gold\.broken: cannot parse"):
        column_lineage("SELECT FROM WHERE (", SCHEMAS, name="gold.broken")
    with pytest.raises(ColumnLineageError, match=r"gold\.m: no schema given for silver\.c"):
        column_lineage("SELECT * FROM silver.c", SCHEMAS, name="gold.m")
    with pytest.raises(ColumnLineageError, match=r"column lineage of gold\.m: .*nope"):
        column_lineage("SELECT nope FROM silver.a", SCHEMAS, name="gold.m")


def test_a_stale_schema_is_an_error_naming_the_model(packaged_config, conn) -> None:
    model = next(m for m in packaged_config.sql_models if m.name == "sessions")
    schemas = read_schemas(conn, model.depends_on)
    schemas["silver.events"] = [c for c in schemas["silver.events"] if c != "revenue"]
    with pytest.raises(ColumnLineageError, match=r"gold\.sessions.*revenue"):
        model_column_lineage(model, schemas)


def test_read_schemas_keeps_bookkeeping_columns_and_names_missing_tables(conn) -> None:
    schemas = read_schemas(conn, ["silver.events"])
    assert "_batch_id" in schemas["silver.events"]
    described = [r[0] for r in conn.execute("DESCRIBE silver.events").fetchall()]
    assert schemas["silver.events"] == described
    with pytest.raises(MissingTablesError) as caught:
        read_schemas(conn, ["silver.events", "gold.nope", "silver.nope"])
    assert caught.value.tables == ["gold.nope", "silver.nope"]
