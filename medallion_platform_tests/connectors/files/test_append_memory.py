"""Bronze appends under a bounded DuckDB buffer pool (``append_memory``), on a real DuckDB file.

DuckDB keeps the blocks it writes in its buffer pool until ``memory_limit`` forces them out,
so without a bound a long load holds memory in proportion to what it wrote (measured: 650 MB
of ``BASE_TABLE`` blocks at the end of a 20M-row load). Row-group appends like the loaders'
are written here, with and without the bound, and the cache is read from ``duckdb_memory()``.
"""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from medallion_platform.connectors.bronze import (
    ROW_GROUP_ROWS,
    append_batch,
    append_memory,
    ensure_bronze_table,
)
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.warehouse import transaction

MIB = 2**20
BOUND = 16 * MIB


def _rows(seed: int) -> pa.Table:
    """One row group of text that does not compress (random hex: about 8 MiB written)."""
    rng = random.Random(seed)
    n = ROW_GROUP_ROWS
    text = pa.array([rng.randbytes(32).hex() for _ in range(n)])
    return pa.table({"value": text, "_row_number": pa.array(range(1, n + 1))})


def _cached(conn: duckdb.DuckDBPyConnection) -> int:
    """Bytes of table blocks DuckDB holds in memory."""
    return conn.execute(
        "SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'BASE_TABLE'"
    ).fetchone()[0]


def _load(conn: duckdb.DuckDBPyConnection, groups: int) -> None:
    with transaction(conn):
        ensure_bronze_table(conn, "appended", {})
    for g in range(groups):  # one transaction per two row groups, as a loader commits
        with transaction(conn):
            for k in range(2):
                append_batch(conn, "appended", _rows((2 * g + k) * ROW_GROUP_ROWS), batch_id=g)


def _limit(conn: duckdb.DuckDBPyConnection) -> str:
    """DuckDB's memory_limit as it shows it (``3.7 GiB``)."""
    return conn.execute("SELECT current_setting('memory_limit')").fetchone()[0]


@pytest.mark.parametrize("bounded", [False, True], ids=["unbounded", "bounded"])
def test_written_blocks_stay_cached_unless_appends_are_bounded(
    tmp_path: Path, bounded: bool
) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", memory_limit="4GB")
    with warehouse.connect() as conn:
        configured = _limit(conn)
        if bounded:
            with append_memory(conn, warehouse.memory_limit, bound=BOUND):
                _load(conn, groups=6)
                held = _cached(conn)
        else:
            _load(conn, groups=6)
            held = _cached(conn)
        written = conn.execute("SELECT count(*) FROM bronze.appended").fetchone()[0]
        assert written == 12 * ROW_GROUP_ROWS
        assert _limit(conn) == configured  # the warehouse's limit, back after the appends
    if bounded:
        assert held <= BOUND
    else:  # what the bound is for: the pool keeps what was written, far past the bound
        assert held > 2 * BOUND


def test_a_lower_configured_limit_is_kept_and_an_error_still_restores(tmp_path: Path) -> None:
    low = Warehouse(tmp_path / "low.duckdb", memory_limit="8MiB")
    with low.connect() as conn, append_memory(conn, low.memory_limit, bound=BOUND):
        assert _limit(conn) == "8.0 MiB"
    high = Warehouse(tmp_path / "high.duckdb", memory_limit="1GiB")
    with high.connect() as conn:
        with (
            pytest.raises(RuntimeError, match="boom"),
            append_memory(conn, high.memory_limit, bound=BOUND),
        ):
            assert _limit(conn) == "16.0 MiB"
            raise RuntimeError("boom")
        assert _limit(conn) == "1.0 GiB"
