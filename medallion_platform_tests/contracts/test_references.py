"""Declared references between silver tables: the orphan count, and what the spec accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from medallion_platform.config import ConfigError, PlatformConfig, load_config
from medallion_platform.contracts import Contract
from medallion_platform.contracts.checks import ORPHANS_CHECK, orphan_references
from medallion_platform.contracts.compile import silver_columns
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform_tests.conftest import copy_packaged_config


def _create(conn, contract: Contract, rows: list[dict]) -> None:
    """silver.<contract> with the columns apply_contract gives it, holding ``rows``."""
    columns = silver_columns(contract)
    conn.execute("CREATE SCHEMA IF NOT EXISTS silver")
    ddl = ", ".join(f"{quote(c)} {t}" for c, t in columns.items())
    conn.execute(f"CREATE OR REPLACE TABLE {qualified('silver', contract.name)} ({ddl})")
    for row in rows:
        names = ", ".join(quote(c) for c in row)
        conn.execute(
            f"INSERT INTO {qualified('silver', contract.name)} ({names}) "
            f"VALUES ({', '.join('?' for _ in row)})",
            list(row.values()),
        )


def test_the_demo_declares_the_parents_of_its_children(config: PlatformConfig) -> None:
    declared = {c.name: c.references for c in config.contracts if c.references}
    assert declared == {
        "payments_charges": {"order_id": "silver.orders.order_id"},
        "payments_refunds": {"charge_id": "silver.payments_charges.charge_id"},
        "orders": {"customer_id": "silver.customers_history.customer_id"},
        "order_items": {"order_id": "silver.orders.order_id", "sku": "silver.products.sku"},
    }


def test_orphans_are_counted_per_reference_and_named_by_key(
    warehouse: Warehouse, config: PlatformConfig
) -> None:
    items = config.contract("order_items")
    with warehouse.transaction() as conn:
        _create(conn, config.contract("orders"), [{"order_id": "ord_0000001"}])
        _create(conn, config.contract("products"), [{"sku": "SKU-000001"}])
        _create(
            conn,
            items,
            [
                {"order_id": "ord_0000001", "line_no": 1, "sku": "SKU-000001"},  # resolves
                {"order_id": "ord_0000001", "line_no": 2, "sku": "SKU-000404"},
                # The order was quarantined (or its change is not captured yet).
                {"order_id": "ord_0000009", "line_no": 1, "sku": "SKU-000001"},
                {"order_id": "ord_0000009", "line_no": 2, "sku": None},  # NULL: no parent named
            ],
        )
        outcome = orphan_references(conn, items)
    assert outcome.name == ORPHANS_CHECK and not outcome.passed
    assert outcome.detail == {
        "order_id -> silver.orders.order_id": 2,
        "sku -> silver.products.sku": 1,
    }
    assert outcome.failing_rows == 3
    assert outcome.sample == [
        "order_id=ord_0000009, line_no=1",
        "order_id=ord_0000009, line_no=2",
        "order_id=ord_0000001, line_no=2, sku=SKU-000404",
    ]


def test_no_orphans_passes_when_every_parent_is_there(
    warehouse: Warehouse, config: PlatformConfig
) -> None:
    refunds = config.contract("payments_refunds")
    with warehouse.transaction() as conn:
        _create(conn, config.contract("payments_charges"), [{"charge_id": "ch_1"}])
        _create(conn, refunds, [{"refund_id": "re_1", "charge_id": "ch_1"}])
        outcome = orphan_references(conn, refunds)
    assert outcome.passed and outcome.failing_rows == 0 and outcome.sample == []
    assert outcome.detail == {"charge_id -> silver.payments_charges.charge_id": 0}


def test_a_parent_table_not_built_yet_leaves_every_child_an_orphan(
    warehouse: Warehouse, config: PlatformConfig
) -> None:
    """The payments API loaded before the app database: no charge finds its order yet."""
    charges = config.contract("payments_charges")
    with warehouse.transaction() as conn:
        _create(conn, charges, [{"charge_id": "ch_1", "order_id": "ord_0000001"}])
        outcome = orphan_references(conn, charges)
    assert outcome.detail == {"order_id -> silver.orders.order_id": 1}
    assert outcome.sample == ["charge_id=ch_1, order_id=ord_0000001"]
    assert "silver.orders does not exist yet" in outcome.description


def test_a_reference_must_name_a_declared_column_and_a_silver_parent(
    config: PlatformConfig,
) -> None:
    refunds = config.contract("payments_refunds").model_dump()
    with pytest.raises(ValidationError, match=r"'order_id' is not a declared column"):
        Contract.model_validate({**refunds, "references": {"order_id": "silver.orders.order_id"}})
    with pytest.raises(ValidationError, match=r"the parent must be in silver"):
        Contract.model_validate(
            {**refunds, "references": {"charge_id": "bronze.payments_charges.id"}}
        )
    with pytest.raises(ValidationError, match=r"expected schema.table.column"):
        Contract.model_validate({**refunds, "references": {"charge_id": "silver.payments"}})


def test_references_do_not_change_what_silver_holds(config: PlatformConfig) -> None:
    """Declaring a reference only adds a check: the fingerprint (which rebuilds) stays."""
    refunds = config.contract("payments_refunds")
    bare = refunds.model_copy(update={"references": {}})
    assert bare.fingerprint() == refunds.fingerprint()


def test_a_reference_to_an_unknown_table_is_a_config_error(tmp_path: Path) -> None:
    target = copy_packaged_config(tmp_path / "config")
    path = target / "contracts.yaml"
    document = yaml.safe_load(path.read_text())
    refunds = next(c for c in document["contracts"] if c["name"] == "payments_refunds")
    refunds["references"] = {"charge_id": "silver.charges.charge_id"}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(ConfigError, match=r"payments_refunds: references unknown tables"):
        load_config(target)
