"""Resources shared by every asset: the warehouse and the landing zone, defined once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from medallion_platform.defs.runs import run_writer_session
from medallion_platform.engines.engine import Engine, engine_for
from medallion_platform.engines.settings import EngineSettings
from medallion_platform.warehouse import Warehouse


class WarehouseResource(ConfigurableResource):
    """The DuckDB warehouse file and the engine that builds silver and gold (``sql_engine()``:
    DuckDB in the file, or Spark over the lake with views in the file). A run holds the
    file's writer lock from start to end (steps of two runs never interleave); assets open
    connections per step."""

    path: str = Field(description="Path of the DuckDB warehouse file.")
    memory_limit: str | None = Field(
        default=None, description="DuckDB memory_limit (e.g. '4GB'); beyond it DuckDB spills."
    )
    silver_memory_limit: str | None = Field(
        default=None,
        description="DuckDB memory_limit while a contract is applied, when lower than "
        "memory_limit (MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT; 1GiB by default).",
    )
    threads: int | None = Field(default=None, description="DuckDB worker threads.")
    lock_timeout_s: float = Field(default=300.0, description="How long to wait for the lock.")
    engine: str = Field(
        default="duckdb",
        description="Engine for silver and gold: duckdb (default) or spark (MEDALLION_ENGINE).",
    )
    spark_master: str | None = Field(
        default=None, description="Spark master URL (MEDALLION_SPARK_MASTER); local[*] if unset."
    )
    spark_remote: str | None = Field(
        default=None, description="Spark Connect URL (MEDALLION_SPARK_REMOTE), e.g. Databricks."
    )
    lake: str | None = Field(
        default=None, description="Lake root both engines read (MEDALLION_LAKE); <home>/lake."
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="Spark properties (MEDALLION_SPARK_CONF, JSON)."
    )

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[WarehouseResource]:
        self.engine_settings()  # a misconfigured engine fails before the first step
        with run_writer_session(context, self.path):
            yield self

    def engine_settings(self) -> EngineSettings:
        """The engine this resource runs silver and gold on (validated: a typo fails here)."""
        return EngineSettings(
            engine=self.engine,
            spark_master=self.spark_master or "local[*]",
            spark_remote=self.spark_remote,
            lake=self.lake or str(Path(self.path).parent / "lake"),
            spark_conf=self.spark_conf,
        )

    def sql_engine(self) -> Engine:
        """What builds silver and gold for this run (Spark's session is one per process)."""
        return engine_for(self.engine_settings())

    def warehouse(self, read_only: bool = False) -> Warehouse:
        return Warehouse(
            self.path,
            read_only=read_only,
            lock_timeout_s=self.lock_timeout_s,
            memory_limit=self.memory_limit,
            silver_memory_limit=self.silver_memory_limit,
            threads=self.threads,
        )


class LandingZoneResource(ConfigurableResource):
    """Where file drops arrive; each feed has a sub-folder."""

    path: str = Field(description="Root folder of the landing zone.")

    @property
    def root(self) -> Path:
        return Path(self.path)
