"""What every benchmark shares: the machine the figures were measured on, CPU seconds, and
the memory settings the platform's phases run under.

The benchmarks run as scripts (``python bench/bench_<x>.py``), so this module is imported from
the script's own directory.
"""

from __future__ import annotations

import os
import platform
import resource
from datetime import UTC, datetime
from pathlib import Path


def machine_info(**versions: str) -> dict[str, str]:
    """CPU, memory, OS, Python, DuckDB and pyarrow versions, plus the caller's ``versions``."""
    import duckdb
    import pyarrow

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory_gib": f"{mem:.1f}",
        "os": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pyarrow": pyarrow.__version__,
        **versions,
    }


def cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) this process has used so far. On a machine
    shared with other work, a phase's CPU seconds move less than its wall time: the
    comparison to read when the wall ratios of one run disagree with the next's."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def platform_memory_limit(root: Path) -> str:
    """What the platform's phases run with when --memory-limit is not given (``root``: the
    checkout whose package the phases import)."""
    import sys

    sys.path.insert(0, str(root))
    from medallion_platform.settings import duckdb_memory_limit, duckdb_silver_memory_limit

    return (
        f"platform default {duckdb_memory_limit()}, silver under {duckdb_silver_memory_limit()} "
        "(raw phases: DuckDB's default)"
    )
