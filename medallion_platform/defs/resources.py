"""Resources shared by every asset: the warehouse and the landing zone, defined once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from medallion_platform.defs.runs import run_writer_session
from medallion_platform.warehouse import Warehouse


class WarehouseResource(ConfigurableResource):
    """The DuckDB warehouse file. A run holds its writer lock from start to end (steps of two
    runs never interleave); assets open connections per step."""

    path: str = Field(description="Path of the DuckDB warehouse file.")
    memory_limit: str | None = Field(
        default=None, description="DuckDB memory_limit (e.g. '4GB'); beyond it DuckDB spills."
    )
    threads: int | None = Field(default=None, description="DuckDB worker threads.")
    lock_timeout_s: float = Field(default=300.0, description="How long to wait for the lock.")

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[WarehouseResource]:
        with run_writer_session(context, self.path):
            yield self

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
