"""A SQL model, as declared in ``config/gold_models.yaml`` (or ``silver_models.yaml`` for
silver tables built from other silver tables); its SQL lives in ``models/<layer>/<name>.sql``.

The packaged models live in ``medallion_platform/models``; a team's own configuration directory
(``MEDALLION_CONFIG_DIR``) keeps its SQL in ``<dir>/models``, passed in as the validation
context ``{"models_root": ...}`` by the config loader."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import sqlglot
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlglot import exp

from medallion_platform.contracts.spec import validate_references
from medallion_platform.warehouse.identifiers import validate_identifier

MODELS_ROOT = Path(__file__).resolve().parent.parent / "models"
MODELS_DIR = MODELS_ROOT / "gold"
LEDGER = "ledger.sql"  # models/<layer>/reconcile/: the silver money every reconciliation reads
SILVER_SIDE = ("silver", "quarantine")


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


class Reconciliation(BaseModel):
    """Money columns checked against the silver they derive from (WARN, not blocking).

    ``models/gold/reconcile/<model>.sql`` computes the same columns at the model's grain from
    silver (and quarantine) only, reading the shared ``ledger`` (``reconcile/ledger.sql``: every
    order total and succeeded refund in silver); never from gold, so a model that loses,
    doubles or moves money disagrees with it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: list[str] = Field(min_length=1, description="Columns rows are compared on.")
    by: str = Field(default="currency", description="Totals are reported per value of this.")
    measures: list[str] = Field(min_length=1, description="Money columns, one check each.")

    @field_validator("key", "measures")
    @classmethod
    def _identifiers(cls, value: list[str]) -> list[str]:
        return [validate_identifier(v) for v in value]

    @field_validator("by")
    @classmethod
    def _by(cls, value: str) -> str:
        return validate_identifier(value)


class Incremental(BaseModel):
    """``incremental: {from: silver.x}``: the model's rows for a key depend only on the rows of
    ``silver.x`` with the same key values, so a build may replace just the keys whose input
    rows changed (:mod:`medallion_platform.gold.incremental`) instead of the whole table."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(
        alias="from",
        description="The one table the model reads, as schema.table: a contract's silver "
        "table whose business key includes the model's key.",
    )

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        parts = value.lower().split(".")
        if len(parts) != 2:
            raise ValueError(f"{value!r} is not schema.table")
        return ".".join(validate_identifier(p) for p in parts)


class SqlModel(BaseModel):
    """A table built by SQL: what one row is (grain), its key, and the SELECT that builds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    layer: Literal["silver", "gold"] = "gold"
    description: str
    grain: str = Field(description="What one row of the table is.")
    key: list[str] = Field(min_length=1, description="Columns unique per row (checked).")
    depends_on: list[str] = Field(
        default_factory=list,
        description="Tables the SQL reads, as schema.table: read from the SQL when left out; "
        "when given, an assertion (it must name exactly what the SQL reads).",
    )
    references: dict[str, str] = Field(
        default_factory=dict,
        description="Foreign keys: column -> schema.table.column it must resolve to (checked).",
    )
    rules: list[ModelRule] = Field(default_factory=list, description="Row-level truths (checked).")
    reconcile: Reconciliation | None = Field(
        default=None, description="Money columns reconciled with silver (checked, WARN)."
    )
    freshness_hours: float = Field(default=24, gt=0)
    owner: str = "team:analytics"
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column -> description, shown in the UI. A column not listed here takes "
        "the description of the one column it passes through (column lineage), if any.",
    )
    incremental: Incremental | None = Field(
        default=None,
        description="Build only the keys whose input rows changed (else the whole table).",
    )
    # Where ``<layer>/<name>.sql`` is read from: the packaged models unless the loader says.
    _models_root: Path = PrivateAttr(default=MODELS_ROOT)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("key")
    @classmethod
    def _key(cls, value: list[str]) -> list[str]:
        return [validate_identifier(v) for v in value]

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            validate_identifier(name)
            if not text.strip():
                raise ValueError(f"column {name!r}: the description is empty")
        return value

    @field_validator("references")
    @classmethod
    def _references(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_references(value)

    @property
    def referenced_tables(self) -> list[str]:
        """Tables the foreign keys point at: built before this model's checks run."""
        return list(dict.fromkeys(t.rsplit(".", 1)[0] for t in self.references.values()))

    @property
    def sql_path(self) -> Path:
        return self._models_root / self.layer / f"{self.name}.sql"

    @property
    def sql(self) -> str:
        return self.sql_path.read_text().strip().rstrip(";")

    @property
    def reconcile_path(self) -> Path:
        return self._models_root / self.layer / "reconcile" / f"{self.name}.sql"

    @property
    def reconcile_sql(self) -> str:
        """The silver side of the reconciliation: the model's SQL over the shared ledger."""
        ledger = (self.reconcile_path.parent / LEDGER).read_text().strip().rstrip(";")
        own = self.reconcile_path.read_text().strip().rstrip(";")
        return f"WITH ledger AS (\n{ledger}\n)\nSELECT * FROM (\n{own}\n)"

    @property
    def reconcile_tables(self) -> list[str]:
        """Tables the silver side reads (``silver.x``, ``quarantine.x``), sorted."""
        return sorted(tables_read(self.reconcile_sql))

    @model_validator(mode="after")
    def _sql_matches_declaration(self, info: ValidationInfo) -> SqlModel:
        root = (info.context or {}).get("models_root")
        if root is not None:
            self._models_root = Path(root)
        if not self.sql_path.is_file():
            raise ValueError(f"{self.layer} model {self.name}: {self.sql_path} does not exist")
        try:
            referenced = tables_read(self.sql)
        except ValueError as exc:
            raise ValueError(f"{self.layer} model {self.name}: {self.sql_path}: {exc}") from None
        if not referenced:
            raise ValueError(f"{self.layer} model {self.name}: its SQL reads no table")
        declared = {d.lower() for d in self.depends_on}
        if not self.depends_on:
            # Frozen after validation; the inputs are filled in once, here, from the SQL.
            self.__dict__["depends_on"] = sorted(referenced)
        elif referenced != declared:
            raise ValueError(
                f"{self.layer} model {self.name}: SQL reads {sorted(referenced)} but depends_on "
                f"declares {sorted(declared)}"
            )
        reads = sorted({d.lower() for d in self.depends_on})
        if self.incremental is not None and reads != [self.incremental.from_]:
            raise ValueError(
                f"{self.layer} model {self.name}: incremental.from is "
                f"{self.incremental.from_}, but an incremental model reads that one table only "
                f"(its SQL reads {sorted(referenced)})"
            )
        if self.reconcile is not None:
            if not self.reconcile_path.is_file():
                raise ValueError(
                    f"{self.layer} model {self.name}: reconcile needs {self.reconcile_path}"
                )
            other = [t for t in self.reconcile_tables if t.split(".")[0] not in SILVER_SIDE]
            if other:
                raise ValueError(
                    f"{self.layer} model {self.name}: the reconciliation must read silver and "
                    f"quarantine only (it checks gold against them), not {other}"
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
