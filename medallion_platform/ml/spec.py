"""The churn model's configuration, as declared in ``config/ml.yaml`` (section ``churn``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medallion_platform.config_files import CONFIG_DIR, load_section

ML_CONFIG_PATH = CONFIG_DIR / "ml.yaml"

Estimator = Literal["hist_gradient_boosting", "logistic_regression"]

_ESTIMATOR_PARAMS: dict[str, set[str]] = {
    "hist_gradient_boosting": {
        "learning_rate",
        "max_iter",
        "max_leaf_nodes",
        "max_depth",
        "min_samples_leaf",
        "l2_regularization",
        "max_features",
        "max_bins",
        "early_stopping",
        "validation_fraction",
        "n_iter_no_change",
        "class_weight",
    },
    "logistic_regression": {"C", "max_iter", "tol", "class_weight", "solver"},
}


class RiskBands(BaseModel):
    """Probability thresholds: ``>= high`` is high risk, ``>= medium`` medium, else low."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    medium: float = Field(default=0.4, gt=0, lt=1)
    high: float = Field(default=0.7, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> RiskBands:
        if self.medium >= self.high:
            raise ValueError(f"risk_bands: medium ({self.medium}) must be below high ({self.high})")
        return self

    def band(self, probability: float) -> str:
        if probability >= self.high:
            return "high"
        if probability >= self.medium:
            return "medium"
        return "low"


class ChurnSpec(BaseModel):
    """Labels, history, estimator and quality floor of the churn model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_days: int = Field(default=90, ge=1, le=3650, description="Label window length.")
    cutoff_step_days: int = Field(default=30, ge=1, le=3650)
    max_cutoffs: int = Field(default=12, ge=2, le=1000)
    estimator: Estimator = "hist_gradient_boosting"
    estimator_params: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    max_training_rows: int = Field(default=2_000_000, ge=100)
    auc_floor: float = Field(default=0.65, ge=0, le=1)
    risk_bands: RiskBands = Field(default_factory=RiskBands)
    score_batch_rows: int = Field(default=50_000, ge=1)
    freshness_hours: float = Field(default=48, gt=0)
    owner: str = "team:data-science"

    @model_validator(mode="after")
    def _params(self) -> ChurnSpec:
        unknown = set(self.estimator_params) - _ESTIMATOR_PARAMS[self.estimator]
        if unknown:
            raise ValueError(
                f"estimator_params {sorted(unknown)} are not accepted by {self.estimator} "
                f"(allowed: {sorted(_ESTIMATOR_PARAMS[self.estimator])}); random_state is seed"
            )
        return self


def load_churn_spec(path: Path | str | None = None) -> ChurnSpec:
    """The ``churn`` section of ``config/ml.yaml`` (or of ``path``), validated."""
    return load_section(Path(path) if path is not None else ML_CONFIG_PATH, "churn", ChurnSpec)
