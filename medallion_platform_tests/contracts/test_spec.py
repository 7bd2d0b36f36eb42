"""Contract validation: what reaches SQL from contracts.yaml is checked when it is loaded."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest
from pydantic import ValidationError

from medallion_platform.contracts import Column, Contract, Rule
from medallion_platform.contracts.compile import checked_rows_sql


def contract(**overrides: Any) -> Contract:
    spec: dict[str, Any] = {
        "name": "orders",
        "description": "Orders",
        "source": "files_orders",
        "business_key": ["order_id"],
        "columns": [
            {"name": "order_id", "type": "varchar"},
            {"name": "amount", "type": "decimal(12,2)", "min": 0},
            {"name": "placed_at", "type": "timestamp"},
        ],
    }
    spec.update(overrides)
    return Contract.model_validate(spec)


def test_a_minimal_contract_is_valid_and_its_key_is_required() -> None:
    c = contract(latest_by=["placed_at"], rules=[{"name": "positive", "sql": "amount > 0"}])
    assert c.column("amount").sql_type == "DECIMAL(12,2)"
    assert c.is_required(c.column("order_id"))  # business key, although not marked required
    assert not c.is_required(c.column("amount"))
    assert c.extra_columns == "ignore" and c.min_rows == 1


@pytest.mark.parametrize("name", ["drop table", "Orders", "1orders", "x; drop", 'o"rders', ""])
def test_contract_name_must_be_a_plain_identifier(name: str) -> None:
    with pytest.raises(ValidationError, match="not a valid identifier"):
        contract(name=name)


@pytest.mark.parametrize(
    "overrides",
    [
        {"source": "files orders"},
        {"columns": [{"name": "Order ID"}]},
        {"columns": [{"name": "order_id", "aliases": ["Order ID"]}]},
        {"rules": [{"name": "no-dashes", "sql": "TRUE"}]},
    ],
    ids=["source", "column", "alias", "rule"],
)
def test_every_identifier_is_validated(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="not a valid identifier"):
        contract(**overrides)


@pytest.mark.parametrize(
    "sql_type", ["money", "varchar(10)", "decimal(12)", "decimal(123,2)", "int", "text; drop"]
)
def test_unsupported_types_are_rejected(sql_type: str) -> None:
    with pytest.raises(ValidationError, match="unsupported type"):
        Column(name="x", type=sql_type)


@pytest.mark.parametrize(
    ("written", "normalized"),
    [("DECIMAL(12, 2)", "decimal(12,2)"), ("TimestampTZ", "timestamptz"), ("BIGINT", "bigint")],
)
def test_types_are_normalized(written: str, normalized: str) -> None:
    assert Column(name="x", type=written).type == normalized


@pytest.mark.parametrize("sql_type", ["decimal(40,2)", "decimal(5,10)"])
def test_decimal_precision_and_scale_are_checked(sql_type: str) -> None:
    with pytest.raises(duckdb.Error):
        duckdb.connect().execute(f"CREATE TABLE t (x {sql_type.upper()})")
    with pytest.raises(ValidationError):
        Column(name="x", type=sql_type)


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ({"business_key": ["customer_id"]}, "'customer_id' is not a declared column"),
        ({"latest_by": ["updated_at"]}, "'updated_at' is not a declared column"),
        ({"business_key": []}, "at least 1 item"),
        ({"columns": []}, "at least 1 item"),
        (
            {"columns": [{"name": "order_id"}, {"name": "order_id", "type": "bigint"}]},
            "duplicate column names",
        ),
        ({"extra_columns": "keep"}, "extra_columns"),
        ({"min_rows": -1}, "min_rows"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
    ids=[
        "key",
        "latest_by",
        "empty_key",
        "no_columns",
        "duplicate",
        "extra_columns",
        "min_rows",
        "unknown_field",
    ],
)
def test_structural_errors(field: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        contract(**field)


@pytest.mark.parametrize(
    "sql",
    [
        "amount > 0; DROP TABLE silver.orders",
        "amount > 0 -- sneaky",
        "amount > 0 /* sneaky */",
        "ATTACH 'other.duckdb'",
        "amount > (SELECT 1 FROM (ATTACH 'x'))",
        "copy silver.orders TO '/tmp/x.csv'",
        "install httpfs",
        "LOAD httpfs",
        "pragma version",
        "export database '/tmp/x'",
        "clicks <= (SELECT length(content) FROM read_text('/etc/passwd'))",
        "clicks IN (SELECT 1)",
        "TRUE), TRUE) THEN NULL END, (SELECT NULL",
        "clicks <=",
    ],
)
def test_rule_sql_must_be_a_single_expression(sql: str) -> None:
    with pytest.raises(ValidationError, match="single boolean expression"):
        Rule(name="r", sql=sql)


@pytest.mark.parametrize("sql", ["amount <= 1000", "payload_kb > 0 AND download_count >= 0"])
def test_plain_rule_sql_is_accepted(sql: str) -> None:
    assert Rule(name="r", sql=sql).sql == sql


def test_invalid_regex_pattern_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="pattern"):
        Column(name="sku", pattern="SKU-[0-9")


def test_valid_regex_pattern_is_kept() -> None:
    assert Column(name="sku", pattern="SKU-[0-9]{6,}").pattern == "SKU-[0-9]{6,}"


def test_pattern_that_duckdb_cannot_run_is_rejected() -> None:
    pattern = r"(?=SKU-)SKU-\d+"
    bronze = {"_batch_id", "_source", "_row_number", "order_id"}
    with duckdb.connect() as conn:
        conn.execute(
            "CREATE SCHEMA bronze; CREATE TABLE bronze.files_orders "
            "(_batch_id BIGINT, _source VARCHAR, _row_number BIGINT, order_id VARCHAR)"
        )
        conn.execute("INSERT INTO bronze.files_orders VALUES (1, 's', 1, 'SKU-1')")
        sql = checked_rows_sql(
            Contract.model_construct(
                name="orders",
                source="files_orders",
                business_key=["order_id"],
                columns=[Column.model_construct(name="order_id", type="varchar", pattern=pattern)],
                rules=[],
            ),
            bronze,
        )
        with pytest.raises(duckdb.Error, match="invalid perl operator"):
            conn.execute(sql, [0, 1]).fetchall()
    with pytest.raises(ValidationError):
        Column(name="order_id", pattern=pattern)
