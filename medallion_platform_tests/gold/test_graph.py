"""The one graph of declared tables: bronze -> contracts -> SQL models, its order and reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from medallion_platform.config import PlatformConfig
from medallion_platform.gold.build import in_dependency_order
from medallion_platform.gold.graph import TableGraph
from medallion_platform.gold.spec import SqlModel


def model(root: Path, name: str, sql: str) -> SqlModel:
    """A gold model whose SQL is ``sql``, under a models root of the test's own."""
    (root / "gold").mkdir(parents=True, exist_ok=True)
    (root / "gold" / f"{name}.sql").write_text(sql)
    raw = {"name": name, "description": "d", "grain": "g", "key": ["k"]}
    return SqlModel.model_validate(raw, context={"models_root": root})


def test_every_table_comes_after_what_it_reads(config: PlatformConfig) -> None:
    graph = config.table_graph()
    order = graph.order()
    assert len(order) == len(set(order)) == len(graph.inputs)
    for table, reads in graph.inputs.items():
        for read in reads:
            assert order.index(read) < order.index(table), (read, table)
    # What gold reads is built by the contracts and the silver models, from bronze.
    assert order.index("gold.fct_orders") > order.index("silver.payments")
    assert order.index("silver.payments") > order.index("silver.payments_refunds")
    assert graph.inputs["silver.customers_history"] == ("bronze.app_db_customers",)
    assert [m.name for m in graph.models_in_order()][:2] == ["payments", "dim_product"]


def test_downstream_of_a_bronze_table(config: PlatformConfig) -> None:
    graph = config.table_graph()
    # products.csv feeds the product dimension, and the order lines and customer 360 that
    # join it (read off models/gold/*.sql: the SQL is the only declaration of the inputs).
    assert graph.downstream("bronze.files_products") == [
        "bronze.files_products",
        "silver.products",
        "quarantine.products",
        "gold.dim_product",
        "gold.fct_order_items",
        "gold.customer_360",
    ]
    assert graph.downstream("bronze.app_db_customers")[:4] == [
        "bronze.app_db_customers",
        "silver.customers",
        "quarantine.customers",
        "silver.customers_history",
    ]
    assert graph.downstream("gold.customer_360") == ["gold.customer_360"]
    assert graph.downstream("bronze.not_declared") == ["bronze.not_declared"]


def test_models_are_ordered_by_what_their_sql_reads(tmp_path: Path) -> None:
    """Declared last, built first: the order comes from the SQL, ties keep declaration order;
    tables nothing declares (here silver.events) are inputs from outside."""
    daily = model(tmp_path, "daily", "SELECT * FROM gold.sessions JOIN gold.users USING (u)")
    users = model(tmp_path, "users", "SELECT * FROM silver.events")
    sessions = model(tmp_path, "sessions", "SELECT * FROM silver.events")
    assert daily.depends_on == ["gold.sessions", "gold.users"]
    graph = TableGraph(models=[daily, users, sessions])
    assert graph.order() == ["silver.events", "gold.users", "gold.sessions", "gold.daily"]
    assert in_dependency_order([daily, users, sessions]) == [users, sessions, daily]
    assert graph.downstream("gold.users") == ["gold.users", "gold.daily"]


def test_a_cycle_is_named_in_reading_order(tmp_path: Path) -> None:
    models = [
        model(tmp_path, "a", "SELECT * FROM gold.c"),
        model(tmp_path, "b", "SELECT * FROM gold.a"),
        model(tmp_path, "c", "SELECT * FROM gold.b"),
    ]
    expected = "tables read each other in a cycle: gold.a -> gold.c -> gold.b -> gold.a"
    for rotation in range(3):  # the same words whichever model is declared first
        with pytest.raises(ValueError) as info:
            TableGraph(models=models[rotation:] + models[:rotation]).order()
        assert str(info.value) == expected
