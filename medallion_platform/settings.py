"""Where the platform keeps its state: one home directory, overridable by ``MEDALLION_HOME``.

Everything the platform writes (the DuckDB warehouse, the landing zone, the Dagster instance)
lives under the home, so a fresh ``MEDALLION_HOME`` is a fresh platform.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

DEFAULT_HOME = ".medallion"


class PlatformSettings(BaseModel):
    """Resolved paths of one platform home."""

    model_config = ConfigDict(frozen=True)

    home: Path
    duckdb_memory_limit: str | None = None
    duckdb_threads: int | None = None

    @classmethod
    def from_env(cls) -> PlatformSettings:
        """``MEDALLION_HOME``, ``MEDALLION_DUCKDB_MEMORY_LIMIT``, ``MEDALLION_DUCKDB_THREADS``."""
        threads = os.environ.get("MEDALLION_DUCKDB_THREADS")
        return cls(
            home=Path(os.environ.get("MEDALLION_HOME", DEFAULT_HOME)).absolute(),
            duckdb_memory_limit=os.environ.get("MEDALLION_DUCKDB_MEMORY_LIMIT") or None,
            duckdb_threads=int(threads) if threads else None,
        )

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def exports_dir(self) -> Path:
        """Gold tables as Parquet (``exports/gold/<table>.parquet``), for BI tools."""
        return self.home / "exports"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def ensure_dirs(self) -> None:
        for path in (self.home, self.landing_dir, self.dagster_home):
            path.mkdir(parents=True, exist_ok=True)
