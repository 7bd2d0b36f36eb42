"""Execution engines behind the warehouse: DuckDB (one machine, the default) and Apache Spark
(local mode, a cluster, or Databricks through Spark Connect).

Plain Python, no Dagster: :class:`EngineSettings` is read from the environment once, the
Dagster resource (``defs/resources.py``) carries it and asks :func:`engine.engine_for` for the
engine that applies contracts and builds SQL tables (``engine.py``). ``pyspark`` is imported
only when the Spark engine is asked for, so a DuckDB-only install never needs Java.
"""

from medallion_platform.engines.settings import ENGINES, EngineSettings

__all__ = ["ENGINES", "EngineSettings"]
