"""The declarative configuration: the packaged files load, and broken copies fail clearly."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from medallion_platform.config import ConfigError, PlatformConfig, load_config
from medallion_platform.definitions import build_definitions
from medallion_platform.gold.spec import MODELS_DIR, GoldModel
from medallion_platform.settings import PlatformSettings
from medallion_platform_tests.conftest import copy_packaged_config
from medallion_platform_tests.test_definitions import SNAPSHOT, _graph

Edit = Callable[[dict[str, Any]], None]


def test_packaged_config_loads(config: PlatformConfig) -> None:
    assert [f.name for f in config.feeds] == ["products", "ad_spend"]
    assert [c.name for c in config.contracts][:2] == ["products", "ad_spend"]
    assert [s.name for s in config.rest_sources] == ["payments"]
    assert [m.name for m in config.silver_models] == ["payments"]
    assert [m.name for m in config.gold_models] == [
        "dim_product",
        "marketing_spend_daily",
        "sessions",
        "funnel_daily",
        "dim_customer",
        "dim_date",
        "fct_orders",
        "fct_refunds",
        "fct_order_items",
        "customer_360",
        "daily_revenue",
        "marketing_roas_daily",
    ]
    assert [s.name for s in config.streams] == ["events"]
    assert config.contract("events").source == config.streams[0].bronze_table
    for feed in config.feeds:
        assert config.contract(feed.contract).source == feed.bronze_table
    for model in config.gold_models:
        assert model.sql_path == MODELS_DIR / f"{model.name}.sql"
        assert model.sql.lstrip().startswith(("SELECT", "WITH", "--"))
    assert load_config() == config


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    target = copy_packaged_config(tmp_path / "config")
    assert load_config(target).contracts  # the copy itself is valid
    return target


def edit(config_dir: Path, filename: str, change: Edit) -> Path:
    path = config_dir / filename
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _set(section: str, index: int, **values: Any) -> Edit:
    def change(document: dict[str, Any]) -> None:
        document[section][index].update(values)

    return change


def test_feed_naming_an_unknown_contract(config_dir: Path) -> None:
    edit(config_dir, "file_feeds.yaml", _set("feeds", 1, contract="ad_costs"))
    with pytest.raises(ConfigError, match=r"feed ad_spend: contract 'ad_costs' is not declared"):
        load_config(config_dir)


def test_feed_and_contract_disagreeing_on_the_bronze_table(config_dir: Path) -> None:
    edit(config_dir, "contracts.yaml", _set("contracts", 0, source="files_catalog"))
    with pytest.raises(ConfigError) as info:
        load_config(config_dir)
    message = str(info.value)
    assert "feed products" in message
    assert "bronze.files_catalog" in message and "bronze.files_products" in message


@pytest.mark.parametrize(
    ("name", "old", "carrier", "fix"),
    [
        ("amount", {}, "amount", "$.amount"),
        (
            "order_id",
            {"source": "metadata", "json_path": "$.order_id"},
            "metadata",
            "$.metadata.order_id",
        ),
    ],
)
def test_a_rest_contract_reading_a_field_as_a_column_is_refused_with_the_line_that_reads_it(
    config_dir: Path, name: str, old: dict[str, str], carrier: str, fix: str
) -> None:
    """REST bronze keeps each record's JSON in ``_raw``: a column ``amount``, or ``order_id``
    read inside a ``metadata`` column, would read NULL in every row (as contracts written for
    the earlier, flattened bronze did)."""

    def flattened(document: dict[str, Any]) -> None:
        charges = next(c for c in document["contracts"] if c["name"] == "payments_charges")
        column = next(c for c in charges["columns"] if c["name"] == name)
        del column["source"], column["json_path"]
        column.update(old)

    edit(config_dir, "contracts.yaml", flattened)
    with pytest.raises(ConfigError) as info:
        load_config(config_dir)
    assert str(info.value) == (
        f"endpoint payments.charges: contract payments_charges, column {name} reads bronze "
        f"column '{carrier}', but REST bronze keeps each record's JSON in _raw: read the field "
        f"with `source: _raw, json_path: {fix}`"
    )


def test_gold_model_whose_depends_on_disagrees_with_its_sql(config_dir: Path) -> None:
    path = edit(config_dir, "gold_models.yaml", _set("models", 0, depends_on=["silver.ad_spend"]))
    with pytest.raises(ConfigError) as info:
        load_config(config_dir)
    message = str(info.value)
    assert str(path) in message
    assert "'dim_product'" in message
    assert "silver.products" in message and "silver.ad_spend" in message


def test_models_without_depends_on_read_their_inputs_from_the_sql(
    config_dir: Path, config: PlatformConfig, tmp_path: Path
) -> None:
    """``depends_on`` is optional: left out of every model, the inputs come from the SQL, and
    they are the ones the packaged files declare, down to the asset graph Dagster builds."""

    def strip(document: dict[str, Any]) -> None:
        for model in document["models"]:
            model.pop("depends_on")

    edit(config_dir, "gold_models.yaml", strip)
    edit(config_dir, "silver_models.yaml", strip)
    inferred = load_config(config_dir)
    declared = {m.name: m.depends_on for m in config.sql_models}
    assert {m.name: m.depends_on for m in inferred.sql_models} == {
        name: sorted(inputs) for name, inputs in declared.items()
    }
    assert inferred.table_graph().order() == config.table_graph().order()
    settings = PlatformSettings(home=tmp_path / "home")
    assert _graph(build_definitions(settings, inferred)) == json.loads(SNAPSHOT.read_text())


def test_models_reading_each_other_in_a_cycle(config_dir: Path) -> None:
    (config_dir / "models" / "gold" / "sessions.sql").write_text(
        "SELECT date AS session_id FROM gold.funnel_daily"
    )
    edit(config_dir, "gold_models.yaml", _set("models", 2, depends_on=[]))
    with pytest.raises(ConfigError) as info:
        load_config(config_dir)
    assert str(info.value) == (
        f"{config_dir}: tables read each other in a cycle: "
        "gold.funnel_daily -> gold.sessions -> gold.funnel_daily"
    )


def test_gold_model_reference_to_an_unknown_table(config_dir: Path) -> None:
    fct = _set("models", 6, references={"customer_id": "gold.dim_customers.customer_id"})
    edit(config_dir, "gold_models.yaml", fct)
    with pytest.raises(ConfigError, match=r"fct_orders: references unknown tables"):
        load_config(config_dir)


def test_gold_model_reference_must_name_a_column(config_dir: Path) -> None:
    edit(config_dir, "gold_models.yaml", _set("models", 6, references={"customer_id": "gold.x"}))
    with pytest.raises(ConfigError, match=r"expected schema.table.column"):
        load_config(config_dir)


def test_sql_with_an_asof_join_is_read_for_its_tables() -> None:
    """DuckDB's own table lister cannot bind ASOF joins; the SQL is parsed with sqlglot."""
    from medallion_platform.gold.spec import tables_read

    sql = (
        "WITH t AS (SELECT * FROM gold.sessions) SELECT * FROM gold.fct_orders AS o "
        "ASOF LEFT JOIN t ON o.customer_id = t.customer_id AND o.placed_at >= t.started_at, "
        "range(3) AS r(i)"
    )
    assert tables_read(sql) == {"gold.sessions", "gold.fct_orders"}


