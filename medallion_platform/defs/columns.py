"""Column descriptions for the UI, known before anything is materialized.

Silver columns are described by their contract (its ``description``, else what the contract
checks: type, required, range, accepted values); the columns the platform adds (lineage,
change-log and history columns) by what they mean. A SQL model's columns are described by its
``columns:`` declaration; a column it does not declare takes the description of the one column
it passes through (column lineage derived from the SQL with sqlglot, over the schemas the
contracts and the upstream models define), or says what it is computed from.

They go into each asset's definition metadata as ``dagster/column_schema`` (and the IO manager
keeps them in the schema it records at materialization), so the catalog shows them at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dagster import TableColumn, TableSchema

from medallion_platform.contracts.changes import history_columns
from medallion_platform.contracts.compile import QUARANTINE_COLUMNS, silver_columns
from medallion_platform.contracts.spec import Contract
from medallion_platform.gold.graph import TableGraph
from medallion_platform.gold.spec import SqlModel
from medallion_platform.lineage.columns import ColumnLineageError, model_column_lineage

COLUMN_SCHEMA_KEY = "dagster/column_schema"

PLATFORM_COLUMNS: dict[str, str] = {
    "_batch_id": "Bronze batch the row was loaded in (lineage: bronze._batches).",
    "_source": "Where the row came from: file path, stream partition and offset, CDC LSN, or "
    "API URL and cursor (lineage).",
    "_row_number": "Position of the row in its source batch (lineage).",
    "_op": "Change-log operation: r snapshot, c insert, u update, d delete, t truncate.",
    "_commit_lsn": "Source commit position (PostgreSQL LSN as a number); orders the changes.",
    "_seq": "Position of the change within its source transaction.",
    "_commit_ts": "When the source transaction committed.",
    "_deleted": "True when the key was deleted at the source; its last known values are kept.",
    "valid_from": "When this version became current (its commit time).",
    "valid_to": "When the next version replaced it; empty while current.",
    "is_current": "Whether this is the key's current version (false after a delete).",
    "_reason": "Why the row was quarantined: each rule it broke, by column.",
    "_raw": "The row as bronze holds it (JSON), to fix and replay.",
    "_quarantined_at": "When the row was quarantined.",
}


def _contract_column(contract: Contract, name: str) -> str:
    column = next(c for c in contract.columns if c.name == name)
    if column.description:
        return column.description
    facts = [f"{column.type}"]
    if contract.is_required(column):
        facts.append("required")
    if name in contract.business_key:
        facts.append("business key")
    if column.min is not None:
        facts.append(f">= {column.min:g}")
    if column.max is not None:
        facts.append(f"<= {column.max:g}")
    if column.accepted_values:
        facts.append("one of " + ", ".join(column.accepted_values))
    return f"{name.replace('_', ' ').capitalize()} ({'; '.join(facts)}; contract {contract.name})."


def _describe(contract: Contract, columns: Iterable[str]) -> dict[str, str]:
    declared = {c.name for c in contract.columns}
    partition = contract.partition.name if contract.partition else None
    described = {}
    for name in columns:
        if name in declared:
            described[name] = _contract_column(contract, name)
        elif name == partition:
            described[name] = f"UTC day of {contract.partition.by} (storage partition)."
        else:
            described[name] = PLATFORM_COLUMNS.get(name, "Added by the platform.")
    return described


def silver_descriptions(contract: Contract) -> dict[str, str]:
    return _describe(contract, silver_columns(contract))


def history_descriptions(contract: Contract) -> dict[str, str]:
    return _describe(contract, history_columns(contract))


def quarantine_descriptions(contract: Contract) -> dict[str, str]:
    return {name: PLATFORM_COLUMNS[name] for name in QUARANTINE_COLUMNS}


def column_schema(
    descriptions: Mapping[str, str], types: Mapping[str, str] | None = None
) -> TableSchema:
    """A ``TableSchema`` of described columns (types where known: before materialization a
    SQL model's types are not)."""
    types = types or {}
    return TableSchema(
        columns=[
            TableColumn(name=name, type=types.get(name, ""), description=text)
            for name, text in descriptions.items()
        ]
    )


def contract_schemas(contracts: Iterable[Contract]) -> dict[str, dict[str, str]]:
    """Described columns of every table the contracts define, by ``schema.table``."""
    tables: dict[str, dict[str, str]] = {}
    for contract in contracts:
        tables[f"silver.{contract.name}"] = silver_descriptions(contract)
        tables[f"quarantine.{contract.name}"] = quarantine_descriptions(contract)
        if contract.changes is not None and contract.changes.history:
            tables[f"silver.{contract.changes.history}"] = history_descriptions(contract)
    return tables


_DESCRIBED: dict[str, dict[str, dict[str, str]]] = {}


def cached_model_descriptions(
    models: Sequence[SqlModel], contracts: Sequence[Contract], cache_dir: Path
) -> dict[str, dict[str, str]]:
    """:func:`model_descriptions`, kept in ``cache_dir`` by a hash of the models (SQL
    included) and contracts: deriving them costs sqlglot a second or more, and every run's
    process builds the definitions again."""
    digest = hashlib.sha256()
    for model in models:
        digest.update(model.model_dump_json().encode())
        digest.update(model.sql.encode())
    for contract in contracts:
        digest.update(contract.model_dump_json().encode())
    key = digest.hexdigest()[:24]
    if key in _DESCRIBED:  # one process builds the definitions many times (tests, reloads)
        return _DESCRIBED[key]
    path = cache_dir / f"column_descriptions-{key}.json"
    with contextlib.suppress(OSError, ValueError):
        _DESCRIBED[key] = json.loads(path.read_text())
        return _DESCRIBED[key]
    described = _DESCRIBED[key] = model_descriptions(models, contracts)
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(described))
        tmp.replace(path)
    return described


