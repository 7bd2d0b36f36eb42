"""SQL models in Dagster (gold, and silver built from silver): one asset per declared model,
built by SQL inside the warehouse through the lazy IO-manager type."""

from collections.abc import Mapping
from datetime import timedelta

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    FreshnessPolicy,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

from medallion_platform.defs.columns import COLUMN_SCHEMA_KEY, column_schema
from medallion_platform.defs.lineage import column_lineage_metadata
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.gold import GoldModel
from medallion_platform.gold.checks import (
    CheckOutcome,
    negative_counts,
    rule_violations,
    unresolved_references,
)
from medallion_platform.gold.incremental import FULL_REFRESH_TAG, ModelQuery
from medallion_platform.gold.reconcile import ReconcileOutcome, reconcile
from medallion_platform.gold.spec import ModelRule
from medallion_platform.lineage.columns import read_schemas
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.tables import markdown_table
from medallion_platform.warehouse.warehouse import table_exists


def gold_key(model: GoldModel) -> AssetKey:
    return AssetKey([model.layer, model.name])


def full_refresh_asked(context: AssetExecutionContext) -> bool:
    """Whether the run's ``medallion/full_refresh`` tag asks every SQL model to rebuild whole."""
    return context.run.tags.get(FULL_REFRESH_TAG, "").strip().lower() in ("1", "true", "yes")


def build_gold_asset(
    model: GoldModel, columns: Mapping[str, str] | None = None
) -> AssetsDefinition:
    """``<layer>/<name>``: the model's SELECT, materialized atomically by the IO manager.
    ``columns``: the described columns (``defs.columns.model_descriptions``),
    shown in the UI before the first materialization."""
    name = f"{model.layer}/{model.name}"
    described = {COLUMN_SCHEMA_KEY: column_schema(columns)} if columns else {}

    @asset(
        key=gold_key(model),
        # Tables its foreign keys point at come first too, so the checks see this run's build.
        deps=[
            AssetKey(dep.split("."))
            for dep in dict.fromkeys([*model.depends_on, *model.referenced_tables])
        ],
        group_name=model.layer,
        description=(
            f"{model.description.strip()}\n\nGrain: {model.grain}.\n\nWhere it comes from, "
            f"back to the sources and column by column: `medallion lineage {name} --columns`."
        ),
        owners=[model.owner],
        kinds={"duckdb", "sql"},
        tags={"layer": model.layer},
        metadata={
            "grain": model.grain,
            "key": ", ".join(model.key),
            "sql": MetadataValue.md(f"```sql\n{model.sql}\n```"),
            "lineage": MetadataValue.md(
                f"`medallion lineage {name}`: the assets it is built from, back to the source "
                f"systems, and what reads it. `medallion lineage {name} --columns`: where each "
                "column comes from, through every SQL model."
            ),
            **described,
        },
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=timedelta(hours=model.freshness_hours),
            warn_window=timedelta(hours=model.freshness_hours / 2),
        ),
        io_manager_key="warehouse_io_manager",
        output_required=False,
    )
    def _gold(context: AssetExecutionContext, warehouse: WarehouseResource):
        with warehouse.warehouse().connect() as conn:
            missing = [t for t in model.depends_on if not table_exists(conn, *t.split("."))]
            # Column lineage, derived from the SQL over the inputs' current schemas.
            schemas = {} if missing else read_schemas(conn, model.depends_on)
        if missing:
            # A fresh platform whose first run loads one source: the other inputs come later.
            context.log.warning(
                f"{model.layer}.{model.name} not built: its inputs {', '.join(missing)} do not "
                "exist yet (their sources have not been loaded); it and what reads it are skipped."
            )
            return
        query = ModelQuery(model.sql, model=model, full_refresh=full_refresh_asked(context))
        yield Output(query, metadata=column_lineage_metadata(model, schemas))

    return _gold


def build_gold_checks(model: GoldModel) -> list[AssetChecksDefinition]:
    """Every check of a model: its key, its foreign keys, its rules, and non-negative counts."""
    checks = [build_gold_key_check(model), build_negative_counts_check(model)]
    if model.references:
        checks.append(build_references_check(model))
    checks += [build_rule_check(model, rule) for rule in model.rules]
    if model.reconcile is not None:
        checks += [build_reconcile_check(model, m) for m in model.reconcile.measures]
    return checks


