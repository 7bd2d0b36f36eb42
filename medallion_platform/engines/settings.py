"""Which engine runs silver and gold, and where it finds its data: from the environment.

``MEDALLION_ENGINE``       ``duckdb`` (default) or ``spark``
``MEDALLION_SPARK_REMOTE`` a Spark Connect URL (``sc://host:15002``; Databricks), else
``SPARK_REMOTE``           the variable pyspark itself reads, else a classic session on
``MEDALLION_SPARK_MASTER`` a master URL (``spark://host:7077``, ``yarn``, ``k8s://…``), else
                           ``local[*]`` (every core of this machine)
``MEDALLION_LAKE``         the lake root both engines read (a folder, or an object-store URL
                           a cluster can reach); ``<MEDALLION_HOME>/lake`` when unset
``MEDALLION_SPARK_CONF``   Spark properties as a JSON object, e.g.
                           ``{"spark.executor.memory": "8g"}`` (spark-defaults.conf works too)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENGINES = ("duckdb", "spark")
DEFAULT_MASTER = "local[*]"


class EngineSettings(BaseModel):
    """The engine choice, validated: an unknown engine name fails at load, not mid-run."""

    model_config = ConfigDict(frozen=True)

    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = DEFAULT_MASTER
    spark_remote: str | None = Field(
        default=None, description="Spark Connect URL; when set, spark_master is not used."
    )
    lake: str = Field(description="Root of the Parquet lake (folder or object-store URL).")
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="Spark properties for the session (not secrets)."
    )

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower() or "duckdb"
            if value not in ENGINES:
                choices = ", ".join(ENGINES)
                raise ValueError(f"MEDALLION_ENGINE={value!r} is not an engine; use {choices}")
        return value

    @classmethod
    def from_env(cls, home: Path | str | None = None) -> EngineSettings:
        home = Path(home or os.environ.get("MEDALLION_HOME", ".medallion")).absolute()
        return cls(
            engine=os.environ.get("MEDALLION_ENGINE", "duckdb"),
            spark_master=os.environ.get("MEDALLION_SPARK_MASTER") or DEFAULT_MASTER,
            spark_remote=(
                os.environ.get("MEDALLION_SPARK_REMOTE") or os.environ.get("SPARK_REMOTE") or None
            ),
            lake=os.environ.get("MEDALLION_LAKE") or str(home / "lake"),
            spark_conf=_spark_conf(os.environ.get("MEDALLION_SPARK_CONF")),
        )

    @property
    def where(self) -> str:
        """Where Spark runs, for logs and metadata (a Connect URL's token is never shown)."""
        if self.spark_remote:
            return self.spark_remote.split(";", 1)[0]  # sc://host:port;token=… → sc://host:port
        return self.spark_master


def _spark_conf(text: str | None) -> dict[str, str]:
    """``MEDALLION_SPARK_CONF``: a JSON object of Spark properties (values as text)."""
    if not text or not text.strip():
        return {}
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"MEDALLION_SPARK_CONF is not JSON ({exc.msg}); write an object like "
            '{"spark.executor.memory": "8g"}'
        ) from None
    if not isinstance(document, dict):
        raise ValueError("MEDALLION_SPARK_CONF must be a JSON object of Spark properties")
    return {str(key): str(value) for key, value in document.items()}
