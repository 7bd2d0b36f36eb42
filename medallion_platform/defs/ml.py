"""The churn model in Dagster: features → model → scores, and their checks.

The work is done by :mod:`medallion_platform.ml` (no Dagster there); these assets only open the
warehouse, call it and describe the result:

- ``ml/churn_features`` returns a ``SqlQuery``: the warehouse IO manager builds the table with
  CREATE OR REPLACE in one transaction, like every gold model;
- ``ml/churn_model`` reads the features and writes a versioned artifact under the platform home
  (no table);
- ``ml/churn_scores`` writes its table itself through the warehouse resource: the rows come
  out of the model batch by batch (Arrow), which a ``SqlQuery`` cannot express and a
  DataFrame output would hold in memory whole. The table is replaced in one transaction.
"""

from datetime import timedelta
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Failure,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from medallion_platform.defs.metadata import table_metadata
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.ml.features import (
    FEATURES,
    FEATURES_TABLE,
    INPUT_TABLES,
    ML_SCHEMA,
    features_sql,
    plan_cutoffs,
)
from medallion_platform.ml.model import (
    NotEnoughHistoryError,
    latest_version,
    load_model,
    read_metadata,
    save_model,
    train_churn_model,
)
from medallion_platform.ml.scoring import SCORES_TABLE, score_coverage, score_customers
from medallion_platform.ml.spec import ChurnSpec
from medallion_platform.warehouse.tables import SqlQuery, describe_table, markdown_table
from medallion_platform.warehouse.warehouse import table_exists

ML_GROUP = "ml"
FEATURES_KEY = AssetKey([ML_SCHEMA, FEATURES_TABLE])
MODEL_KEY = AssetKey([ML_SCHEMA, "churn_model"])
SCORES_KEY = AssetKey([ML_SCHEMA, SCORES_TABLE])
INPUT_KEYS = [AssetKey(table.split(".")) for table in INPUT_TABLES]
DIM_CUSTOMER_KEY = AssetKey(["gold", "dim_customer"])


def _freshness(spec: ChurnSpec) -> FreshnessPolicy:
    return FreshnessPolicy.time_window(
        fail_window=timedelta(hours=spec.freshness_hours),
        warn_window=timedelta(hours=spec.freshness_hours / 2),
    )


def _common(spec: ChurnSpec) -> dict:
    return {
        "group_name": ML_GROUP,
        "owners": [spec.owner],
        "tags": {"layer": "ml"},
        "freshness_policy": _freshness(spec),
    }


