"""Score every current customer with a stored churn model into ``ml.churn_scores``.

Grain: one row per current customer (``NOT is_deleted`` in ``gold.dim_customer``), read from
the scoring rows of ``ml.churn_features``. Customers with orders are scored by the model
(``scored_by = 'model'``); customers who never ordered get the historical share of
order-less customers who placed no first order within the horizon (``'no_orders_rule'``,
computed at training time), so every current customer has a probability.

Rows are streamed through the model in Arrow batches of ``score_batch_rows`` and inserted
into a table replaced in one transaction: memory stays bounded and readers see the previous
scores until the new ones are complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import duckdb
import numpy as np
import pyarrow as pa

from medallion_platform.ml.features import FEATURES, ML_SCHEMA
from medallion_platform.ml.model import StoredModel, select_features_sql
from medallion_platform.ml.spec import ChurnSpec
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.warehouse import transaction

SCORES_TABLE = "churn_scores"

SCORES_COLUMNS = {
    "customer_id": "VARCHAR NOT NULL",
    "churn_probability": "DOUBLE NOT NULL",
    "risk_band": "VARCHAR NOT NULL",
    "model_version": "VARCHAR NOT NULL",
    "cutoff_date": "DATE NOT NULL",
    "scored_at": "TIMESTAMP NOT NULL",
    "scored_by": "VARCHAR NOT NULL",
}


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    by_band: dict[str, int]
    by_method: dict[str, int]
    cutoff_date: date | None
    model_version: str


def scores_table() -> str:
    return qualified(ML_SCHEMA, SCORES_TABLE)


def score_customers(
    conn: duckdb.DuckDBPyConnection,
    model: StoredModel,
    spec: ChurnSpec,
    *,
    scored_at: datetime | None = None,
) -> ScoreSummary:
    """Replace ``ml.churn_scores`` with this model's scores (one transaction on ``conn``)."""
    expected = [*model.metadata["numeric_features"], *model.metadata["categorical_features"]]
    if expected != list(FEATURES):
        raise ValueError(
            f"churn model {model.version} was trained on {expected}, the features table now "
            f"has {list(FEATURES)}: retrain ml/churn_model"
        )
    scored_at = (scored_at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    ddl = ", ".join(f"{quote(name)} {dtype}" for name, dtype in SCORES_COLUMNS.items())
    insert = f"""
        INSERT INTO {scores_table()}
        SELECT customer_id, churn_probability,
               CASE WHEN churn_probability >= ? THEN 'high'
                    WHEN churn_probability >= ? THEN 'medium' ELSE 'low' END,
               ?, CAST(cutoff_date AS DATE), ?, scored_by
        FROM _churn_scores_batch"""
    bands = [spec.risk_bands.high, spec.risk_bands.medium]
    reader = conn.cursor()  # streams the features while ``conn`` writes the scores
    try:
        batches = reader.execute(
            select_features_sql("is_scoring") + " ORDER BY customer_id"
        ).fetch_record_batch(spec.score_batch_rows)
        with transaction(conn):
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(ML_SCHEMA)}")
            conn.execute(f"CREATE OR REPLACE TABLE {scores_table()} ({ddl})")
            for batch in batches:
                conn.register("_churn_scores_batch", _score_batch(batch, model))
                try:
                    conn.execute(insert, [*bands, model.version, scored_at])
                finally:
                    conn.unregister("_churn_scores_batch")
            return summarize_scores(conn, model.version)
    finally:
        reader.close()


def _score_batch(batch: pa.RecordBatch, model: StoredModel) -> pa.Table:
    frame = batch.to_pandas()
    buyers = frame["has_orders"].to_numpy(dtype=bool)
    probability = np.full(len(frame), model.no_orders_churn_rate, dtype=float)
    if buyers.any():
        inputs = frame.loc[buyers, list(FEATURES)]
        probability[buyers] = model.pipeline.predict_proba(inputs)[:, 1]
    return pa.table(
        {
            "customer_id": pa.array(frame["customer_id"], pa.string()),
            "churn_probability": pa.array(probability, pa.float64()),
            "cutoff_date": batch.column("cutoff_date"),
            "scored_by": pa.array(np.where(buyers, "model", "no_orders_rule"), pa.string()),
        }
    )


def summarize_scores(conn: duckdb.DuckDBPyConnection, version: str) -> ScoreSummary:
    rows = conn.execute(
        f"SELECT risk_band, scored_by, count(*) FROM {scores_table()} GROUP BY ALL"
    ).fetchall()
    by_band = {band: 0 for band in ("low", "medium", "high")}
    by_method: dict[str, int] = {}
    for band, method, n in rows:
        by_band[band] += n
        by_method[method] = by_method.get(method, 0) + n
    cutoff = conn.execute(f"SELECT max(cutoff_date) FROM {scores_table()}").fetchone()[0]
    return ScoreSummary(
        rows=sum(by_band.values()),
        by_band=by_band,
        by_method=dict(sorted(by_method.items())),
        cutoff_date=cutoff,
        model_version=version,
    )


def score_coverage(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Current customers without a score, with more than one, and scores of non-current ones."""
    missing, duplicated, extra, current = conn.execute(
        f"""
        WITH current_customers AS (
            SELECT customer_id FROM gold.dim_customer WHERE NOT coalesce(is_deleted, FALSE)
        ),
        per_customer AS (SELECT customer_id, count(*) AS n FROM {scores_table()} GROUP BY 1)
        SELECT
            (SELECT count(*) FROM current_customers c ANTI JOIN per_customer s USING (customer_id)),
            (SELECT count(*) FROM per_customer WHERE n > 1),
            (SELECT count(*) FROM per_customer s ANTI JOIN current_customers c USING (customer_id)),
            (SELECT count(*) FROM current_customers)
        """
    ).fetchone()
    return {
        "current_customers": int(current),
        "missing": int(missing),
        "duplicated": int(duplicated),
        "not_current": int(extra),
    }
