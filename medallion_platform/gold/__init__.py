"""Gold models: business tables as SQL over silver, each with a declared grain (no Dagster)."""

from medallion_platform.gold.spec import GoldModel, SqlModel

__all__ = ["GoldModel", "SqlModel"]
