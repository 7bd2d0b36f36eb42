"""Reconcile a gold model's money with the silver it derives from, key by key (no Dagster).

Gold's own rules (``net = gross - refunds``) hold even when a row is lost on the way, because
gold agrees with itself. Here each money column is recomputed from silver (the model's
``reconcile`` SQL over the ledger, see :class:`~medallion_platform.gold.spec.Reconciliation`)
and compared with gold on the model's key: the totals per currency, their difference, and the
first keys that disagree (the largest differences first).
"""

from __future__ import annotations

from decimal import Decimal

import duckdb
from pydantic import BaseModel

from medallion_platform.gold.spec import SqlModel
from medallion_platform.warehouse.identifiers import qualified, quote

SAMPLE = 10


class Total(BaseModel):
    """One value of the reconciliation's ``by`` column (a currency): gold, silver, difference."""

    by: str | None
    gold: Decimal
    silver: Decimal

    @property
    def difference(self) -> Decimal:
        return self.gold - self.silver


class ReconcileOutcome(BaseModel):
    measure: str
    mismatched_keys: int
    totals: list[Total]
    examples: list[str] = []

    @property
    def passed(self) -> bool:
        return self.mismatched_keys == 0


def reconcile(conn: duckdb.DuckDBPyConnection, model: SqlModel, measure: str) -> ReconcileOutcome:
    """Compare ``measure`` of the gold table with the silver side, per key and per ``by``."""
    spec = model.reconcile
    if spec is None or measure not in spec.measures:
        raise ValueError(f"{model.layer}.{model.name} does not reconcile {measure!r}")
    columns = list(dict.fromkeys([spec.by, *spec.key]))
    listed = ", ".join(quote(c) for c in columns)
    value = f"CAST(sum({quote(measure)}) AS DECIMAL(38, 2)) AS v"
    gold = f"SELECT {listed}, {value} FROM {qualified(model.layer, model.name)} GROUP BY ALL"
    silver = f"SELECT {listed}, {value} FROM ({model.reconcile_sql}) GROUP BY ALL"
    on = " AND ".join(f"g.{quote(c)} IS NOT DISTINCT FROM s.{quote(c)}" for c in columns)
    keys = ", ".join(f"coalesce(g.{quote(c)}, s.{quote(c)}) AS {quote(c)}" for c in columns)
    joined = (
        f"SELECT {keys}, coalesce(g.v, 0) AS gold, coalesce(s.v, 0) AS silver "
        f"FROM ({gold}) AS g FULL OUTER JOIN ({silver}) AS s ON {on}"
    )
    by = quote(spec.by)
    per_by = conn.execute(
        f"SELECT {by}, sum(gold), sum(silver), count(*) FILTER (WHERE gold <> silver) "
        f"FROM ({joined}) GROUP BY 1 ORDER BY 1 NULLS LAST"
    ).fetchall()
    totals = [
        Total(by=None if b is None else str(b), gold=g, silver=s) for b, g, s, _ in per_by if g or s
    ]
    count = sum(n for *_, n in per_by)
    rows = (
        conn.execute(
            f"SELECT {listed}, gold, silver FROM ({joined}) WHERE gold <> silver "
            f"ORDER BY abs(gold - silver) DESC, {listed} LIMIT {SAMPLE}"
        ).fetchall()
        if count
        else []
    )
    examples = [
        ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=False))
        + f": gold {row[-2]}, silver {row[-1]} (difference {row[-2] - row[-1]})"
        for row in rows
    ]
    return ReconcileOutcome(
        measure=measure, mismatched_keys=count, totals=totals, examples=examples
    )
