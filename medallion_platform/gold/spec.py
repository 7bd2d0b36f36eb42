"""A SQL model, as declared in ``config/gold_models.yaml`` (or ``silver_models.yaml`` for
silver tables built from other silver tables); its SQL lives in ``models/<layer>/<name>.sql``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medallion_platform.warehouse.identifiers import validate_identifier

MODELS_ROOT = Path(__file__).resolve().parent.parent / "models"
MODELS_DIR = MODELS_ROOT / "gold"


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
        referenced = {  # DuckDB reports "silver.x as c" for an aliased table
            re.split(r"\s+as\s+", name, flags=re.IGNORECASE)[0].lower()
            for name in duckdb.get_table_names(self.sql, qualified=True)
        }
        declared = {d.lower() for d in self.depends_on}
        if referenced != declared:
            raise ValueError(
                f"{self.layer} model {self.name}: SQL reads {sorted(referenced)} but depends_on "
                f"declares {sorted(declared)}"
            )
        return self


GoldModel = SqlModel  # the name most call sites use
