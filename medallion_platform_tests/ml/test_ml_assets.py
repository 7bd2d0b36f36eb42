"""The churn assets and checks through Dagster, on a real warehouse file in a temp home."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    materialize,
)

from medallion_platform.defs.io_manager import WarehouseIOManager
from medallion_platform.defs.ml import FEATURES_KEY, MODEL_KEY, SCORES_KEY, build_ml_assets
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.ml import latest_version, load_churn_spec, model_root
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.ml import Shop, generate_shop, write_shop

SPEC = load_churn_spec()
INPUTS = [
    AssetKey(["gold", "fct_orders"]),
    AssetKey(["gold", "dim_customer"]),
    AssetKey(["silver", "customers_history"]),
    AssetKey(["silver", "payments"]),
    AssetKey(["silver", "payments_refunds"]),
]


@pytest.fixture
def shop(warehouse: Warehouse) -> Shop:
    shop = generate_shop()
    with warehouse.transaction() as conn:
        write_shop(conn, shop)
    return shop


def resources(settings: PlatformSettings) -> dict:
    path = str(settings.warehouse_path)
    return {
        "warehouse": WarehouseResource(path=path, lock_timeout_s=10),
        "warehouse_io_manager": WarehouseIOManager(database=path),
    }


def run(settings: PlatformSettings, spec=SPEC):
    assets, checks = build_ml_assets(spec, settings.home)
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [*assets, *checks], resources=resources(settings), instance=instance, raise_on_error=False
    )
    return result


def materialized(result) -> dict[str, dict]:
    return {
        e.event_specific_data.materialization.asset_key.to_user_string(): {
            k: v.value for k, v in e.event_specific_data.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }


def checks_of(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_the_asset_graph_is_declared_as_the_platform_expects(settings) -> None:
    assets, checks = build_ml_assets(SPEC, settings.home)
    specs = {spec.key: spec for a in assets for spec in a.specs}
    assert list(specs) == [FEATURES_KEY, MODEL_KEY, SCORES_KEY]
    for spec in specs.values():
        assert spec.group_name == "ml"
        assert spec.owners == ["team:data-science"]
        assert spec.tags.get("layer") == "ml"
        assert len(spec.description or "") > 40
        assert spec.freshness_policy is not None
        assert "duckdb" in spec.kinds
    assert {d.asset_key for d in specs[FEATURES_KEY].deps} == set(INPUTS)
    assert {d.asset_key for d in specs[MODEL_KEY].deps} == {FEATURES_KEY}
    assert {MODEL_KEY, FEATURES_KEY} <= {d.asset_key for d in specs[SCORES_KEY].deps}
    assert {"scikit-learn", "python"} <= specs[MODEL_KEY].kinds
    assert all(a.op.pool is None for a in assets)  # the writer lock serializes runs
    names = {key.name for c in checks for key in c.check_keys}
    assert names == {"churn_model_auc_above_floor", "one_score_per_current_customer"}
    Definitions(assets=assets, asset_checks=checks, resources=resources(settings))
    Definitions.validate_loadable(
        Definitions(assets=assets, asset_checks=checks, resources=resources(settings))
    )


def test_features_model_and_scores_materialize_with_passing_checks(settings, shop) -> None:
    result = run(settings)
    assert result.success
    meta = materialized(result)
    assert set(meta) == {"ml/churn_features", "ml/churn_model", "ml/churn_scores"}

    model = meta["ml/churn_model"]
    assert model["auc"] > 0.7 and model["lift"] > 1
    assert 0 < model["baseline_rate"] < 1 and 0 < model["precision_at_top_decile"] <= 1
    assert model["n_train"] > model["n_test"] > 0
    assert model["model_version"] == latest_version(settings.home)
    artifact = Path(model["artifact_path"])
    assert artifact.parent == model_root(settings.home)
    saved = json.loads((artifact / "metadata.json").read_text())
    assert saved["metrics"]["auc"] == pytest.approx(model["auc"], abs=1e-6)
    assert "| days_since_last_order |" in model["top_features"]

    features = meta["ml/churn_features"]
    assert features["training_cutoffs"] == SPEC.max_cutoffs
    assert features["dagster/row_count"] > 1000

    current = {h[0] for h in shop.history} - shop.deleted
    scores = meta["ml/churn_scores"]
    assert scores["dagster/row_count"] == len(current)
    assert scores["model_version"] == model["model_version"]
    assert sum(scores["risk_bands"].values()) == len(current)

    evaluations = checks_of(result)
    assert evaluations["churn_model_auc_above_floor"].passed
    assert evaluations["one_score_per_current_customer"].passed
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        scored = {r[0] for r in conn.execute("SELECT customer_id FROM ml.churn_scores").fetchall()}
    assert scored == current

    again = materialized(run(settings))  # same data and seed: same model, same version
    assert again["ml/churn_model"]["model_version"] == model["model_version"]
    assert again["ml/churn_model"]["auc"] == model["auc"]


def test_the_auc_check_fails_below_its_floor_and_blocks_scoring(settings, shop) -> None:
    spec = SPEC.model_copy(update={"auc_floor": 0.99})
    result = run(settings, spec)
    check = checks_of(result)["churn_model_auc_above_floor"]
    assert not check.passed
    assert check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["floor"].value == 0.99
    assert check.metadata["auc"].value < 0.99
    assert "ml/churn_model" in materialized(result)
    assert "ml/churn_scores" not in materialized(result)  # blocking: no scores from it


def test_the_coverage_check_catches_a_customer_without_a_score(settings, shop) -> None:
    assert run(settings).success
    with Warehouse(settings.warehouse_path).transaction() as conn:
        conn.execute("DELETE FROM ml.churn_scores WHERE customer_id = 'cus_000001'")
    assets, checks = build_ml_assets(SPEC, settings.home)
    coverage = next(c for c in checks if "one_score" in str(c.check_keys))
    result = materialize(
        [*assets, coverage],
        selection=AssetSelection.checks(coverage),
        resources=resources(settings),
        raise_on_error=False,
    )
    evaluation = checks_of(result)["one_score_per_current_customer"]
    assert not evaluation.passed
    assert evaluation.metadata["missing"].value == 1


def test_a_rescore_refuses_a_latest_model_below_the_floor(settings, shop) -> None:
    """A run that only rescores holds the stored model to the same floor as the check."""
    assert run(settings).success
    spec = SPEC.model_copy(update={"auc_floor": 0.99})
    assets, _ = build_ml_assets(spec, settings.home)
    result = materialize(
        assets,
        selection=AssetSelection.assets(AssetKey(["ml", "churn_scores"])),
        resources=resources(settings),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "not above the floor 0.99" in str(failure.step_failure_data.error.message)
