"""Train, evaluate and store the churn model (scikit-learn), from ``ml.churn_features``.

Time-based split, so the test set is the future of the training set:

- test set: the buyers at the latest complete cutoff ``T`` (its label window ends at as-of);
- training set: the buyers at cutoffs ``c`` with ``c + horizon_days <= T``: every training
  label was known at ``T``, so nothing of the test period leaks into training. Cutoffs in
  between (``T - horizon < c < T``) are in the features table but used by neither.

Artifacts live under ``<home>/ml/churn_model/<version>/`` (``model.joblib``, ``metadata.json``),
written to a temporary directory and renamed into place, so a reader sees a whole version or
none. ``version = v<as-of date YYYYmmdd>-<sha256 of (training data fingerprint, estimator,
params, seed, horizon, features, scikit-learn version)[:12]>``: a content address, so the
same data, configuration and seed give the same version (a rerun reuses it) and any change
gives a new one. ``<home>/ml/churn_model/latest`` holds the version the last training run
produced; scoring loads that one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from medallion_platform.ml.features import (
    CATEGORICAL_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    features_table,
)
from medallion_platform.ml.spec import ChurnSpec

MODEL_NAME = "churn_model"
LATEST = "latest"
MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
_VERSION = re.compile(r"v\d{8}-[0-9a-f]{12}")
_IMPORTANCE_ROWS = 5_000  # permutation importance on at most this many test rows


class NotEnoughHistoryError(ValueError):
    """The features table cannot give a training and a test set with both outcomes."""


@dataclass(frozen=True)
class ChurnMetrics:
    auc: float | None  # None when the test set has a single class
    precision_at_top_decile: float | None
    baseline_rate: float | None
    lift: float | None
    n_train: int
    n_test: int
    train_churn_rate: float


@dataclass(frozen=True)
class TrainedModel:
    pipeline: Pipeline
    metrics: ChurnMetrics
    version: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StoredModel:
    """A version on disk: its fitted pipeline and metadata.json."""

    version: str
    path: Path
    pipeline: Pipeline
    metadata: dict[str, Any]

    @property
    def no_orders_churn_rate(self) -> float:
        return float(self.metadata["no_orders_churn_rate"])


def model_root(home: Path | str) -> Path:
    return Path(home) / "ml" / MODEL_NAME


def select_features_sql(where: str) -> str:
    """Model inputs of the rows matching ``where``, in a stable order, NULL categories named."""
    numeric = ", ".join(f"CAST({c} AS DOUBLE) AS {c}" for c in NUMERIC_FEATURES)
    categorical = ", ".join(
        f"coalesce(CAST({c} AS VARCHAR), 'unknown') AS {c}" for c in CATEGORICAL_FEATURES
    )
    return (
        f"SELECT customer_id, cutoff_date, has_orders, {numeric}, {categorical}, churned "
        f"FROM {features_table()} WHERE {where}"
    )


def split_cutoffs(conn: duckdb.DuckDBPyConnection, spec: ChurnSpec) -> tuple[date, list[date]]:
    """The test cutoff (latest complete) and the training cutoffs (label known at it)."""
    horizons = conn.execute(f"SELECT DISTINCT horizon_days FROM {features_table()}").fetchall()
    if horizons and {h for (h,) in horizons} != {spec.horizon_days}:
        raise ValueError(
            f"ml.churn_features was built with horizon_days {sorted(h for (h,) in horizons)}, "
            f"the model is configured with {spec.horizon_days}: rebuild ml/churn_features"
        )
    cutoffs = [
        d
        for (d,) in conn.execute(
            f"SELECT DISTINCT cutoff_date FROM {features_table()} "
            "WHERE NOT is_scoring AND has_orders ORDER BY cutoff_date DESC"
        ).fetchall()
    ]
    if not cutoffs:
        raise NotEnoughHistoryError(
            "ml.churn_features has no labelled cutoff: the orders cover less than "
            f"horizon_days ({spec.horizon_days}) of history"
        )
    test = cutoffs[0]
    train = [c for c in cutoffs if c + timedelta(days=spec.horizon_days) <= test]
    if not train:
        raise NotEnoughHistoryError(
            f"no training cutoff ends its label window by the test cutoff {test}: the orders "
            f"need to cover at least 2 x horizon_days ({2 * spec.horizon_days} days)"
        )
    return test, train


def load_training_frames(
    conn: duckdb.DuckDBPyConnection, spec: ChurnSpec
) -> tuple[pd.DataFrame, pd.DataFrame, date, list[date]]:
    """(train, test, test cutoff, training cutoffs); training rows beyond
    ``max_training_rows`` are sampled by a seeded hash, in the warehouse."""
    test_cutoff, train_cutoffs = split_cutoffs(conn, spec)
    last_train = max(train_cutoffs).isoformat()
    train_where = f"NOT is_scoring AND has_orders AND cutoff_date <= DATE '{last_train}'"
    n_train = conn.execute(
        f"SELECT count(*) FROM {features_table()} WHERE {train_where}"
    ).fetchone()[0]
    order = "ORDER BY cutoff_date, customer_id"
    if n_train > spec.max_training_rows:
        order = (
            f"ORDER BY hash(customer_id, cutoff_date, {int(spec.seed)}), cutoff_date, "
            f"customer_id LIMIT {int(spec.max_training_rows)}"
        )
    train = conn.execute(f"{select_features_sql(train_where)} {order}").df()
    test = conn.execute(
        select_features_sql(
            f"NOT is_scoring AND has_orders AND cutoff_date = DATE '{test_cutoff.isoformat()}'"
        )
        + " ORDER BY customer_id"
    ).df()
    for frame in (train, test):
        frame["churned"] = frame["churned"].astype(bool)
    return train, test, test_cutoff, train_cutoffs


def build_pipeline(spec: ChurnSpec) -> Pipeline:
    """Numeric inputs (scaled for the linear model), one-hot categories, the estimator."""
    categories = OneHotEncoder(handle_unknown="ignore", sparse_output=False, max_categories=30)
    if spec.estimator == "logistic_regression":
        numeric: Any = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                ("scale", StandardScaler()),
            ]
        )
        params = {"max_iter": 1000, **spec.estimator_params}
        estimator: Any = LogisticRegression(random_state=spec.seed, **params)
    else:  # trees need no scaling and take missing values (no previous order) as they are
        numeric = "passthrough"
        estimator = HistGradientBoostingClassifier(random_state=spec.seed, **spec.estimator_params)
    columns = ColumnTransformer(
        [
            ("numeric", numeric, list(NUMERIC_FEATURES)),
            ("categorical", categories, list(CATEGORICAL_FEATURES)),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([("columns", columns), ("model", estimator)])


def evaluate(y_true: np.ndarray, probability: np.ndarray, n_train: int, train_rate: float):
    """ROC AUC, precision in the top 10% by probability, baseline rate and lift."""
    n = len(y_true)
    baseline = float(y_true.mean()) if n else None
    auc = float(roc_auc_score(y_true, probability)) if len(set(y_true.tolist())) == 2 else None
    precision = None
    if n:
        top = np.argsort(-probability, kind="stable")[: max(1, math.ceil(0.1 * n))]
        precision = float(y_true[top].mean())
    lift = precision / baseline if precision is not None and baseline else None
    return ChurnMetrics(
        auc=auc,
        precision_at_top_decile=precision,
        baseline_rate=baseline,
        lift=lift,
        n_train=n_train,
        n_test=n,
        train_churn_rate=train_rate,
    )


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the rows (values and order) the model was trained and tested on."""
    digest = hashlib.sha256()
    digest.update(",".join(frame.columns).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def importances(
    pipeline: Pipeline, test: pd.DataFrame, spec: ChurnSpec, top: int = 10
) -> list[tuple[str, float]]:
    """Top features: coefficients (linear) or permutation importance on the test set (AUC)."""
    model = pipeline.named_steps["model"]
    if isinstance(model, LogisticRegression):
        names = pipeline.named_steps["columns"].get_feature_names_out()
        pairs = list(zip(names, model.coef_[0].tolist(), strict=True))
    else:
        sample = test
        if len(test) > _IMPORTANCE_ROWS:
            sample = test.sample(n=_IMPORTANCE_ROWS, random_state=spec.seed)
        if sample["churned"].nunique() < 2:
            return []
        result = permutation_importance(
            pipeline,
            sample[list(FEATURES)],
            sample["churned"].to_numpy(),
            scoring="roc_auc",
            n_repeats=3,
            random_state=spec.seed,
            n_jobs=1,
        )
        pairs = list(zip(FEATURES, result.importances_mean.tolist(), strict=True))
    pairs.sort(key=lambda p: (-abs(p[1]), p[0]))
    return [(str(name), round(float(value), 6)) for name, value in pairs[:top]]


def no_orders_churn_rate(conn: duckdb.DuckDBPyConnection, test_cutoff: date) -> float:
    """Share of customers without orders at a complete cutoff who still had none a horizon
    later: the score of current customers who never ordered (1.0 when history has none)."""
    rate = conn.execute(
        f"SELECT avg(CAST(churned AS DOUBLE)) FROM {features_table()} "
        "WHERE NOT is_scoring AND NOT has_orders AND cutoff_date <= ?",
        [test_cutoff],
    ).fetchone()[0]
    return 1.0 if rate is None else float(rate)


def train_churn_model(conn: duckdb.DuckDBPyConnection, spec: ChurnSpec) -> TrainedModel:
    """Fit on the training cutoffs, evaluate on the test cutoff; nothing is written."""
    train, test, test_cutoff, train_cutoffs = load_training_frames(conn, spec)
    y_train = train["churned"].to_numpy()
    if len(set(y_train.tolist())) < 2:
        raise NotEnoughHistoryError(
            f"the training set ({len(train)} rows) has only churned={bool(y_train[0])}: "
            "nothing to learn from"
        )
    pipeline = build_pipeline(spec)
    pipeline.fit(train[list(FEATURES)], y_train)
    probability = pipeline.predict_proba(test[list(FEATURES)])[:, 1] if len(test) else []
    metrics = evaluate(
        test["churned"].to_numpy(), np.asarray(probability), len(train), float(y_train.mean())
    )
    data_fingerprint = fingerprint(pd.concat([train, test], ignore_index=True))
    as_of = test_cutoff + timedelta(days=spec.horizon_days)
    params = {
        "estimator": spec.estimator,
        "estimator_params": spec.estimator_params,
        "seed": spec.seed,
        "horizon_days": spec.horizon_days,
        "cutoff_step_days": spec.cutoff_step_days,
        "max_training_rows": spec.max_training_rows,
        "features": list(FEATURES),
        "scikit_learn": sklearn.__version__,
    }
    content = json.dumps({"data": data_fingerprint, "params": params}, sort_keys=True)
    version = f"v{as_of:%Y%m%d}-{hashlib.sha256(content.encode()).hexdigest()[:12]}"
    metadata = {
        "version": version,
        "model": MODEL_NAME,
        "as_of_date": as_of.isoformat(),
        "test_cutoff": test_cutoff.isoformat(),
        "train_cutoffs": sorted(c.isoformat() for c in train_cutoffs),
        "numeric_features": list(NUMERIC_FEATURES),
        "categorical_features": list(CATEGORICAL_FEATURES),
        "label": f"no order placed in [cutoff, cutoff + {spec.horizon_days} days)",
        "params": params,
        "metrics": asdict(metrics),
        "top_features": importances(pipeline, test, spec),
        "no_orders_churn_rate": no_orders_churn_rate(conn, test_cutoff),
        "training_data": {"sha256": data_fingerprint, "rows": len(train) + len(test)},
    }
    return TrainedModel(pipeline=pipeline, metrics=metrics, version=version, metadata=metadata)


def save_model(trained: TrainedModel, home: Path | str) -> Path:
    """Write the version directory atomically (unless it exists) and point ``latest`` at it."""
    root = model_root(home)
    root.mkdir(parents=True, exist_ok=True)
    final = root / trained.version
    if not final.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{trained.version}.", dir=root))
        try:
            joblib.dump(trained.pipeline, tmp / MODEL_FILE)
            metadata = {**trained.metadata, "trained_at": datetime.now(UTC).isoformat()}
            (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
            _fsync_dir(tmp)
            try:
                tmp.rename(final)
            except OSError:  # another writer renamed the same content first: keep theirs
                if not (final / METADATA_FILE).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    pointer = root / f".{LATEST}.{os.getpid()}.tmp"
    pointer.write_text(trained.version + "\n")
    os.replace(pointer, root / LATEST)
    return final


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())


def latest_version(home: Path | str) -> str:
    pointer = model_root(home) / LATEST
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer}: no churn model has been trained yet")
    return _checked_version(pointer.read_text().strip(), pointer)


def _checked_version(version: str, where: object) -> str:
    if not _VERSION.fullmatch(version):
        raise ValueError(f"{where}: {version!r} is not a churn model version")
    return version


def read_metadata(home: Path | str, version: str | None = None) -> dict[str, Any]:
    version = _checked_version(version, "version") if version else latest_version(home)
    return json.loads((model_root(home) / version / METADATA_FILE).read_text())


def load_model(home: Path | str, version: str | None = None) -> StoredModel:
    """A stored version (default: ``latest``), ready to score."""
    version = _checked_version(version, "version") if version else latest_version(home)
    path = model_root(home) / version
    return StoredModel(
        version=version,
        path=path,
        pipeline=joblib.load(path / MODEL_FILE),
        metadata=json.loads((path / METADATA_FILE).read_text()),
    )
