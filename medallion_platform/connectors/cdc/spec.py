"""A PostgreSQL source captured by logical decoding, as declared in ``config/cdc_sources.yaml``.

Each captured table lands in its own bronze change log, ``bronze.<source>_<table>``, so the
asset for a table is found by its name and a silver contract reads one table's changes.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medallion_platform.warehouse.identifiers import validate_identifier

_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class CdcTable(BaseModel):
    """One source table. The change log's key is ``key`` when declared, else the table's
    replica identity: its primary key (DEFAULT), its identity index (USING INDEX), or under
    FULL without either, the whole row."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    schema_name: str = Field(default="public", alias="schema")
    description: str = ""
    key: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Columns that identify a row, for a table without a primary key (it "
        "needs REPLICA IDENTITY FULL, so that a delete carries them). With a primary key or "
        "an identity index, the key must be within its columns.",
    )

    @field_validator("name", "schema_name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("key")
    @classmethod
    def _key(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for column in value:
                validate_identifier(column)
            if len(set(value)) != len(value):
                raise ValueError(f"key {value} names a column twice")
        return value

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.name}"


class CdcSensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_lag_bytes: int = Field(
        default=1, ge=1, description="Pending WAL bytes on the slot that start a run."
    )
    minimum_interval_seconds: int = Field(default=30, ge=1)


class CdcSource(BaseModel):
    """A PostgreSQL database: where it is (env vars), what is captured, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Source name; bronze tables are bronze.<name>_<table>.")
    description: str
    dsn_env: str = Field(
        description="Env var with the libpq connection string (host, port, dbname, user); "
        "keep the password out of it and in password_env."
    )
    password_env: str | None = Field(default=None, description="Env var with the password.")
    slot: str | None = Field(default=None, description="Replication slot (medallion_<name>).")
    publication: str | None = Field(
        default=None, description="Publication (medallion_<name>), created if absent."
    )
    tables: list[CdcTable] = Field(min_length=1)
    batch_size: int = Field(
        default=20_000,
        ge=1,
        description="Changes per bronze commit: bounds the capture's memory, even inside one "
        "large transaction. (The initial snapshot is one warehouse transaction, so that a "
        "crash leaves nothing; DuckDB's memory grows with it.)",
    )
    sensor: CdcSensorSpec = Field(default_factory=CdcSensorSpec)
    owner: str = "team:data-platform"

    @field_validator("name", "slot", "publication")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        return None if value is None else validate_identifier(value)

    @field_validator("dsn_env", "password_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @property
    def slot_name(self) -> str:
        return self.slot or f"medallion_{self.name}"

    @property
    def publication_name(self) -> str:
        return self.publication or f"medallion_{self.name}"

    def bronze_table(self, table: CdcTable) -> str:
        return validate_identifier(f"{self.name}_{table.name}")

    def table(self, qualified: str) -> CdcTable | None:
        return next((t for t in self.tables if t.qualified == qualified), None)
