"""A reverse-ETL sync, as declared in ``config/syncs.yaml`` (Hightouch/Census style).

A sync names a source query over gold/ML tables, a destination and its object, an identity
(the source column that identifies a record and the destination field it matches) and a
mapping (destination field <- source column, with an optional transform, or tags, or a
constant). It is checked in two steps, both at definition load:

1. :class:`SyncSpec` (pydantic): the shape, the names, the SQL is one SELECT reading only
   ``gold``/``ml`` tables, transforms and tag rules parse, the identity field is one the
   destination matches records by, every mapped field exists in the destination client's
   ``FIELDS``, ``batch_size`` is within the client's batch limit.
2. :func:`validate_sync` against the platform's *declared* schemas: a DuckDB catalog built in
   memory from the configuration alone (silver tables from the contracts' column types, every
   silver/gold SQL model as a view over them, ``ml.churn_features`` from its SQL and
   ``ml.churn_scores`` from its DDL), so ``DESCRIBE <source>`` gives the query's real output
   columns and DuckDB types without a warehouse. A mapping naming a column the query does not
   return, or whose type (after its transform) is not the destination field's type, is refused
   with a message naming the sync and the field. (Chosen over reading the warehouse: it works
   on a fresh home, in CI, before the first run, and the result does not depend on which
   tables happen to be built. The engine DESCRIBEs the real source again at every run.)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import duckdb
import sqlglot
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlglot import exp

from medallion_platform.config_files import CONFIG_DIR, ConfigError, describe, load_entries
from medallion_platform.contracts.changes import history_columns
from medallion_platform.contracts.compile import QUARANTINE_COLUMNS, silver_columns
from medallion_platform.contracts.spec import Contract
from medallion_platform.gold.graph import TableGraph
from medallion_platform.gold.spec import SqlModel, tables_read
from medallion_platform.ml.features import FEATURES_TABLE, ML_SCHEMA, features_sql
from medallion_platform.ml.scoring import SCORES_COLUMNS, SCORES_TABLE
from medallion_platform.ml.spec import ChurnSpec
from medallion_platform.reverse_etl.destinations import (
    destination_class,
    destination_info,
    destination_names,
)
from medallion_platform.reverse_etl.destinations.base import Destination, FieldSpec
from medallion_platform.reverse_etl.transforms import (
    DIALECT,
    TransformError,
    ValueType,
    condition_columns,
    literal_type,
    parse_condition,
    parse_transform,
    transform_type,
    validate_tag,
    value_type,
)
from medallion_platform.warehouse.identifiers import qualified, quote, validate_identifier

SYNCS_PATH = CONFIG_DIR / "syncs.yaml"

Mode = Literal["upsert", "update_only", "mirror"]

SOURCE_SCHEMAS = ("gold", "ml")  # what a sync may read: gold tables and ML scores
_OWNER = re.compile(r"team:[A-Za-z0-9_.\-]+|[^@\s]+@[^@\s]+\.[^@\s]+")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}")


class SyncSpecError(ValueError):
    """A sync that cannot run as declared; the message names the sync and the field."""


# --------------------------------------------------------------------------------------------
# Destinations: what the clients in reverse_etl/destinations declare (their ``info``)
# --------------------------------------------------------------------------------------------


def client_options(spec: SyncSpec) -> dict[str, Any]:
    """The client arguments ``spec`` gives: its object, identity field and ``options`` (as its
    destination's options model takes them, adjusted by the client to the mapping), and the
    org's own ``fields``. A ``ValueError`` when the client cannot take them as configured."""
    client = destination_class(spec.destination)
    given = client.info.client_options(
        object=spec.object, identity_field=spec.identity.field, options=spec.options
    )
    given = client.sync_arguments(given, spec.mapping)
    if spec.fields:
        given["fields"] = {n: FieldSpec(name=n, type=f.type) for n, f in spec.fields.items()}
    return given


def open_destination(
    spec: SyncSpec, environ: Mapping[str, str] | None = None, **options: Any
) -> Destination:
    """The client for ``spec``'s destination, configured from ``environ`` (default: the
    process environment) by the variables its ``info.env`` names; ``options`` go to the
    client."""
    client = destination_class(spec.destination)
    return client.from_env(environ=environ, **client_options(spec), **options)


# --------------------------------------------------------------------------------------------
# The declaration
# --------------------------------------------------------------------------------------------


class FieldMapping(BaseModel):
    """How one destination field gets its value: exactly one of ``column`` (with an optional
    ``transform`` and ``default``), ``tags_from`` (``{tag: condition}``) or ``constant``.
    A bare string in YAML is a column name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = None
    transform: str | None = Field(default=None, description="round(n), upper, lower or date")
    tags_from: dict[str, str] | None = Field(
        default=None, description="tag -> condition over source columns; gives a string list"
    )
    constant: str | int | float | bool | list[str] | None = None
    default: str | int | float | bool | list[str] | None = Field(
        default=None, description="sent when the column is NULL"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_kind(self) -> FieldMapping:
        kinds = [k for k in ("column", "tags_from", "constant") if getattr(self, k) is not None] + (
            ["constant"] if "constant" in self.model_fields_set and self.constant is None else []
        )
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of column, tags_from or constant"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if self.column is None and (self.transform is not None or self.default is not None):
            raise ValueError("transform and default apply to a column")
        if self.column is not None:
            validate_identifier(self.column)
        if self.transform is not None:
            parse_transform(self.transform)
        if self.tags_from is not None:
            if not self.tags_from:
                raise ValueError("tags_from needs at least one 'tag: condition' rule")
            for tag, condition in self.tags_from.items():
                validate_tag(tag)
                parse_condition(condition)
        for value in (self.constant, self.default):
            if value is not None:
                literal_type(value)
        return self

    def describe(self) -> str:
        if self.column is not None:
            text = self.column + (f" | {self.transform}" if self.transform else "")
            return text + (f" (default {self.default!r})" if self.default is not None else "")
        if self.tags_from is not None:
            return "tags_from " + ", ".join(f"{t}: {c}" for t, c in self.tags_from.items())
        return f"constant {self.constant!r}"

    def source_columns(self) -> list[str]:
        if self.column is not None:
            return [self.column]
        if self.tags_from is not None:
            return list(
                dict.fromkeys(
                    c for cond in self.tags_from.values() for c in condition_columns(cond)
                )
            )
        return []


class FieldDecl(BaseModel):
    """A destination field the org has and the stock client does not know: a Salesforce custom
    field, a HubSpot property, a Zendesk user field (``user_fields.<key>``). ``identity``: it
    can match records (a Salesforce external id, a HubSpot unique property). A bare string in
    YAML is the type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["string", "number", "date", "boolean", "string_list"]
    identity: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data


class Identity(BaseModel):
    """The source column that identifies a record and the destination field it matches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    field: str

    @field_validator("column")
    @classmethod
    def _column(cls, value: str) -> str:
        return validate_identifier(value)


class SyncSpec(BaseModel):
    """One sync: rows of ``source`` kept in step with records of a destination object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = Field(min_length=10)
    owner: str = Field(description="team:<name> or an email address")
    source: str = Field(description="One SELECT over gold/ml tables.")
    destination: str = Field(description="A destination of reverse_etl/destinations.")
    object: str
    identity: Identity
    mapping: dict[str, FieldMapping] = Field(min_length=1)
    mode: Mode = "upsert"
    batch_size: int | None = Field(default=None, gt=0, description="Default: the API's max.")
    batches_per_commit: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Batches handed to the client at once and committed together: more lets "
        "a client pipeline (Zendesk keeps jobs in flight); a crash resends at most this many.",
    )
    fields: dict[str, FieldDecl] = Field(
        default_factory=dict,
        description="The org's own destination fields the mapping writes: name -> type (or "
        "{type, identity}); the client knows only the fields every account has.",
    )
    check_fields: bool = Field(
        default=False,
        description="Before sending, ask the destination (describe / properties / user_fields) "
        "whether every field the sync writes exists; refuse the run with the missing ones.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Destination options, checked against the destination's options model "
        "(e.g. zendesk {tags: merge|replace}, salesforce {duplicate_rule_header: ...}).",
    )
    dry_run: bool = False
    freshness_minutes: float = Field(default=60, gt=0)
    failure_rate_threshold: float = Field(default=0.05, ge=0, le=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if value not in destination_names():
            raise ValueError(
                f"{value!r} is not a destination of reverse_etl/destinations (known: "
                f"{', '.join(destination_names())})"
            )
        return value

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str) -> str:
        if not _OWNER.fullmatch(value):
            raise ValueError(f"owner {value!r}: use team:<name> or an email address")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        value = value.strip().rstrip(";").strip()
        try:
            statements = [s for s in sqlglot.parse(value, dialect=DIALECT) if s is not None]
        except sqlglot.errors.ParseError as exc:
            raise ValueError(f"source does not parse: {exc}") from None
        if len(statements) != 1 or not isinstance(statements[0], exp.Query):
            raise ValueError("source must be one SELECT statement")
        tables = tables_read(value)
        outside = sorted(t for t in tables if t.split(".")[0] not in SOURCE_SCHEMAS)
        if outside or not tables:
            raise ValueError(
                f"source must read gold or ml tables, named schema.table; it reads "
                f"{sorted(tables) or 'no table'}"
            )
        return value

    @model_validator(mode="after")
    def _against_destination(self) -> SyncSpec:
        info = destination_info(self.destination)
        if self.object not in info.objects:
            raise ValueError(
                f"object {self.object!r}: {self.destination} syncs {', '.join(info.objects)}"
            )
        for name in self.fields:
            if not _FIELD.fullmatch(name):
                raise ValueError(f"fields {name!r}: not a field API name")
        identities = [*info.identity_fields, *(n for n, f in self.fields.items() if f.identity)]
        if self.identity.field not in identities:
            raise ValueError(
                f"identity field {self.identity.field!r}: {self.destination} {self.object} "
                f"records are matched by {' or '.join(identities) or 'an external id field'}; "
                "declare the org's own under fields with identity: true"
            )
        if self.identity.field in self.mapping:
            raise ValueError(
                f"mapping {self.identity.field}: it is the identity field, set from "
                f"identity.column ({self.identity.column}); remove it from the mapping"
            )
        writable = self.writable_fields
        for name, field in self.mapping.items():
            if not _FIELD.fullmatch(name) or name not in writable:
                raise ValueError(
                    f"mapping {name}: not a {self.destination} {self.object} field (known: "
                    f"{', '.join(sorted(writable))}); declare the org's own fields under fields"
                )
            if field.tags_from is not None and writable[name].type != "string_list":
                raise ValueError(
                    f"mapping {name}: tags_from gives a string list, but {self.destination} "
                    f"field {name} is {writable[name].type}"
                )
        try:
            client_options(self)
        except ValueError as exc:
            raise ValueError(f"options: {describe(exc)}") from None
        if self.batch_size is not None and self.batch_size > info.max_batch:
            raise ValueError(
                f"batch_size {self.batch_size} is above {self.destination}'s limit of "
                f"{info.max_batch} records per call"
            )
        return self

    # -- derived -------------------------------------------------------------------------------

    @property
    def writable_fields(self) -> dict[str, FieldSpec]:
        """The fields every account has, and the ones this sync declares for its org."""
        standard = destination_info(self.destination).fields
        declared = {n: FieldSpec(name=n, type=f.type) for n, f in self.fields.items()}
        return {**standard, **declared}

    @property
    def written_fields(self) -> list[str]:
        """The destination fields a run writes (identity first): what ``check_fields`` asks."""
        return [self.identity.field, *self.mapping]

    @property
    def tables(self) -> list[str]:
        """The ``schema.table`` names the source reads: the asset's upstream deps."""
        return sorted(tables_read(self.source))

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size or destination_info(self.destination).max_batch

    @property
    def fingerprint(self) -> str:
        """A hash of what decides the records sent (destination, object, identity, mapping).

        It is part of every row's hash, so changing the mapping resends every record once."""
        decisive = {
            "destination": self.destination,
            "object": self.object,
            "identity": self.identity.model_dump(),
            "mapping": {
                name: field.model_dump(exclude_defaults=True)
                for name, field in sorted(self.mapping.items())
            },
        }
        if self.options:  # options may change what is sent (absent: fingerprints unchanged)
            decisive["options"] = self.options
        canonical = json.dumps(decisive, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Columns and types
# --------------------------------------------------------------------------------------------


def describe_source(conn: duckdb.DuckDBPyConnection, sql: str) -> dict[str, str]:
    """The query's output columns and their DuckDB types, in order (the query is not run)."""
    rows = conn.execute(f"DESCRIBE {sql}").fetchall()
    return {str(row[0]): str(row[1]) for row in rows}


def field_types(spec: SyncSpec, columns: Mapping[str, str]) -> dict[str, ValueType]:
    """The value type each mapped field gets from the source ``columns`` (name -> DuckDB type),
    checked against the destination's field types. Raises :class:`SyncSpecError` naming the
    sync and the field."""
    writable = spec.writable_fields
    where = f"sync {spec.name}"

    def column_type(column: str, used_by: str) -> ValueType:
        if column not in columns:
            raise SyncSpecError(
                f"{where}: {used_by}: the source query returns no column {column!r} "
                f"(it returns {', '.join(columns)})"
            )
        kind = value_type(columns[column])
        if kind is None:
            raise SyncSpecError(
                f"{where}: {used_by}: column {column} is {columns[column]}, which no "
                "destination field can hold"
            )
        return kind

    identity_type = column_type(spec.identity.column, f"identity {spec.identity.field}")
    if identity_type not in ("string", "number"):
        raise SyncSpecError(
            f"{where}: identity {spec.identity.field} <- {spec.identity.column}: an identity "
            f"must be a string or a number, not {identity_type}"
        )
    types: dict[str, ValueType] = {}
    for name, field in spec.mapping.items():
        used_by = f"mapping {name} <- {field.describe()}"
        expected = writable[name].type
        try:
            if field.column is not None:
                kind = column_type(field.column, used_by)
                if field.transform is not None:
                    kind = transform_type(parse_transform(field.transform), kind)
                if field.default is not None and literal_type(field.default) != kind:
                    raise TransformError(
                        f"default {field.default!r} is {literal_type(field.default)}, the "
                        f"value is {kind}"
                    )
            elif field.tags_from is not None:
                for column in field.source_columns():
                    column_type(column, used_by)
                kind = "string_list"
            else:
                kind = literal_type(field.constant) if field.constant is not None else expected
        except TransformError as exc:
            raise SyncSpecError(f"{where}: {used_by}: {exc}") from None
        if kind != expected:
            raise SyncSpecError(
                f"{where}: {used_by}: the value is {kind}, but {spec.destination} "
                f"{spec.object} field {name} expects {expected}"
                + (" (add a transform)" if field.column is not None else "")
            )
        types[name] = kind
    return types


class Declarations(Protocol):
    """What the declared schemas derive from: a ``medallion_platform.config.PlatformConfig``
    (named by shape, not imported: that module loads this one to check the syncs)."""

    @property
    def contracts(self) -> list[Contract]: ...

    @property
    def sql_models(self) -> list[SqlModel]: ...

    @property
    def churn(self) -> ChurnSpec | None: ...


def declared_catalog(config: Declarations) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding every declared table's schema, and no rows (see module doc).

    Silver tables come from the contracts' declared columns; silver and gold SQL models are
    views over them (created in dependency order); the churn tables come from ``ml``'s SQL and
    DDL when the platform declares the churn model."""
    conn = duckdb.connect(":memory:")
    for schema in ("silver", "quarantine", "gold", ML_SCHEMA):
        conn.execute(f"CREATE SCHEMA {quote(schema)}")

    def create_table(schema: str, table: str, columns: Mapping[str, str]) -> None:
        ddl = ", ".join(f"{quote(name)} {sql_type}" for name, sql_type in columns.items())
        conn.execute(f"CREATE TABLE {qualified(schema, table)} ({ddl})")

    for contract in config.contracts:
        create_table("silver", contract.name, silver_columns(contract))
        create_table("quarantine", contract.name, QUARANTINE_COLUMNS)  # gold may read it
        if contract.changes is not None and contract.changes.history:
            create_table("silver", contract.changes.history, history_columns(contract))
    for model in TableGraph(config.contracts, config.sql_models).models_in_order():
        try:
            conn.execute(f"CREATE VIEW {qualified(model.layer, model.name)} AS {model.sql}")
        except duckdb.Error as exc:
            raise SyncSpecError(
                f"cannot derive the declared schema of {model.layer}.{model.name}: {exc}"
            ) from None
    if config.churn is not None:
        conn.execute(
            f"CREATE VIEW {qualified(ML_SCHEMA, FEATURES_TABLE)} AS {features_sql(config.churn)}"
        )
        create_table(ML_SCHEMA, SCORES_TABLE, SCORES_COLUMNS)
    return conn


def catalog_tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database()"
    ).fetchall()
    return {str(row[0]).lower() for row in rows}


def validate_sync(spec: SyncSpec, catalog: duckdb.DuckDBPyConnection) -> dict[str, ValueType]:
    """Check ``spec``'s source, identity and mapping against a catalog's schemas (the
    :func:`declared_catalog` at load, the warehouse at run time); the mapped field types."""
    unknown = sorted(set(spec.tables) - catalog_tables(catalog))
    if unknown:
        raise SyncSpecError(
            f"sync {spec.name}: source reads {', '.join(unknown)}, which the platform does not "
            "build (declare it as a gold model, or enable the churn model for ml tables)"
        )
    try:
        columns = describe_source(catalog, spec.source)
    except duckdb.Error as exc:
        raise SyncSpecError(f"sync {spec.name}: source does not bind: {exc}") from None
    duplicates = sorted({c for c in columns if list(columns).count(c) > 1})
    if duplicates:
        raise SyncSpecError(f"sync {spec.name}: source returns {duplicates} more than once")
    return field_types(spec, columns)


def validate_syncs(
    syncs: Iterable[SyncSpec], config: Declarations, *, path: Path | str = SYNCS_PATH
) -> None:
    """:func:`validate_sync` every sync against the declared schemas; ``ConfigError`` naming
    the file, the sync and the field."""
    catalog = declared_catalog(config)
    try:
        for spec in syncs:
            try:
                validate_sync(spec, catalog)
            except SyncSpecError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    finally:
        catalog.close()


def load_syncs(path: Path | str = SYNCS_PATH, config: Declarations | None = None) -> list[SyncSpec]:
    """The ``syncs`` of a YAML file, validated; with ``config``, also against the declared
    schemas (:func:`validate_syncs`). Raises ``ConfigError`` naming the file and the sync."""
    syncs = load_entries(Path(path), "syncs", SyncSpec)
    if config is not None:
        validate_syncs(syncs, config, path=path)
    return syncs
