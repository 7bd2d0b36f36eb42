"""Silver in Dagster: one multi-asset per contract (the clean table and its quarantine)."""

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    asset_check,
    multi_asset,
)
from pydantic import Field

from medallion_platform.contracts import (
    Contract,
    SilverRunStats,
    run_contract_checks,
)
from medallion_platform.contracts.changes import history_columns
from medallion_platform.contracts.checks import (
    HISTORY_CHECKS,
    ORPHANS_CHECK,
    ROW_COUNT_RULE,
    check_names,
    orphan_references,
    run_history_checks,
)
from medallion_platform.contracts.compile import QUARANTINE_COLUMNS, silver_columns
from medallion_platform.contracts.drift import DriftReport, detect_drift
from medallion_platform.defs.columns import (
    COLUMN_SCHEMA_KEY,
    column_schema,
    history_descriptions,
    quarantine_descriptions,
    silver_descriptions,
)
from medallion_platform.defs.metadata import table_metadata
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.tables import describe_table, markdown_table

CHECK_DESCRIPTIONS = {
    "unique_key": "The business key is unique.",
    "not_null": "Required columns have no NULL.",
    "accepted_values": "Enumerated columns hold only accepted values.",
    "row_count": ROW_COUNT_RULE,
}


class SilverConfig(Config):
    rebuild: bool = Field(
        default=False,
        description="Rebuild silver and quarantine from all of bronze instead of merging only "
        "the batches newer than the high-water mark. The result is identical.",
    )


def silver_key(contract: Contract) -> AssetKey:
    return AssetKey(["silver", contract.name])


def quarantine_key(contract: Contract) -> AssetKey:
    return AssetKey(["quarantine", contract.name])


def history_key(contract: Contract) -> AssetKey:
    """``silver/<history>`` of a change-log contract that keeps its versions (SCD2)."""
    assert contract.changes is not None and contract.changes.history is not None
    return AssetKey(["silver", contract.changes.history])


def _columns_doc(contract: Contract) -> str:
    rows = []
    for c in contract.columns:
        rules = []
        if contract.is_required(c):
            rules.append("required")
        if c.min is not None:
            rules.append(f">= {c.min:g}")
        if c.max is not None:
            rules.append(f"<= {c.max:g}")
        if c.accepted_values:
            rules.append("one of " + ", ".join(c.accepted_values))
        if c.aliases:
            rules.append("also read from " + ", ".join(c.aliases))
        rows.append((c.name, c.type, "; ".join(rules), c.description))
    return markdown_table(["column", "type", "constraints", "description"], rows)


def _deletes(contract: Contract) -> bool:
    """Whether a run can remove keys: a change log's deletes or the stream's tombstones."""
    return contract.changes is not None or contract.tombstones == "delete"


def _partition_metadata(conn, contract: Contract, rows_by_day: dict[str, int]) -> dict:
    """For a table stored by day: the days this run wrote to (late data shows up as old
    days) and rows per day, newest first, so the UI shows what each run touched."""
    if contract.partition is None:
        return {}
    day = contract.partition.name
    rows = conn.execute(
        f"SELECT {quote(day)}, count(*) FROM {qualified('silver', contract.name)} "
        "GROUP BY 1 ORDER BY 1 DESC LIMIT 90"
    ).fetchall()
    table = markdown_table(
        [day, "rows", "rows written this run"],
        [(str(d), n, rows_by_day.get(str(d), 0)) for d, n in rows],
    )
    return {
        "partition_column": day,
        "days_touched": MetadataValue.json(sorted(rows_by_day)),
        "partitions": MetadataValue.md(table),
    }


DRIFT_CHECK = "schema_drift"


def _snapshot_metadata(stats: SilverRunStats) -> dict[str, int]:
    return {"rows_unchanged": stats.unchanged, "still_quarantined": stats.already_quarantined}


def _renames(fixes: dict[str, str]) -> str:
    return ", ".join(f"{column} → {new}" for column, new in fixes.items())


def _drift_result(key: AssetKey, drift: DriftReport) -> AssetCheckResult:
    rows = [
        (
            f.where,
            ", ".join(f.missing),
            ", ".join(f.new),
            ", ".join(f"{c} → {n}" for c, n in f.fixes.items()),
        )
        for f in drift.findings
    ]
    return AssetCheckResult(
        asset_key=key,
        check_name=DRIFT_CHECK,
        passed=not drift.drifted,
        severity=AssetCheckSeverity.WARN,
        description=drift.summary() or "Every input carries the contract's columns.",
        metadata={
            "inputs_drifted": len(drift.findings),
            "drift": MetadataValue.md(
                markdown_table(["input", "missing", "new columns", "renamed?"], rows)
            ),
            "fix": MetadataValue.json(drift.fix_lines()),
        },
    )


