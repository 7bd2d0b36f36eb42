"""Where the platform keeps its state: one home directory, overridable by ``MEDALLION_HOME``.

Everything the platform writes (the DuckDB warehouse, the landing zone, the Dagster instance)
lives under the home, so a fresh ``MEDALLION_HOME`` is a fresh platform.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

DEFAULT_HOME = ".medallion"
MEMORY_FRACTION = 0.25
"""DuckDB's default share of the machine's memory. DuckDB's own default (80 %) lets one silver
run take most of a machine that also runs Dagster, a broker and PostgreSQL; past its limit
DuckDB spills to disk (``temp_directory``) instead of growing."""


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when the process runs in a smaller one."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def duckdb_memory_limit() -> str:
    """``MEDALLION_DUCKDB_MEMORY_LIMIT`` (any DuckDB size, e.g. ``4GB``), else
    :data:`MEMORY_FRACTION` of the machine's memory."""
    configured = os.environ.get("MEDALLION_DUCKDB_MEMORY_LIMIT")
    if configured:
        return configured
    return f"{int(machine_memory_bytes() * MEMORY_FRACTION) // 2**20}MiB"


SILVER_MEMORY_LIMIT = "1GiB"
"""DuckDB's ``memory_limit`` while a contract is applied (when the warehouse's is higher).

Silver's sort by day, its windows and the blocks it reads and writes are held up to the limit
before DuckDB spills or evicts: under the warehouse's quarter of the machine, silver of 5M
stream events peaked at 2.24 GiB (a 1.2 GiB sort plus cached blocks); under 1 GiB at 1.36 GiB,
for the same CPU (bench/README.md, "Silver's memory bound"). Spills go to the warehouse's
``temp_directory``."""


def duckdb_silver_memory_limit() -> str:
    """``MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT`` (any DuckDB size), else
    :data:`SILVER_MEMORY_LIMIT`."""
    return os.environ.get("MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT") or SILVER_MEMORY_LIMIT


class PlatformSettings(BaseModel):
    """Resolved paths of one platform home."""

    model_config = ConfigDict(frozen=True)

    home: Path
    duckdb_memory_limit: str | None = None
    """DuckDB's ``memory_limit``; :func:`from_env` fills in :func:`duckdb_memory_limit`."""
    duckdb_silver_memory_limit: str | None = None
    """DuckDB's ``memory_limit`` while silver runs (:func:`duckdb_silver_memory_limit`)."""
    duckdb_threads: int | None = None

    @classmethod
    def from_env(cls) -> PlatformSettings:
        """``MEDALLION_HOME``, ``MEDALLION_DUCKDB_MEMORY_LIMIT``,
        ``MEDALLION_DUCKDB_SILVER_MEMORY_LIMIT``, ``MEDALLION_DUCKDB_THREADS``."""
        threads = os.environ.get("MEDALLION_DUCKDB_THREADS")
        return cls(
            home=Path(os.environ.get("MEDALLION_HOME", DEFAULT_HOME)).absolute(),
            duckdb_memory_limit=duckdb_memory_limit(),
            duckdb_silver_memory_limit=duckdb_silver_memory_limit(),
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
