"""Resources shared by every asset: the warehouse and the landing zone, defined once."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from medallion_platform.warehouse import Warehouse


class WarehouseResource(ConfigurableResource):
    """The DuckDB warehouse file; assets open it per step, so the lock is held only then."""

    path: str = Field(description="Path of the DuckDB warehouse file.")
    memory_limit: str | None = Field(
        default=None, description="DuckDB memory_limit (e.g. '4GB'); beyond it DuckDB spills."
    )
    threads: int | None = Field(default=None, description="DuckDB worker threads.")
    lock_timeout_s: float = Field(default=300.0, description="How long to wait for the lock.")

    def warehouse(self, read_only: bool = False) -> Warehouse:
        return Warehouse(
            self.path,
            read_only=read_only,
            lock_timeout_s=self.lock_timeout_s,
            memory_limit=self.memory_limit,
            threads=self.threads,
        )


class LandingZoneResource(ConfigurableResource):
    """Where file drops arrive; each feed has a sub-folder."""

    path: str = Field(description="Root folder of the landing zone.")

    @property
    def root(self) -> Path:
        return Path(self.path)
