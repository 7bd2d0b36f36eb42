"""A SQL model, as declared in ``config/gold_models.yaml`` (or ``silver_models.yaml`` for
silver tables built from other silver tables); its SQL lives in ``models/<layer>/<name>.sql``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import sqlglot
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlglot import exp

from medallion_platform.warehouse.identifiers import validate_identifier

MODELS_ROOT = Path(__file__).resolve().parent.parent / "models"
MODELS_DIR = MODELS_ROOT / "gold"


class ModelRule(BaseModel):
    """A row-level truth of the model (SQL boolean over its columns), checked after each build."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sql: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_identifier(value)


class SqlModel(BaseModel):
    """A table built by SQL: what one row is (grain), its key, and the SELECT that builds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    layer: Literal["silver", "gold"] = "gold"
    description: str
    grain: str = Field(description="What one row of the table is.")
    key: list[str] = Field(min_length=1, description="Columns unique per row (checked).")
    depends_on: list[str] = Field(
        min_length=1, description="Tables the SQL reads, as schema.table (checked against SQL)."
    )
    references: dict[str, str] = Field(
        default_factory=dict,
        description="Foreign keys: column -> schema.table.column it must resolve to (checked).",
    )
    rules: list[ModelRule] = Field(default_factory=list, description="Row-level truths (checked).")
    freshness_hours: float = Field(default=24, gt=0)
    owner: str = "team:analytics"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("key")
    @classmethod
    def _key(cls, value: list[str]) -> list[str]:
        return [validate_identifier(v) for v in value]

    @field_validator("references")
    @classmethod
    def _references(cls, value: dict[str, str]) -> dict[str, str]:
        for column, target in value.items():
            validate_identifier(column)
            parts = target.split(".")
            if len(parts) != 3:
                raise ValueError(f"reference {column} -> {target!r}: expected schema.table.column")
            for part in parts:
                validate_identifier(part)
        return value

    @property
    def referenced_tables(self) -> list[str]:
        """Tables the foreign keys point at: built before this model's checks run."""
        return list(dict.fromkeys(t.rsplit(".", 1)[0] for t in self.references.values()))

    @property
    def sql_path(self) -> Path:
        return MODELS_ROOT / self.layer / f"{self.name}.sql"

    @property
    def sql(self) -> str:
        return self.sql_path.read_text().strip().rstrip(";")

    @model_validator(mode="after")
    def _sql_matches_declaration(self) -> SqlModel:
        if not self.sql_path.is_file():
            raise ValueError(f"{self.layer} model {self.name}: {self.sql_path} does not exist")
        referenced = tables_read(self.sql)
        declared = {d.lower() for d in self.depends_on}
        if referenced != declared:
            raise ValueError(
                f"{self.layer} model {self.name}: SQL reads {sorted(referenced)} but depends_on "
                f"declares {sorted(declared)}"
            )
        return self


def tables_read(sql: str) -> set[str]:
    """The ``schema.table`` names a SELECT reads (CTE names and table functions excluded).

    Parsed with sqlglot: DuckDB's own ``get_table_names`` cannot bind an ASOF join."""
    try:
        tree = sqlglot.parse_one(sql, dialect="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"cannot parse the SQL: {exc}") from None
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    return {
        f"{table.db}.{table.name}".lower() if table.db else table.name.lower()
        for table in tree.find_all(exp.Table)
        if table.name and (table.db or table.name.lower() not in ctes)
    }


GoldModel = SqlModel  # the name most call sites use
