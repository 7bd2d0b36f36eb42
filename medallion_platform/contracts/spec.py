"""What a silver table promises, declared in ``config/contracts.yaml`` and validated here."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medallion_platform.warehouse.identifiers import validate_identifier

_TYPE = re.compile(
    r"^(varchar|integer|bigint|double|boolean|date|timestamp|timestamptz|decimal\(\d{1,2},\d{1,2}\))$"
)
_FORBIDDEN_SQL = re.compile(r";|--|/\*|\b(attach|copy|install|load|pragma|export)\b", re.I)


class Column(BaseModel):
    """A typed silver column, the bronze text it is parsed from, and its constraints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str = "varchar"
    required: bool = False
    description: str = ""
    aliases: list[str] = Field(
        default_factory=list, description="Other bronze column names that carry this column."
    )
    min: float | None = None
    max: float | None = None
    accepted_values: list[str] | None = None
    pattern: str | None = Field(default=None, description="Regular expression the text matches.")
    source: str | None = Field(
        default=None, description="Bronze column to read, when it is not named like this one."
    )
    json_path: str | None = Field(
        default=None,
        description="Read this JSON path (e.g. '$.order_id') inside the bronze column's JSON text.",
    )
    transform: Literal["epoch_seconds", "cents"] | None = Field(
        default=None,
        description="epoch_seconds: integer seconds → timestamp (UTC); cents: integer minor "
        "units → decimal (amount / 100).",
    )
    null_values: list[str] | None = Field(
        default=None,
        description="Texts that mean 'no value' in this column (besides the empty string), "
        "overriding the contract's (e.g. [] for a country column where 'NA' is Namibia).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        return [validate_identifier(v) for v in value]

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        return None if value is None else validate_identifier(value)

    @field_validator("json_path")
    @classmethod
    def _json_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\$(\.[A-Za-z_][A-Za-z0-9_]*)+", value):
            raise ValueError(f"json_path {value!r}: use a simple path like '$.a.b'")
        return value

    @model_validator(mode="after")
    def _transform_fits_type(self) -> Column:
        if self.transform == "epoch_seconds" and self.type not in ("timestamp", "timestamptz"):
            raise ValueError(f"column {self.name}: epoch_seconds needs a timestamp type")
        if self.transform == "cents" and not self.type.startswith("decimal("):
            raise ValueError(f"column {self.name}: cents needs a decimal(p,s) type")
        return self

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        value = value.replace(" ", "").lower()
        if not _TYPE.match(value):
            raise ValueError(
                f"unsupported type {value!r}: use varchar, integer, bigint, double, boolean, "
                "date, timestamp, timestamptz or decimal(p,s)"
            )
        if value.startswith("decimal("):
            precision, scale = (int(n) for n in value[8:-1].split(","))
            if not (1 <= precision <= 38 and scale <= precision):
                raise ValueError(f"{value}: precision must be 1..38 and scale <= precision")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        """Checked by DuckDB's engine (RE2), the one that will run it, not by Python's ``re``."""
        if value is not None:
            try:
                duckdb.execute("SELECT regexp_full_match('', $1)", [value]).fetchall()
            except duckdb.Error as exc:
                raise ValueError(
                    f"pattern {value!r} is not a valid RE2 expression: {exc}"
                ) from None
        return value

    @property
    def sql_type(self) -> str:
        return self.type.upper()


class Rule(BaseModel):
    """A row-level business rule: a SQL boolean over the typed columns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sql: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("sql")
    @classmethod
    def _sql(cls, value: str) -> str:
        """One expression over the row's columns, as DuckDB's own parser reads it: no second
        statement, no subquery (so no table function can read anything else)."""
        problem = None
        if _FORBIDDEN_SQL.search(value):
            problem = "comments, ';' and statements are not allowed"
        else:
            parsed = json.loads(
                duckdb.execute("SELECT json_serialize_sql(?)", [f"SELECT ({value})"]).fetchone()[0]
            )
            if parsed.get("error"):
                problem = parsed.get("error_message", "does not parse")
            elif (
                len(parsed["statements"]) != 1
                or parsed["statements"][0]["node"]["from_table"]["type"] != "EMPTY"
                or len(parsed["statements"][0]["node"]["select_list"]) != 1
            ):
                problem = "must be a single expression"
            elif '"SUBQUERY"' in json.dumps(parsed):
                problem = "subqueries are not allowed"
        if problem:
            raise ValueError(f"rule SQL {value!r} is not a single boolean expression: {problem}")
        return value


class DailyPartition(BaseModel):
    """Silver stored by day of a timestamp column, so a run's effect is reported per day."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str = Field(description="The timestamp (or date) column whose UTC day is the partition.")
    name: str = Field(default="partition_date", description="The DATE column added to silver.")

    @field_validator("by", "name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return validate_identifier(value)


class ChangeLog(BaseModel):
    """The bronze source is a CDC change log (``op``, ``commit_lsn``, ``seq``, ``commit_ts``,
    ``key``, ``after``): silver applies its changes in log order, as Databricks' APPLY CHANGES
    does, instead of keeping the latest arrival."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deletes: Literal["remove", "flag"] = Field(
        default="remove",
        description="remove: a deleted key leaves silver. flag: it stays with _deleted = true "
        "and its last known values.",
    )
    history: str | None = Field(
        default=None,
        description="Also keep every version in silver.<history> (SCD type 2: valid_from, "
        "valid_to, is_current, op).",
    )

    @field_validator("history")
    @classmethod
    def _history(cls, value: str | None) -> str | None:
        return None if value is None else validate_identifier(value)


def validate_references(value: dict[str, str]) -> dict[str, str]:
    """``column -> schema.table.column`` foreign keys, every part a plain identifier (they
    reach SQL). Shared by contracts and SQL models, which declare references alike."""
    for column, target in value.items():
        validate_identifier(column)
        parts = target.split(".")
        if len(parts) != 3:
            raise ValueError(f"reference {column} -> {target!r}: expected schema.table.column")
        for part in parts:
            validate_identifier(part)
    return value


CHANGE_COLUMNS = ("_op", "_commit_lsn", "_seq", "_commit_ts")
"""Silver columns a change-log contract adds: the winning change and its position."""


class Contract(BaseModel):
    """A silver table: its columns, business key, how duplicates resolve, and its checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Silver table name (silver.<name>, quarantine.<name>).")
    description: str
    source: str = Field(description="Bronze table it is built from (bronze.<source>).")
    business_key: list[str] = Field(min_length=1)
    latest_by: list[str] = Field(
        default_factory=list,
        description="Columns that order versions of a key; the greatest wins. Ties (and an "
        "empty list) fall back to arrival order: batch, then row number.",
    )
    keep: Literal["latest", "first"] = Field(
        default="latest",
        description="latest: a newer version of a key replaces the stored row (entities). "
        "first: the first arrival wins and later copies are duplicates (immutable events); "
        "silver is then only appended to.",
    )
    partition: DailyPartition | None = Field(
        default=None, description="Store silver by day of a timestamp column."
    )
    changes: ChangeLog | None = Field(
        default=None, description="Apply a CDC change log (deletes, truncates, history)."
    )
    mode: Literal["incremental", "snapshot"] = Field(
        default="incremental",
        description="incremental: each file (batch) adds or corrects rows. snapshot: each file "
        "is the whole table again: only changed keys are applied, keys missing from the "
        "newest file are deleted (snapshot_deletes), a bad row re-sent is quarantined once.",
    )
    snapshot_deletes: Literal["flag", "remove"] = Field(
        default="flag",
        description="snapshot mode: a key missing from the newest snapshot stays with "
        "_deleted = true and its last values (flag), or leaves the table (remove).",
    )
    tombstones: Literal["skip", "delete"] = Field(
        default="skip",
        description="A stream message with a null value (Kafka's tombstone; bronze "
        "`_tombstone`), never quarantined as malformed. skip: counted in the run's stats, "
        "neither silver nor quarantine. delete: removes its key from silver, as Kafka's log "
        "compaction does; the business key must be read from the message key (`source: "
        "_key`), and versions are ordered by arrival (keep: latest, no latest_by).",
    )
    columns: list[Column] = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    extra_columns: Literal["ignore"] = Field(
        default="ignore",
        description="Bronze columns the contract does not name stay in bronze only.",
    )
    min_rows: int = Field(
        default=1,
        ge=0,
        description="Row-count check on the silver table; applies once the source has "
        "delivered rows (an empty source passes).",
    )
    references: dict[str, str] = Field(
        default_factory=dict,
        description="Parents: column -> silver.table.column each non-NULL value should find "
        "(a WARN check counts the orphans: a quarantined or not yet arrived parent).",
    )
    null_values: list[str] | None = Field(
        default=None,
        description="Texts that mean 'no value' (besides the empty string), e.g. ['NA', "
        "'NULL', '\\\\N']. Default: the file feed's null_values, else none.",
    )
    owner: str = "team:data-platform"

    @field_validator("name", "source")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("references")
    @classmethod
    def _references(cls, value: dict[str, str]) -> dict[str, str]:
        value = validate_references(value)
        for column, target in value.items():
            if not target.startswith("silver."):
                raise ValueError(f"reference {column} -> {target!r}: the parent must be in silver")
        return value

    @property
    def referenced_tables(self) -> list[str]:
        """Parent tables of the references, as ``silver.table``."""
        return list(dict.fromkeys(t.rsplit(".", 1)[0] for t in self.references.values()))

    @model_validator(mode="after")
    def _keys_are_columns(self) -> Contract:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"contract {self.name}: duplicate column names")
        for field in (*self.business_key, *self.latest_by, *self.references):
            if field not in names:
                raise ValueError(f"contract {self.name}: {field!r} is not a declared column")
        if self.keep == "first" and self.latest_by:
            raise ValueError(f"contract {self.name}: keep: first orders by arrival, not latest_by")
        if self.changes is not None:
            if self.keep != "latest" or self.latest_by or self.partition is not None:
                raise ValueError(
                    f"contract {self.name}: a change log is applied in log order; drop keep, "
                    "latest_by and partition"
                )
            clash = {"_deleted", *CHANGE_COLUMNS} & set(names)
            if clash or self.changes.history == self.name:
                raise ValueError(
                    f"contract {self.name}: {sorted(clash) or self.changes.history!r} is taken "
                    "by the change log's own columns or table"
                )
        if self.tombstones == "delete":
            not_keyed = [
                c.name for c in self.columns if c.name in self.business_key and c.source != "_key"
            ]
            if not_keyed or self.keep != "latest" or self.latest_by or self.changes is not None:
                raise ValueError(
                    f"contract {self.name}: tombstones: delete removes a message key, so every "
                    f"business key column needs source: _key (not {not_keyed}), with keep: "
                    "latest, no latest_by and no changes (arrival order decides, as in Kafka)"
                )
        if self.mode == "snapshot" and (
            self.keep != "latest" or self.changes is not None or self.partition is not None
        ):
            raise ValueError(
                f"contract {self.name}: mode: snapshot is for tables sent whole (keep: latest, "
                "no changes:, no partition)"
            )
        if self.mode == "snapshot" and "_deleted" in names:
            raise ValueError(f"contract {self.name}: '_deleted' is taken by snapshot mode")
        if self.partition is not None:
            by = next((c for c in self.columns if c.name == self.partition.by), None)
            if by is None or by.type not in ("timestamp", "timestamptz", "date"):
                raise ValueError(
                    f"contract {self.name}: partition.by {self.partition.by!r} must be a "
                    "declared timestamp or date column"
                )
            if self.partition.name in names:
                raise ValueError(
                    f"contract {self.name}: partition column {self.partition.name!r} "
                    "clashes with a declared column"
                )
            if not by.required and by.name not in self.business_key:
                raise ValueError(
                    f"contract {self.name}: partition.by {by.name!r} must be required "
                    "(a row without it has no day)"
                )
        return self

    def fingerprint(self) -> str:
        """A hash of everything that decides silver's content (not descriptions or owners):
        when it changes, silver is rebuilt from bronze so that it still equals a rebuild."""
        decisive = self.model_dump(
            exclude={"description", "owner", "min_rows", "references"},
            mode="json",
        )
        # Options at their defaults are left out, so adding an option does not change the
        # fingerprint of contracts that do not use it (no needless rebuild on upgrade).
        if decisive["keep"] == "latest":
            del decisive["keep"]
        if decisive["partition"] is None:
            del decisive["partition"]
        if decisive["changes"] is None:
            del decisive["changes"]
        if not decisive["null_values"]:
            del decisive["null_values"]
        if decisive["tombstones"] == "skip":
            del decisive["tombstones"]
        if decisive["mode"] == "incremental":
            del decisive["mode"], decisive["snapshot_deletes"]
        for column in decisive["columns"]:
            column.pop("description", None)
            if column["null_values"] is None:
                del column["null_values"]
        for rule in decisive["rules"]:
            rule.pop("description", None)
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def null_markers(self, column: Column) -> list[str]:
        """The texts read as NULL in ``column`` (after trimming): always the empty string."""
        declared = column.null_values if column.null_values is not None else self.null_values
        return ["", *(v.strip() for v in declared or [] if v.strip())]

    def is_required(self, column: Column) -> bool:
        """Business-key columns are always required: a row without its key cannot be merged."""
        return column.required or column.name in self.business_key