def build_silver_assets(contract: Contract, bronze: AssetKey) -> AssetsDefinition:
    """``silver/<name>`` (typed, deduplicated) and ``quarantine/<name>`` from one bronze table."""
    key = silver_key(contract)
    business_key = ", ".join(contract.business_key)
    latest = ", ".join(contract.latest_by) or "arrival order"
    keeping = (
        "keeping the first arrival (later copies are redeliveries)"
        if contract.keep == "first"
        else f"keeping the latest by {latest}"
    )
    stored_by = (
        f" Stored by day of `{contract.partition.by}` (`{contract.partition.name}`): a run "
        "appends only to the days its new rows belong to, late ones included."
        if contract.partition
        else ""
    )

    if contract.changes is not None:
        deletes = (
            "a deleted key leaves the table"
            if contract.changes.deletes == "remove"
            else "a deleted key stays with `_deleted` = true and its last values"
        )
        keeping = (
            f"applying the change log in commit order (`_commit_lsn`, `_seq`): {deletes}; a "
            "TRUNCATE ends every older row"
        )
    history_specs = []
    if contract.changes is not None and contract.changes.history:
        history_specs.append(
            AssetSpec(
                history_key(contract),
                deps=[bronze],
                group_name="silver",
                description=(
                    f"Every version of each {contract.name} row (SCD type 2): `valid_from` "
                    "(commit time), `valid_to` (the next version's), `is_current`, `_op`; a "
                    "delete or truncate closes a key with a tombstone row. Ordered by the "
                    "change log, so late batches land in their place."
                ),
                owners=[contract.owner],
                kinds={"duckdb", "sql"},
                tags={"layer": "silver", "scd": "2"},
                metadata={
                    "business_key": business_key,
                    COLUMN_SCHEMA_KEY: column_schema(
                        history_descriptions(contract), history_columns(contract)
                    ),
                },
            )
        )

    @multi_asset(
        name=f"silver_{contract.name}",
        specs=[
            AssetSpec(
                key,
                deps=[bronze],
                group_name="silver",
                description=(
                    f"{contract.description}\n\nTyped and validated against the `{contract.name}`"
                    f" contract, deduplicated by ({business_key}) {keeping}. Incremental by "
                    f"bronze batch; a rebuild gives the same table.{stored_by}"
                ),
                owners=[contract.owner],
                kinds={"duckdb", "sql"},
                tags={"layer": "silver"},
                metadata={
                    "business_key": business_key,
                    "contract": MetadataValue.md(_columns_doc(contract)),
                    COLUMN_SCHEMA_KEY: column_schema(
                        silver_descriptions(contract), silver_columns(contract)
                    ),
                },
            ),
            *history_specs,
            AssetSpec(
                quarantine_key(contract),
                deps=[bronze],
                group_name="quarantine",
                description=(
                    f"Rows of bronze.{contract.source} that broke the `{contract.name}` "
                    "contract, with the reason, the raw values (`_raw`) and a pointer back to "
                    "their bronze row (`_batch_id`, `_source`). Nothing is dropped silently."
                ),
                owners=[contract.owner],
                kinds={"duckdb", "sql"},
                tags={"layer": "quarantine"},
                metadata={
                    COLUMN_SCHEMA_KEY: column_schema(
                        quarantine_descriptions(contract), QUARANTINE_COLUMNS
                    )
                },
            ),
        ],
        check_specs=[
            AssetCheckSpec(name, asset=key, blocking=True, description=CHECK_DESCRIPTIONS[name])
            for name in check_names(contract)
        ]
        + [
            AssetCheckSpec(name, asset=spec.key, blocking=True, description=description)
            for spec in history_specs
            for name, description in HISTORY_CHECKS.items()
        ]
        + [
            AssetCheckSpec(
                DRIFT_CHECK,
                asset=key,
                blocking=False,
                description="Every input still carries the contract's columns and no column "
                "appeared that was not there before (WARN; the metadata gives the aliases: line "
                "that reads a renamed column again).",
            )
        ],
    )
    def _silver(context, config: SilverConfig, warehouse: WarehouseResource):
        engine = warehouse.sql_engine()  # DuckDB, or Spark over the lake (views in the warehouse)
        duckdb_file = warehouse.warehouse()
        with duckdb_file.transaction() as conn:
            stats = engine.apply_contract(
                conn,
                contract,
                rebuild=config.rebuild,
                run_id=context.run_id,
                memory=duckdb_file.silver_memory,
            )
            outcomes = run_contract_checks(conn, contract)
            history_outcomes = run_history_checks(conn, contract) if history_specs else []
            drift = detect_drift(conn, contract)
            silver_desc = describe_table(conn, "silver", contract.name)
            days = _partition_metadata(conn, contract, stats.rows_by_day)
            quarantine_desc = describe_table(conn, "quarantine", contract.name)
            history_desc = (
                describe_table(conn, "silver", contract.changes.history)
                if contract.changes is not None and contract.changes.history
                else None
            )
        if drift.drifted:
            context.log.warning(f"{contract.name}: schema drift\n{drift.summary()}")
        context.log.info(
            f"{contract.name}: {stats.rows_in} bronze rows → {stats.valid} valid "
            f"({stats.inserted} new keys, {stats.updated} updated, {stats.superseded} "
            f"duplicates/older versions), {stats.quarantined} quarantined"
        )
        yield MaterializeResult(
            asset_key=key,
            metadata={
                **table_metadata(silver_desc, silver_descriptions(contract)),
                "engine": engine.name,
                "bronze_batches": f"({stats.from_batch_id}, {stats.to_batch_id}]",
                "rebuilt": stats.rebuilt,
                "rows_in": stats.rows_in,
                "rows_added": stats.inserted,
                "rows_updated": stats.updated,
                "duplicates_removed": stats.superseded,
                **({"rows_deleted": stats.deleted} if _deletes(contract) else {}),
                **({"tombstones": stats.tombstones} if stats.tombstones is not None else {}),
                "quarantined_rows": stats.quarantined,
                **(
                    {
                        "rows_unchanged": stats.unchanged,
                        "still_quarantined": stats.already_quarantined,
                    }
                    if contract.mode == "snapshot"
                    else {}
                ),
                **days,
            },
        )
        if history_specs:
            yield MaterializeResult(
                asset_key=history_key(contract),
                metadata={
                    **table_metadata(history_desc, history_descriptions(contract)),
                    "rebuilt": stats.rebuilt,
                },
            )
        yield MaterializeResult(
            asset_key=quarantine_key(contract),
            metadata={
                **table_metadata(quarantine_desc, quarantine_descriptions(contract)),
                "rows_added": stats.quarantined,
                "reasons": MetadataValue.json(stats.reasons),
            },
        )
        yield _drift_result(key, drift)
        checked = [(key, o) for o in outcomes]
        checked += [(history_specs[0].key, o) for o in history_outcomes] if history_specs else []
        for asset_key, outcome in checked:
            yield AssetCheckResult(
                asset_key=asset_key,
                check_name=outcome.name,
                passed=outcome.passed,
                severity=AssetCheckSeverity.ERROR,
                description=outcome.description,
                metadata={
                    "failing_rows": outcome.failing_rows,
                    "sample": MetadataValue.json(outcome.sample),
                },
            )

    return _silver


def build_orphans_check(contract: Contract) -> AssetChecksDefinition:
    """``no_orphans`` on a contract that declares references: WARN, never blocking (a child
    whose parent is quarantined or late is kept, and gold shows it). Its own step after the
    child and the parents, so it counts against this run's build without tying the silver
    tables together (a parent's failed check does not hold back its children)."""
    key = silver_key(contract)
    targets = ", ".join(f"{c} → {t}" for c, t in contract.references.items())

    @asset_check(
        asset=key,
        name=ORPHANS_CHECK,
        additional_deps=[
            parent
            for parent in (AssetKey(t.split(".")) for t in contract.referenced_tables)
            if parent != key
        ],
        description=f"Every reference finds its parent in silver ({targets}); counts the "
        "orphans (parent quarantined or not arrived yet) and names a few by key.",
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            orphans = orphan_references(conn, contract)
        return AssetCheckResult(
            passed=orphans.passed,
            severity=AssetCheckSeverity.WARN,
            description=orphans.description,
            metadata={
                "orphans": orphans.failing_rows,
                "orphans_by_reference": MetadataValue.json(orphans.detail),
                "sample": MetadataValue.json(orphans.sample),
            },
        )

    return _check