def build_ml_assets(
    spec: ChurnSpec, home: Path | str
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    """The three churn assets and their checks; artifacts go under ``<home>/ml/churn_model``."""
    home = Path(home)
    assets = [
        build_churn_features_asset(spec),
        build_churn_model_asset(spec, home),
        build_churn_scores_asset(spec, home),
    ]
    checks = [build_auc_check(spec, home), build_scores_coverage_check()]
    return assets, checks


def build_churn_features_asset(spec: ChurnSpec) -> AssetsDefinition:
    @asset(
        key=FEATURES_KEY,
        deps=INPUT_KEYS,
        description=(
            "Point-in-time churn features and labels: one row per (customer_id, cutoff_date). "
            "Each row reads only orders, refunds and customer versions from before its cutoff; "
            f"churned = no order in the {spec.horizon_days} days from the cutoff. Cutoffs every "
            f"{spec.cutoff_step_days} days back from the latest complete one (at most "
            f"{spec.max_cutoffs}), plus one scoring row per current customer (churned NULL)."
        ),
        kinds={"duckdb", "sql"},
        metadata={
            "grain": "one row per (customer_id, cutoff_date)",
            "features": ", ".join(FEATURES),
            "sql": MetadataValue.md(f"```sql\n{features_sql(spec).strip()}\n```"),
        },
        io_manager_key="warehouse_io_manager",
        **_common(spec),
    )
    def churn_features(context: AssetExecutionContext, warehouse: WarehouseResource) -> SqlQuery:
        with warehouse.warehouse().connect() as conn:
            cutoffs = plan_cutoffs(conn, spec)
        training = [d.isoformat() for d, scoring in cutoffs if not scoring]
        scoring = [d.isoformat() for d, is_scoring in cutoffs if is_scoring]
        context.add_output_metadata(
            {
                "training_cutoffs": len(training),
                "cutoffs": MetadataValue.json(training),
                "scoring_cutoff": scoring[0] if scoring else "",
                "horizon_days": spec.horizon_days,
            }
        )
        return SqlQuery(features_sql(spec))

    return churn_features


def build_churn_model_asset(spec: ChurnSpec, home: Path) -> AssetsDefinition:
    @asset(
        key=MODEL_KEY,
        deps=[FEATURES_KEY],
        description=(
            f"Churn classifier ({spec.estimator}, scikit-learn pipeline) trained on the "
            "features of past cutoffs and evaluated on the latest complete cutoff (time split, "
            "no label window crosses it). Saved as a versioned artifact under "
            "<home>/ml/churn_model/<version>; metadata holds ROC AUC, precision in the top "
            "decile, lift and the top features."
        ),
        kinds={"duckdb", "scikit-learn", "python"},
        metadata={"artifact_root": MetadataValue.path(str(home / "ml" / "churn_model"))},
        output_required=False,
        **_common(spec),
    )
    def churn_model(context: AssetExecutionContext, warehouse: WarehouseResource):
        try:
            with warehouse.warehouse().connect() as conn:
                trained = train_churn_model(conn, spec)
        except NotEnoughHistoryError as exc:
            # A young platform: not a failure. No model, so no scores, until history grows.
            context.log.warning(f"churn model not trained: {exc}")
            return
        path = save_model(trained, home)
        m, meta = trained.metrics, trained.metadata
        context.log.info(f"churn model {trained.version}: AUC {m.auc}, lift {m.lift}")
        measure = (
            "coefficient (standardized inputs)"
            if spec.estimator == "logistic_regression"
            else "permutation importance (test AUC drop)"
        )
        top = markdown_table(["feature", measure], meta["top_features"])
        yield MaterializeResult(
            metadata={
                "auc": _num(m.auc),
                "precision_at_top_decile": _num(m.precision_at_top_decile),
                "baseline_rate": _num(m.baseline_rate),
                "lift": _num(m.lift),
                "n_train": m.n_train,
                "n_test": m.n_test,
                "model_version": trained.version,
                "artifact_path": MetadataValue.path(str(path)),
                "test_cutoff": meta["test_cutoff"],
                "train_cutoffs": MetadataValue.json(meta["train_cutoffs"]),
                "features": MetadataValue.json(list(FEATURES)),
                "params": MetadataValue.json(meta["params"]),
                "training_data_sha256": meta["training_data"]["sha256"],
                "no_orders_churn_rate": round(meta["no_orders_churn_rate"], 6),
                "top_features": MetadataValue.md(top),
            }
        )

    return churn_model


def _num(value: float | None) -> MetadataValue:
    return MetadataValue.float(round(value, 6)) if value is not None else MetadataValue.null()


def build_churn_scores_asset(spec: ChurnSpec, home: Path) -> AssetsDefinition:
    @asset(
        key=SCORES_KEY,
        deps=[MODEL_KEY, FEATURES_KEY, DIM_CUSTOMER_KEY],
        description=(
            "Churn probability for every current customer (not erased in gold.dim_customer): "
            "the latest trained model for customers with orders, the historical no-first-order "
            f"rate for those without. risk_band: high >= {spec.risk_bands.high}, medium >= "
            f"{spec.risk_bands.medium}, else low. Grain: one row per current customer."
        ),
        kinds={"duckdb", "scikit-learn", "python"},
        metadata={"grain": "one row per current customer"},
        **_common(spec),
    )
    def churn_scores(context: AssetExecutionContext, warehouse: WarehouseResource):
        model = load_model(home)
        auc = model.metadata.get("metrics", {}).get("auc")
        if auc is None or auc <= spec.auc_floor:
            # The same bar as churn_model_auc_above_floor, for runs that only rescore.
            raise Failure(
                f"churn model {model.version} has test AUC {auc}, not above the floor "
                f"{spec.auc_floor}: scores are not refreshed; retrain (ml/churn_model) first"
            )
        with warehouse.warehouse().connect() as conn:
            summary = score_customers(conn, model, spec)
            desc = describe_table(conn, ML_SCHEMA, SCORES_TABLE)
        context.log.info(f"scored {summary.rows} customers with {model.version}")
        return MaterializeResult(
            metadata={
                **table_metadata(desc),
                "model_version": summary.model_version,
                "cutoff_date": str(summary.cutoff_date or ""),
                "risk_bands": MetadataValue.json(summary.by_band),
                "scored_by": MetadataValue.json(summary.by_method),
            }
        )

    return churn_scores


def build_auc_check(spec: ChurnSpec, home: Path) -> AssetChecksDefinition:
    @asset_check(
        asset=MODEL_KEY,
        name="churn_model_auc_above_floor",
        blocking=True,  # a model no better than the floor must not score customers
        description=f"The latest model's test-set ROC AUC is above {spec.auc_floor}.",
    )
    def _check() -> AssetCheckResult:
        try:
            version = latest_version(home)
            metrics = read_metadata(home, version)["metrics"]
        except FileNotFoundError as exc:
            return AssetCheckResult(
                passed=False, severity=AssetCheckSeverity.ERROR, metadata={"error": str(exc)}
            )
        auc = metrics.get("auc")
        return AssetCheckResult(
            passed=auc is not None and auc > spec.auc_floor,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "auc": _num(auc),
                "floor": spec.auc_floor,
                "model_version": version,
                "n_test": metrics.get("n_test", 0),
            },
        )

    return _check


def build_scores_coverage_check() -> AssetChecksDefinition:
    @asset_check(
        asset=SCORES_KEY,
        name="one_score_per_current_customer",
        additional_deps=[DIM_CUSTOMER_KEY],
        description="Every current customer of gold.dim_customer has exactly one score, and "
        "no erased or unknown customer has one.",
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        with warehouse.warehouse().connect() as conn:
            if not table_exists(conn, ML_SCHEMA, SCORES_TABLE):
                return AssetCheckResult(passed=False, metadata={"error": "no ml.churn_scores"})
            coverage = score_coverage(conn)
        return AssetCheckResult(
            passed=coverage["missing"] == coverage["duplicated"] == coverage["not_current"] == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata=coverage,
        )

    return _check
