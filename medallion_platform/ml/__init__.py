"""The churn model: point-in-time features (SQL in the warehouse), training and evaluation
(scikit-learn), versioned artifacts under the platform home, and scores for every current
customer. Plain Python, no Dagster: ``defs/ml.py`` wraps it in assets and checks."""

from medallion_platform.ml.features import (
    CATEGORICAL_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    build_features,
    features_sql,
    plan_cutoffs,
)
from medallion_platform.ml.model import (
    NotEnoughHistoryError,
    StoredModel,
    TrainedModel,
    latest_version,
    load_model,
    model_root,
    read_metadata,
    save_model,
    train_churn_model,
)
from medallion_platform.ml.scoring import score_coverage, score_customers
from medallion_platform.ml.spec import ChurnSpec, RiskBands, load_churn_spec

__all__ = [
    "CATEGORICAL_FEATURES",
    "FEATURES",
    "NUMERIC_FEATURES",
    "ChurnSpec",
    "NotEnoughHistoryError",
    "RiskBands",
    "StoredModel",
    "TrainedModel",
    "build_features",
    "features_sql",
    "latest_version",
    "load_churn_spec",
    "load_model",
    "model_root",
    "plan_cutoffs",
    "read_metadata",
    "save_model",
    "score_coverage",
    "score_customers",
    "train_churn_model",
]