def _result(outcome: CheckOutcome, *, severity=AssetCheckSeverity.ERROR) -> AssetCheckResult:
    metadata: dict = {"failed_rows": outcome.failed_rows, **outcome.detail}
    if outcome.examples:
        metadata["examples"] = MetadataValue.md("\n".join(f"- `{e}`" for e in outcome.examples))
    return AssetCheckResult(passed=outcome.passed, severity=severity, metadata=metadata)


def _reconcile_result(outcome: ReconcileOutcome, by: str) -> AssetCheckResult:
    """WARN: the figure was published; the metadata says by how much and where it is off."""
    totals = [(t.by, t.gold, t.silver, t.difference) for t in outcome.totals]
    metadata: dict = {
        "mismatched_keys": outcome.mismatched_keys,
        "difference": MetadataValue.json({str(t.by): str(t.difference) for t in outcome.totals}),
        "totals": MetadataValue.md(markdown_table([by, "gold", "silver", "difference"], totals)),
    }
    if outcome.examples:
        metadata["offending_keys"] = MetadataValue.md(
            "\n".join(f"- `{e}`" for e in outcome.examples)
        )
    return AssetCheckResult(
        passed=outcome.passed, severity=AssetCheckSeverity.WARN, metadata=metadata
    )


def build_reconcile_check(model: GoldModel, measure: str) -> AssetChecksDefinition:
    """``<measure>_reconciles_with_silver``: the money column, recomputed from silver, agrees
    on every key (WARN, not blocking: gold is already built; the metadata names what is off)."""
    assert model.reconcile is not None
    keys = ", ".join(model.reconcile.key)

    @asset_check(
        asset=gold_key(model),
        name=f"{measure}_reconciles_with_silver",
        additional_deps=[AssetKey(t.split(".")) for t in model.reconcile_tables],
        description=f"{measure} equals the same figure computed from silver (and quarantine) "
        f"on every ({keys}); totals per {model.reconcile.by}, the difference and the first "
        "offending keys in the metadata.",
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            return _reconcile_result(reconcile(conn, model, measure), model.reconcile.by)

    return _check


def build_references_check(model: GoldModel) -> AssetChecksDefinition:
    """Foreign keys resolve: each reference column's values exist in the dimension."""
    targets = ", ".join(f"{c} → {t}" for c, t in model.references.items())

    @asset_check(
        asset=gold_key(model),
        name="foreign_keys_resolve",
        additional_deps=[AssetKey(t.split(".")) for t in model.referenced_tables],
        description=f"Every non-NULL foreign key resolves: {targets}.",
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            return _result(unresolved_references(conn, model))

    return _check


def build_rule_check(model: GoldModel, rule: ModelRule) -> AssetChecksDefinition:
    """A declared row-level truth holds on every row (NULL counts as broken)."""

    @asset_check(
        asset=gold_key(model),
        name=rule.name,
        blocking=True,  # a wrong figure must not flow on to syncs, models and reports
        description=f"{rule.description or rule.name} (every row: {rule.sql}).",
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            return _result(rule_violations(conn, model, rule))

    return _check


def build_negative_counts_check(model: GoldModel) -> AssetChecksDefinition:
    """No integer (count) column is ever negative."""

    @asset_check(
        asset=gold_key(model),
        name="no_negative_counts",
        blocking=True,
        description="No count (integer column) is below zero.",
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            return _result(negative_counts(conn, model))

    return _check


def build_gold_key_check(model: GoldModel) -> AssetChecksDefinition:
    """The grain holds: the model's key is unique and never NULL."""
    keys = ", ".join(quote(k) for k in model.key)
    not_null = " OR ".join(f"{quote(k)} IS NULL" for k in model.key)

    @asset_check(
        asset=gold_key(model),
        name="grain_key_unique",
        blocking=True,  # a broken grain double-counts everything downstream: stop it
        description=f"({', '.join(model.key)}) is unique and not NULL: one row per "
        f"{model.grain.removeprefix('one row per ')}.",
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        table = qualified(model.layer, model.name)
        with warehouse.warehouse().connect() as conn:
            duplicates = conn.execute(
                f"SELECT count(*) FROM (SELECT {keys} FROM {table} GROUP BY ALL "
                "HAVING count(*) > 1)"
            ).fetchone()[0]
            nulls = conn.execute(f"SELECT count(*) FROM {table} WHERE {not_null}").fetchone()[0]
        return AssetCheckResult(
            passed=duplicates == 0 and nulls == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"duplicate_keys": duplicates, "null_keys": nulls},
        )

    return _check
