"""The churn core without Dagster: point-in-time features, no leakage, signal, determinism,
artifacts and scores, on the synthetic shop of ``medallion_platform_tests.ml``."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from medallion_platform.config import ConfigError
from medallion_platform.ml import (
    FEATURES,
    ChurnSpec,
    NotEnoughHistoryError,
    build_features,
    latest_version,
    load_churn_spec,
    load_model,
    model_root,
    plan_cutoffs,
    save_model,
    score_coverage,
    score_customers,
    train_churn_model,
)
from medallion_platform.ml.model import select_features_sql, split_cutoffs
from medallion_platform_tests.ml import (
    DAYS,
    Shop,
    day,
    generate_shop,
    insert_rows,
    write_shop,
)

SPEC = load_churn_spec()


def built(shop: Shop, spec: ChurnSpec = SPEC) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    write_shop(conn, shop)
    build_features(conn, spec)
    return conn


@pytest.fixture(scope="module")
def shop() -> Shop:
    return generate_shop()


@pytest.fixture(scope="module")
def conn(shop: Shop) -> Iterator[duckdb.DuckDBPyConnection]:
    conn = built(shop)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def trained(conn: duckdb.DuckDBPyConnection):
    return train_churn_model(conn, SPEC)


def test_the_packaged_spec_loads_and_bad_specs_name_the_file(tmp_path: Path) -> None:
    assert SPEC.horizon_days == 90 and SPEC.auc_floor == 0.65
    bad = tmp_path / "ml.yaml"
    bad.write_text("churn: {risk_bands: {medium: 0.8, high: 0.5}}\n")
    with pytest.raises(ConfigError, match=r"(?s)ml\.yaml.*medium \(0\.8\) must be below high"):
        load_churn_spec(bad)
    bad.write_text("churn: {estimator_params: {random_state: 1}}\n")
    with pytest.raises(ConfigError, match="random_state"):
        load_churn_spec(bad)
    bad.write_text("churn: {horizon: 90}\n")
    with pytest.raises(ConfigError, match="horizon"):
        load_churn_spec(bad)


def test_cutoffs_step_back_from_the_latest_complete_one(conn, shop: Shop) -> None:
    as_of = max(row[3] for row in shop.orders).date()
    cutoffs = plan_cutoffs(conn, SPEC)
    scoring, training = cutoffs[0], [d for d, s in cutoffs if not s]
    assert scoring == (as_of + timedelta(days=1), True)
    assert training[0] == as_of - timedelta(days=SPEC.horizon_days)  # window complete
    assert len(training) <= SPEC.max_cutoffs
    assert all(
        a - b == timedelta(days=SPEC.cutoff_step_days) for a, b in itertools.pairwise(training)
    )


def test_features_match_a_python_recomputation(conn, shop: Shop) -> None:
    """Every figure of 40 random (customer, cutoff) rows, worked out from the raw rows."""
    live = [h for h in shop.history if h[12] != "d"]
    signed_up = {h[0]: h[7] for h in live}
    refunds_by_charge = {r[1]: r for r in shop.refunds}
    rows = conn.execute(
        "SELECT * FROM ml.churn_features WHERE NOT is_scoring ORDER BY customer_id, cutoff_date"
    ).df()
    assert not rows.duplicated(["customer_id", "cutoff_date"]).any()
    for _, row in rows.sample(40, random_state=1).iterrows():
        cid, cutoff = row["customer_id"], row["cutoff_date"].to_pydatetime().replace(tzinfo=None)
        cut = pd.Timestamp(cutoff, tz="UTC").to_pydatetime()
        assert signed_up[cid] < cut
        in_force = max((h for h in live if h[0] == cid and h[8] < cut), key=lambda h: h[8])
        assert (row["segment"], row["marketing_opt_in"]) == (in_force[5], in_force[6])
        before = [o for o in shop.orders if o[1] == cid and o[3] < cut]
        window = [
            o
            for o in shop.orders
            if o[1] == cid and cut <= o[3] < cut + timedelta(days=SPEC.horizon_days)
        ]
        refunded = sum(
            refunds_by_charge[f"ch_{o[0]}"][2]
            for o in shop.orders
            if o[1] == cid
            and f"ch_{o[0]}" in refunds_by_charge
            and refunds_by_charge[f"ch_{o[0]}"][6] < cutoff
        )
        assert row["has_orders"] == bool(before)
        assert row["orders_lifetime"] == len(before)
        assert row["orders_30d"] == sum(o[3] >= cut - timedelta(days=30) for o in before)
        assert row["orders_365d"] == sum(o[3] >= cut - timedelta(days=365) for o in before)
        assert row["churned"] == (not window)
        assert row["refunds_lifetime"] == pytest.approx(refunded)
        assert row["days_since_signup"] == pytest.approx(
            (cut - signed_up[cid]).total_seconds() / 86400
        )
        if before:
            gross = sum(o[8] for o in before)
            last, first = max(o[3] for o in before), min(o[3] for o in before)
            assert row["gross_lifetime"] == pytest.approx(gross)
            assert row["net_lifetime"] == pytest.approx(gross - refunded)
            assert row["average_order_value"] == pytest.approx(gross / len(before))
            assert row["days_since_last_order"] == pytest.approx(
                (cut - last).total_seconds() / 86400
            )
            assert row["days_since_first_order"] == pytest.approx(
                (cut - first).total_seconds() / 86400
            )
        else:
            assert pd.isna(row["days_since_last_order"]) and row["gross_lifetime"] == 0


def test_scoring_rows_are_the_current_customers(conn, shop: Shop) -> None:
    current = {h[0] for h in shop.history} - shop.deleted
    scoring = dict(
        conn.execute(
            "SELECT customer_id, churned FROM ml.churn_features WHERE is_scoring"
        ).fetchall()
    )
    assert set(scoring) == current and shop.deleted
    assert all(label is None for label in scoring.values())


def _features_at(conn: duckdb.DuckDBPyConnection, cutoff: date) -> pd.DataFrame:
    return conn.execute(
        "SELECT * EXCLUDE (churned) FROM ml.churn_features WHERE cutoff_date = ? "
        "ORDER BY customer_id",
        [cutoff],
    ).df()


def test_changes_after_a_cutoff_change_only_its_labels(conn, shop: Shop) -> None:
    cutoffs = [d for d, scoring in plan_cutoffs(conn, SPEC) if not scoring]
    cutoff = cutoffs[len(cutoffs) // 2]
    cut = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=day(0).tzinfo)
    labels = dict(
        conn.execute(
            "SELECT customer_id, churned FROM ml.churn_features WHERE cutoff_date = ? "
            "AND has_orders",
            [cutoff],
        ).fetchall()
    )
    revived = sorted(c for c, churned in labels.items() if churned)[0]
    changed = copy.deepcopy(shop)
    # An order inside the label window, for a customer who had churned.
    changed.orders.append(
        (
            "ord_late", revived, (cut + timedelta(days=10)).date(), cut + timedelta(days=10),
            "delivered", "USD", 1, 1, 99.0, "paid", 99.0, 0, 99.0, True, False, cut,
        )
    )  # fmt: skip
    # Orders placed after the cutoff get other amounts; older ones are refunded after it.
    changed.orders = [(*o[:8], o[8] * 3, *o[9:]) if o[3] >= cut else o for o in changed.orders]
    old = [o for o in changed.orders if o[3] < cut][:20]
    changed.refunds += [
        (f"re_late_{o[0]}", f"ch_{o[0]}", 5.0, "usd", "succeeded", None,
         cut.replace(tzinfo=None) + timedelta(hours=1))
        for o in old
    ]  # fmt: skip
    # A customer changes segment after the cutoff, another signs up after it.
    first = next(h for h in changed.history if h[7] < cut and h[12] != "d")
    changed.history.append(
        (first[0], *first[1:5], "club", not first[6], first[7], cut + timedelta(days=3),
         cut + timedelta(days=3), None, True, "u")
    )  # fmt: skip
    changed.history.append(
        ("cus_999999", "new@example.com", "N", "N", "US", "pro", True,
         cut + timedelta(hours=2), cut + timedelta(hours=2), cut + timedelta(hours=2), None,
         True, "c")
    )  # fmt: skip
    after = built(changed)
    try:
        assert plan_cutoffs(after, SPEC) == plan_cutoffs(conn, SPEC)
        pd.testing.assert_frame_equal(_features_at(after, cutoff), _features_at(conn, cutoff))
        new_labels = dict(
            after.execute(
                "SELECT customer_id, churned FROM ml.churn_features WHERE cutoff_date = ? "
                "AND has_orders",
                [cutoff],
            ).fetchall()
        )
        assert new_labels == {**labels, revived: False}
        later = cutoffs[len(cutoffs) // 2 - 1]  # the changes are visible from the next cutoff
        assert not _features_at(after, later).equals(_features_at(conn, later))
        # Control: the same figures do move when the change is before the cutoff.
        insert_rows(after, "silver.payments_refunds", [
            ("re_early", f"ch_{old[0][0]}", 7.0, "usd", "succeeded", None,
             cut.replace(tzinfo=None) - timedelta(hours=1)),
        ])  # fmt: skip
        build_features(after, SPEC)
        moved = _features_at(after, cutoff).set_index("customer_id")
        assert moved.loc[old[0][1], "refunds_lifetime"] == pytest.approx(
            _features_at(conn, cutoff).set_index("customer_id").loc[old[0][1], "refunds_lifetime"]
            + 7.0
        )
    finally:
        after.close()


def test_the_split_is_in_time_and_the_model_has_signal(conn, trained) -> None:
    test_cutoff, train_cutoffs = split_cutoffs(conn, SPEC)
    assert all(c + timedelta(days=SPEC.horizon_days) <= test_cutoff for c in train_cutoffs)
    meta, m = trained.metadata, trained.metrics
    assert meta["test_cutoff"] == test_cutoff.isoformat()
    assert m.auc is not None and m.auc > 0.7
    assert m.lift is not None and m.lift > 1.2
    assert 0 < m.baseline_rate < 1 and m.n_train > m.n_test > 100
    assert meta["top_features"][0][0] == "days_since_last_order"
    assert 0 < meta["no_orders_churn_rate"] <= 1


def test_training_is_deterministic_for_a_seed(conn, trained) -> None:
    again = train_churn_model(conn, SPEC)
    assert again.metrics == trained.metrics
    assert again.version == trained.version
    assert again.metadata == trained.metadata
    rows = conn.execute(select_features_sql("is_scoring AND has_orders")).df()
    np.testing.assert_array_equal(
        again.pipeline.predict_proba(rows[list(FEATURES)]),
        trained.pipeline.predict_proba(rows[list(FEATURES)]),
    )
    other = train_churn_model(conn, SPEC.model_copy(update={"seed": SPEC.seed + 1}))
    assert other.version != trained.version


def test_logistic_regression_is_an_option(conn) -> None:
    spec = SPEC.model_copy(update={"estimator": "logistic_regression", "estimator_params": {}})
    model = train_churn_model(conn, spec)
    assert model.metrics.auc > 0.7
    assert model.metadata["params"]["estimator"] == "logistic_regression"


def test_the_artifact_is_versioned_atomic_and_loadable(conn, trained, tmp_path: Path) -> None:
    path = save_model(trained, tmp_path)
    root = model_root(tmp_path)
    assert path == root / trained.version
    assert sorted(p.name for p in path.iterdir()) == ["metadata.json", "model.joblib"]
    assert {p.name for p in root.iterdir()} == {trained.version, "latest"}  # no temp left
    assert latest_version(tmp_path) == trained.version
    stored = load_model(tmp_path)
    assert stored.metadata["metrics"]["auc"] == trained.metrics.auc
    assert (
        stored.metadata["training_data"]["rows"] == trained.metrics.n_train + trained.metrics.n_test
    )
    rows = conn.execute(select_features_sql("is_scoring AND has_orders")).df()
    np.testing.assert_array_equal(
        stored.pipeline.predict_proba(rows[list(FEATURES)]),
        trained.pipeline.predict_proba(rows[list(FEATURES)]),
    )
    assert save_model(trained, tmp_path) == path  # same content: the version is reused
    (root / "latest").write_text("../../etc\n")
    with pytest.raises(ValueError, match="not a churn model version"):
        load_model(tmp_path)


def test_every_current_customer_gets_one_score(conn, shop: Shop, trained, tmp_path) -> None:
    save_model(trained, tmp_path)
    spec = SPEC.model_copy(update={"score_batch_rows": 50})  # several Arrow batches
    summary = score_customers(conn, load_model(tmp_path), spec)
    current = {h[0] for h in shop.history} - shop.deleted
    assert summary.rows == len(current)
    assert score_coverage(conn) == {
        "current_customers": len(current),
        "missing": 0,
        "duplicated": 0,
        "not_current": 0,
    }
    scores = conn.execute("SELECT * FROM ml.churn_scores").df().set_index("customer_id")
    assert not scores.index.isin(sorted(shop.deleted)).any()
    assert (scores["model_version"] == trained.version).all()
    assert (scores["cutoff_date"].dt.date == summary.cutoff_date).all()
    never = scores.loc[sorted(shop.never_ordered & current)]
    assert (never["scored_by"] == "no_orders_rule").all()
    assert never["churn_probability"].eq(trained.metadata["no_orders_churn_rate"]).all()
    bands = SPEC.risk_bands
    assert (scores["risk_band"] == scores["churn_probability"].map(bands.band)).all()
    assert scores["churn_probability"].between(0, 1).all()
    assert summary.by_method["model"] + summary.by_method["no_orders_rule"] == len(current)
    # Recent buyers are scored lower than customers silent for months.
    recent = scores[(scores["scored_by"] == "model")]
    assert recent["churn_probability"].nunique() > 10


def test_short_history_fails_with_a_clear_message() -> None:
    shop = generate_shop(customers=30, seed=3)
    cut = day(DAYS - 100)
    shop.orders = [o for o in shop.orders if o[3] >= cut]
    conn = built(shop)
    with pytest.raises(NotEnoughHistoryError, match="horizon_days"):
        train_churn_model(conn, SPEC)


def test_no_orders_at_all_gives_empty_features() -> None:
    shop = generate_shop(customers=5, seed=1)
    shop.orders = []
    conn = built(shop)
    assert conn.execute("SELECT count(*) FROM ml.churn_features").fetchone()[0] == 0
    with pytest.raises(NotEnoughHistoryError, match="no labelled cutoff"):
        train_churn_model(conn, SPEC)
