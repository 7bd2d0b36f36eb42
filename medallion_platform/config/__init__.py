"""The platform's declarative configuration: feeds, contracts and gold models, validated.

Adding a source, a contract or a gold model is an edit to a YAML file; loading it checks
names, types and cross-references before anything reaches Dagster or SQL. The files here are
the demo's; ``MEDALLION_CONFIG_DIR`` points the platform at a team's own directory (same
file names, SQL under ``<dir>/models/<layer>/``), so its sources live in its own repository.

Each file is read by ``medallion_platform.config_files`` (one loader, one ``ConfigError``,
re-exported here); this module only assembles the files and checks them against each other.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from medallion_platform.config_files import CONFIG_DIR, ConfigError, load_entries
from medallion_platform.connectors.cdc.spec import CdcSource
from medallion_platform.connectors.files.spec import FileFeed
from medallion_platform.connectors.rest.spec import RestSource
from medallion_platform.connectors.streams.spec import StreamSpec
from medallion_platform.contracts.spec import Contract
from medallion_platform.gold.graph import TableGraph
from medallion_platform.gold.incremental import check_incremental
from medallion_platform.gold.spec import MODELS_ROOT, SqlModel
from medallion_platform.ml.spec import ChurnSpec, load_churn_spec
from medallion_platform.reverse_etl.spec import SyncSpec, load_syncs, validate_syncs

CONFIG_DIR_ENV = "MEDALLION_CONFIG_DIR"
M = TypeVar("M", bound=BaseModel)


def config_dir() -> Path:
    """``MEDALLION_CONFIG_DIR`` when set, else the packaged demo declarations."""
    value = os.environ.get(CONFIG_DIR_ENV, "").strip()
    if not value:
        return CONFIG_DIR
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"{CONFIG_DIR_ENV}={value}: no such directory")
    return path


def models_dir(directory: Path) -> Path:
    """Where a configuration directory's SQL models live: ``<dir>/models/<layer>/<name>.sql``
    (the packaged declarations keep theirs in ``medallion_platform/models``)."""
    return MODELS_ROOT if directory.resolve() == CONFIG_DIR else directory / "models"


class PlatformConfig(BaseModel):
    feeds: list[FileFeed] = []
    rest_sources: list[RestSource] = []
    streams: list[StreamSpec] = []
    cdc_sources: list[CdcSource] = []
    contracts: list[Contract] = []
    silver_models: list[SqlModel] = []
    gold_models: list[SqlModel] = []
    churn: ChurnSpec | None = None
    syncs: list[SyncSpec] = []

    @property
    def sql_models(self) -> list[SqlModel]:
        return [*self.silver_models, *self.gold_models]

    def bronze_producers(self) -> dict[str, str]:
        """Bronze table → what fills it (a file feed or a REST endpoint), for cross-checks."""
        tables = {feed.bronze_table: f"feed {feed.name}" for feed in self.feeds}
        for source in self.rest_sources:
            for endpoint in source.endpoints:
                tables[source.bronze_table(endpoint)] = f"endpoint {source.name}.{endpoint.name}"
        for stream in self.streams:
            tables[stream.bronze_table] = f"stream {stream.name}"
        for source in self.cdc_sources:
            for table in source.tables:
                tables[source.bronze_table(table)] = f"CDC {source.name}.{table.qualified}"
        return tables

    def table_graph(self) -> TableGraph:
        """Bronze -> contracts -> SQL models: the build order and what each table feeds."""
        return TableGraph(self.contracts, self.sql_models)

    def contract(self, name: str) -> Contract:
        return next(c for c in self.contracts if c.name == name)


def load_config(config_dir: Path = CONFIG_DIR) -> PlatformConfig:
    """Every declaration in ``config_dir``, validated together; each file is optional."""
    sql = {"models_root": models_dir(config_dir)}
    feeds = _optional(config_dir / "file_feeds.yaml", "feeds", FileFeed)
    rest_sources = _optional(config_dir / "rest_sources.yaml", "sources", RestSource)
    streams = _optional(config_dir / "streams.yaml", "streams", StreamSpec)
    cdc_sources = _optional(config_dir / "cdc_sources.yaml", "sources", CdcSource)
    contracts = _optional(config_dir / "contracts.yaml", "contracts", Contract)
    silver_models = _optional(config_dir / "silver_models.yaml", "models", SqlModel, sql)
    models = _optional(config_dir / "gold_models.yaml", "models", SqlModel, sql)
    for model in silver_models:
        if model.layer != "silver":
            raise ConfigError(f"silver_models.yaml: model {model.name} must have layer: silver")
    for model in models:
        if model.layer != "gold":
            raise ConfigError(f"gold_models.yaml: model {model.name} must have layer: gold")
    by_name = {c.name: c for c in contracts}
    for source in rest_sources:
        for endpoint in source.endpoints:
            contract = by_name.get(endpoint.contract or "")
            if endpoint.contract and contract is None:
                raise ConfigError(
                    f"endpoint {source.name}.{endpoint.name}: contract {endpoint.contract!r} "
                    "is not declared"
                )
            if contract is not None and contract.source != source.bronze_table(endpoint):
                raise ConfigError(
                    f"endpoint {source.name}.{endpoint.name}: contract {contract.name} reads "
                    f"bronze.{contract.source}, but the endpoint writes "
                    f"bronze.{source.bronze_table(endpoint)}"
                )
            if contract is not None:
                _reads_rest_bronze(contract, f"endpoint {source.name}.{endpoint.name}")
    for feed in feeds:
        contract = by_name.get(feed.contract)
        if contract is None:
            raise ConfigError(f"feed {feed.name}: contract {feed.contract!r} is not declared")
        if contract.source != feed.bronze_table:
            raise ConfigError(
                f"feed {feed.name}: contract {contract.name} reads bronze.{contract.source}, "
                f"but the feed writes bronze.{feed.bronze_table}"
            )
        if contract.null_values is None and feed.null_values:
            # The feed says how its files spell "no value"; its contract reads them as NULL.
            by_name[contract.name] = contract.model_copy(update={"null_values": feed.null_values})
    contracts = [by_name[c.name] for c in contracts]
    silver = {f"silver.{c.name}" for c in contracts} | {f"silver.{m.name}" for m in silver_models}
    silver |= {f"silver.{c.changes.history}" for c in contracts if c.changes and c.changes.history}
    gold = {f"gold.{m.name}" for m in models}
    # A model may read a contract's quarantine: a child whose parent was quarantined stays
    # visible in gold (the parent's key is in the quarantined row's _raw).
    quarantine = {f"quarantine.{c.name}" for c in contracts}
    for contract in contracts:
        unknown = set(contract.referenced_tables) - silver
        if unknown:
            raise ConfigError(
                f"contract {contract.name}: references unknown tables {sorted(unknown)}"
            )
    for model in [*silver_models, *models]:
        unknown = set(model.depends_on) - silver - gold - quarantine
        if unknown:
            raise ConfigError(f"{model.layer} model {model.name}: unknown inputs {sorted(unknown)}")
        unknown = set(model.referenced_tables) - silver - gold
        if unknown:
            raise ConfigError(
                f"{model.layer} model {model.name}: references unknown tables {sorted(unknown)}"
            )
        if model.incremental is not None:
            try:
                check_incremental(model, contracts)
            except ValueError as exc:
                raise ConfigError(f"{model.layer}_models.yaml: {exc}") from None
    for stream in streams:
        contract = by_name.get(stream.contract or "")
        if stream.contract and (contract is None or contract.source != stream.bronze_table):
            raise ConfigError(
                f"stream {stream.name}: contract {stream.contract!r} must be declared and read "
                f"bronze.{stream.bronze_table}"
            )
    cdc_tables = {s.bronze_table(t) for s in cdc_sources for t in s.tables}
    for contract in contracts:
        if (contract.source in cdc_tables) != (contract.changes is not None):
            raise ConfigError(
                f"contract {contract.name}: bronze.{contract.source} "
                + (
                    "is a CDC change log: declare changes: {deletes: remove|flag}"
                    if contract.source in cdc_tables
                    else "is not a CDC change log, so it cannot declare changes:"
                )
            )
    names = [c.name for c in contracts]
    for contract in contracts:
        if contract.changes and contract.changes.history in names:
            raise ConfigError(
                f"contract {contract.name}: history table {contract.changes.history!r} is "
                "already a contract's silver table"
            )
    churn = load_churn_spec(config_dir / "ml.yaml") if (config_dir / "ml.yaml").exists() else None
    syncs_path = config_dir / "syncs.yaml"
    syncs = load_syncs(syncs_path) if syncs_path.exists() else []
    config = PlatformConfig(
        syncs=syncs,
        churn=churn,
        feeds=feeds,
        rest_sources=rest_sources,
        streams=streams,
        cdc_sources=cdc_sources,
        contracts=contracts,
        silver_models=silver_models,
        gold_models=models,
    )
    try:
        config.table_graph().order()
    except ValueError as exc:
        raise ConfigError(f"{config_dir}: {exc}") from None
    # Each mapping against the declared schemas of its source and the destination's fields.
    validate_syncs(syncs, config, path=syncs_path)
    return config


def _reads_rest_bronze(contract: Contract, where: str) -> None:
    """A REST bronze table keeps each record's JSON in ``_raw`` (and the platform's own
    ``_``-columns): a contract column that reads a field as a column of its own (or inside
    one, with a ``json_path``) would read NULL in every row, so it is refused here with the
    line that reads it."""
    for column in contract.columns:
        for carrier in (column.source or column.name, *column.aliases):
            if carrier.startswith("_"):
                continue
            inside = column.json_path[1:] if column.json_path else ""
            raise ConfigError(
                f"{where}: contract {contract.name}, column {column.name} reads bronze "
                f"column {carrier!r}, but REST bronze keeps each record's JSON in _raw: "
                f"read the field with `source: _raw, json_path: $.{carrier}{inside}`"
            )


def _optional(
    path: Path, key: str, model: type[M], context: dict[str, object] | None = None
) -> list[M]:
    return load_entries(path, key, model, context) if path.exists() else []


def platform_config() -> PlatformConfig:
    """The configuration in force (``MEDALLION_CONFIG_DIR`` or the packaged demo's), loaded
    once per process and directory."""
    return _load_once(config_dir())


@cache
def _load_once(directory: Path) -> PlatformConfig:
    return load_config(directory)