def test_gold_model_built_directly_checks_its_sql() -> None:
    base = {"description": "d", "grain": "one row per SKU", "key": ["sku"]}
    assert GoldModel(name="dim_product", depends_on=["silver.products"], **base).sql.startswith(
        "-- Grain"
    )
    assert GoldModel(name="dim_product", **base).depends_on == ["silver.products"]
    with pytest.raises(ValidationError, match=r"gold model dim_product: SQL reads") as info:
        GoldModel(name="dim_product", depends_on=["silver.ad_spend"], **base)
    assert "['silver.products']" in str(info.value)
    assert "['silver.ad_spend']" in str(info.value)
    with pytest.raises(ValidationError, match=r"gold model dim_nothing: .*does not exist"):
        GoldModel(name="dim_nothing", depends_on=["silver.products"], **base)


def test_contract_entry_errors_name_the_file_and_the_entry(config_dir: Path) -> None:
    def bad_type(document: dict[str, Any]) -> None:
        document["contracts"][1]["columns"][3]["type"] = "money"

    path = edit(config_dir, "contracts.yaml", bad_type)
    with pytest.raises(ConfigError, match="unsupported type 'money'") as info:
        load_config(config_dir)
    assert str(path) in str(info.value)
    assert "contracts entry 'ad_spend' is invalid" in str(info.value)


@pytest.mark.parametrize(
    ("filename", "section", "name"),
    [
        ("file_feeds.yaml", "feeds", "products"),
        ("contracts.yaml", "contracts", "ad_spend"),
        ("gold_models.yaml", "models", "marketing_spend_daily"),
    ],
)
def test_duplicate_names(config_dir: Path, filename: str, section: str, name: str) -> None:
    def duplicate(document: dict[str, Any]) -> None:
        entry = next(e for e in document[section] if e["name"] == name)
        document[section].append(dict(entry))

    path = edit(config_dir, filename, duplicate)
    with pytest.raises(ConfigError, match=re.escape(f"duplicate {section} names ['{name}']")) as e:
        load_config(config_dir)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("filename", ["file_feeds.yaml", "contracts.yaml", "gold_models.yaml"])
def test_invalid_yaml(config_dir: Path, filename: str) -> None:
    path = config_dir / filename
    path.write_text(path.read_text() + "\n  - {name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(config_dir)
    assert str(path) in str(info.value)


def test_yaml_that_is_not_a_mapping(config_dir: Path) -> None:
    path = config_dir / "gold_models.yaml"
    path.write_text("- name: dim_product\n")
    with pytest.raises(ConfigError, match=r"gold_models\.yaml"):
        load_config(config_dir)


def test_invalid_pattern_is_a_config_error(config_dir: Path) -> None:
    edit(
        config_dir, "contracts.yaml", lambda d: d["contracts"][0]["columns"][0].update(pattern="[")
    )
    with pytest.raises(ConfigError, match="'products'"):
        load_config(config_dir)
