"""Asset lineage on the real definitions (back to the source systems, downstream, jobs),
column chains through SQL models, and the Dagster column-lineage metadata.

Assertions name paths that exist today and stay true as models are added: never a
snapshot of a whole tree."""

from __future__ import annotations

import json
from collections.abc import Iterator

import duckdb
import pytest
from dagster import (
    AssetKey,
    Definitions,
    TableColumnDep,
    TableColumnLineage,
    asset,
    materialize,
)

from medallion_platform.config import PlatformConfig, platform_config
from medallion_platform.definitions import build_definitions
from medallion_platform.defs.lineage import column_lineage_metadata
from medallion_platform.lineage.columns import read_schemas
from medallion_platform.lineage.graph import (
    TreeNode,
    UnknownAssetError,
    build_report,
    column_origins,
    column_trees,
    consumers,
    downstream_tree,
    format_report,
    format_tree,
    parse_asset_key,
    resolve_asset_key,
    roots,
    upstream_tree,
)
from medallion_platform.settings import PlatformSettings
from medallion_platform_tests.lineage import create_model_tables


@pytest.fixture(scope="module")
def packaged_config() -> PlatformConfig:
    return platform_config()


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> Definitions:
    return build_definitions(PlatformSettings(home=tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def conn(packaged_config: PlatformConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    create_model_tables(connection, packaged_config)
    yield connection
    connection.close()


def chain(tree: TreeNode, *names: str) -> TreeNode:
    """Follow ``names`` down the tree from its root (each a child of the previous)."""
    assert tree.name == names[0]
    node = tree
    for name in names[1:]:
        node = next((c for c in node.children if c.name == name), None)
        assert node is not None, f"{name} is not under {names}"
    return node


def source_labels(tree: TreeNode) -> dict[str, str | None]:
    return {n.name: n.label for n in roots(tree)}


def test_funnel_daily_goes_back_to_the_kafka_clickstream(defs) -> None:
    graph = defs.resolve_asset_graph()
    tree = upstream_tree(graph, AssetKey(["gold", "funnel_daily"]))
    root = chain(tree, "gold/funnel_daily", "gold/sessions", "silver/events", "bronze/events")
    assert root.label == "kafka: topic clickstream" and not root.children
    assert source_labels(tree) == {"bronze/events": "kafka: topic clickstream"}


def test_every_source_system_is_labelled(defs) -> None:
    graph = defs.resolve_asset_graph()
    product = upstream_tree(graph, parse_asset_key("gold/dim_product"))
    chain(product, "gold/dim_product", "silver/products", "bronze/files_products")
    assert source_labels(product) == {"landing/products": "files: landing zone products/*.csv"}

    payments = source_labels(upstream_tree(graph, parse_asset_key("silver/payments")))
    assert payments == {
        "api/payments_charges": "REST: GET /v1/charges ($PAYMENTS_API_BASE_URL)",
        "api/payments_refunds": "REST: GET /v1/refunds ($PAYMENTS_API_BASE_URL)",
    }
    customers = source_labels(upstream_tree(graph, parse_asset_key("silver.customers")))
    assert customers == {"bronze/app_db_customers": "postgres CDC: app_db public.customers"}


def test_customer_360_goes_back_to_the_four_source_systems(defs) -> None:
    """The app database (CDC), the payments API, the clickstream and the catalog files."""
    graph = defs.resolve_asset_graph()
    sources = source_labels(upstream_tree(graph, parse_asset_key("gold/customer_360")))
    systems = {label.split(":")[0] for label in sources.values() if label}
    assert systems == {"postgres CDC", "REST", "kafka", "files"}
    assert {
        "bronze/app_db_customers",
        "bronze/app_db_orders",
        "bronze/app_db_order_items",
        "api/payments_charges",
        "api/payments_refunds",
        "bronze/events",
        "landing/products",
    } <= set(sources)


def test_a_shared_subtree_is_printed_once() -> None:
    @asset
    def raw() -> None: ...

    @asset(deps=[raw])
    def clean() -> None: ...

    @asset(deps=[clean])
    def left() -> None: ...

    @asset(deps=[clean])
    def right() -> None: ...

    @asset(deps=[left, right], kinds={"duckdb"})
    def joined() -> None: ...

    graph = Definitions(assets=[raw, clean, left, right, joined]).resolve_asset_graph()
    lines = format_tree(upstream_tree(graph, AssetKey("joined")))
    assert lines == [
        "joined",
        "├── left",
        "│   └── clean",
        "│       └── raw  [default: no kinds]",
        "└── right",
        "    └── clean  (see above)",
    ]


def test_downstream_checks_jobs_and_launchers(defs) -> None:
    graph = defs.resolve_asset_graph()
    sessions = AssetKey(["gold", "sessions"])
    tree = downstream_tree(graph, sessions)
    funnel = chain(tree, "gold/sessions", "gold/funnel_daily")
    assert any("grain_key_unique" in note for note in funnel.notes)

    found = consumers(defs, graph, AssetKey(["gold", "funnel_daily"]))
    assert "gold/funnel_daily:grain_key_unique" in found.checks
    assert {"medallion_job", "gold_job"} <= set(found.jobs)
    assert "silver_job" not in found.jobs
    assert "sensor event_stream_sensor -> medallion_job" in found.launched_by

    charges = consumers(defs, graph, AssetKey(["bronze", "payments_charges"]))
    assert any(item.startswith("schedule payments_schedule") for item in charges.launched_by)


def test_unknown_asset_suggests_close_keys(defs) -> None:
    with pytest.raises(UnknownAssetError, match="did you mean gold/funnel_daily"):
        resolve_asset_key(defs.resolve_asset_graph(), "gold/funel_daily")


def test_column_chains_go_through_every_sql_model(packaged_config, conn) -> None:
    trees = column_trees(
        packaged_config.sql_models,
        AssetKey(["gold", "funnel_daily"]),
        lambda model: read_schemas(conn, model.depends_on),
    )
    by_column = {t.name: t for t in trees}
    revenue = by_column["revenue"]
    chain(revenue, "revenue", "gold/sessions.revenue", "silver/events.revenue")
    assert column_origins(revenue) == ["silver/events.event_type", "silver/events.revenue"]
    assert by_column["sessions"].notes and not by_column["sessions"].children

    silver = column_trees(
        packaged_config.sql_models,
        AssetKey(["silver", "payments"]),
        lambda model: read_schemas(conn, model.depends_on),
    )
    net = next(t for t in silver if t.name == "net_amount")
    assert column_origins(net) == [
        "silver/payments_charges.amount",
        "silver/payments_refunds.amount",
    ]


def test_report_text_and_json(defs, packaged_config, conn) -> None:
    report = build_report(
        defs,
        "gold/funnel_daily",
        models=packaged_config.sql_models,
        read_schemas=lambda model: read_schemas(conn, model.depends_on),
    )
    text = format_report(report)
    assert "└── bronze/events  [kafka: topic clickstream]" in text
    assert "silver/events <- bronze/events [kafka: topic clickstream]" in report.column_tables
    document = json.loads(json.dumps(report.to_dict()))
    assert document["sources"] == [{"asset": "bronze/events", "system": "kafka: topic clickstream"}]
    assert document["upstream"]["upstream"][0]["name"] == "gold/sessions"
    purchases = next(c for c in document["columns"] if c["column"] == "purchases")
    assert purchases["origins"] == ["silver/events.event_type"]

    only_down = build_report(defs, "gold/sessions", upstream=False)
    assert only_down.upstream is None and only_down.downstream is not None
    assert "Upstream" not in format_report(only_down)


def test_column_lineage_metadata_is_dagster_metadata(packaged_config, conn) -> None:
    model = next(m for m in packaged_config.sql_models if m.name == "payments")
    metadata = column_lineage_metadata(model, read_schemas(conn, model.depends_on))
    lineage = metadata["dagster/column_lineage"]
    assert isinstance(lineage, TableColumnLineage)
    assert lineage.deps_by_column["net_amount"] == [
        TableColumnDep(asset_key=AssetKey(["silver", "payments_charges"]), column_name="amount"),
        TableColumnDep(asset_key=AssetKey(["silver", "payments_refunds"]), column_name="amount"),
    ]
    assert lineage.deps_by_column["refund_count"] == []

    @asset(key=["silver", "payments"])
    def payments(context) -> None:
        context.add_output_metadata(metadata)

    result = materialize([payments])  # Dagster accepts (and serializes) the metadata
    (event,) = result.asset_materializations_for_node("silver__payments")
    assert event.metadata["dagster/column_lineage"].value == lineage