def model_descriptions(
    models: Iterable[SqlModel], contracts: Iterable[Contract]
) -> dict[str, dict[str, str]]:
    """Described columns of each SQL model, by ``layer.name``, in dependency order. A model
    whose SQL sqlglot cannot follow, or that reads a table no contract or model defines, gets
    its declared columns only. Raises ``ValueError`` if a model declares a column its SQL does
    not produce."""
    contracts = list(contracts)
    known = contract_schemas(contracts)
    result: dict[str, dict[str, str]] = {}
    for model in TableGraph(contracts, models).models_in_order():
        name = f"{model.layer}.{model.name}"
        result[name] = known[name] = _model_columns(model, known)
    return result


def _model_columns(model: SqlModel, known: dict[str, dict[str, str]]) -> dict[str, str]:
    name = f"{model.layer}.{model.name}"
    schemas = {t: list(known[t]) for t in model.depends_on if t in known}
    try:
        lineage = model_column_lineage(model, schemas)
    except ColumnLineageError:
        return dict(model.columns)
    unknown = sorted(set(model.columns) - set(lineage))
    if unknown:
        raise ValueError(
            f"{name}: columns: {', '.join(unknown)} not produced by its SQL "
            f"({model.sql_path}); it produces {', '.join(lineage)}"
        )
    described = {}
    for column, sources in lineage.items():
        if column in model.columns:
            described[column] = model.columns[column]
            continue
        refs = sorted(sources)
        if len(refs) == 1 and (text := known.get(refs[0].table, {}).get(refs[0].column)):
            ref = refs[0]
            described[column] = (
                text if ref.column == column else f"{text} (from {ref.table}.{ref.column})"
            )
        elif shown := [r for r in refs if not r.column.startswith("_")][:4]:
            more = " and more" if len(shown) < len(refs) else ""
            described[column] = "Computed from " + ", ".join(map(str, shown)) + more + "."
        else:
            described[column] = "Computed in the SQL (no source column: a count or constant)."
    return described
