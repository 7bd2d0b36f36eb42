"""Bronze's shared append helpers, on a real DuckDB file."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from medallion_platform.connectors.bronze import ROW_GROUP_ROWS, setting, whole_row_groups


def _many_small_chunks(rows: int, chunk: int) -> pa.Table:
    """A table as a consumer or a reader hands it over: one small Arrow chunk per read."""
    return pa.Table.from_batches(
        [
            pa.record_batch(
                {"id": pa.array(range(start, min(start + chunk, rows)), pa.int64())}
                | {"text": pa.array([f"row {i}" for i in range(start, min(start + chunk, rows))])}
            )
            for start in range(0, rows, chunk)
        ]
    )


def test_whole_row_groups_makes_one_chunk_per_row_group_and_keeps_rows_in_order() -> None:
    table = _many_small_chunks(2 * ROW_GROUP_ROWS + 4_240, 833)
    grouped = whole_row_groups(table)
    assert [len(c) for c in grouped.column("id").chunks] == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 4_240]
    assert grouped.equals(table)  # same rows, same order, same schema
    assert whole_row_groups(table.slice(0, 0)).num_rows == 0  # an empty read stays empty


def test_duckdb_stores_whole_row_groups_without_partly_filled_ones(tmp_path: Path) -> None:
    """What the helper is for: every row group but the last full as the INSERT writes it, so a
    later checkpoint has nothing to merge and rewrite."""
    grouped = whole_row_groups(_many_small_chunks(2 * ROW_GROUP_ROWS + 4_240, 833))  # noqa: F841
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("CREATE TABLE t (id BIGINT, text VARCHAR)")
        conn.execute("INSERT INTO t SELECT * FROM grouped")
        conn.execute("CHECKPOINT")
        sizes = [
            rows
            for _, rows in conn.execute(
                "SELECT row_group_id, max(count) FROM pragma_storage_info('t') "
                "GROUP BY ALL ORDER BY 1"
            ).fetchall()
        ]
    assert sizes[:-1] == [ROW_GROUP_ROWS] * (len(sizes) - 1)
    assert sum(sizes) == 2 * ROW_GROUP_ROWS + 4_240


def test_a_setting_holds_for_its_block_and_is_restored_even_when_the_block_fails() -> None:
    conn = duckdb.connect(config={"threads": 2})
    with setting(conn, "threads", 1):
        assert conn.execute("SELECT current_setting('threads')").fetchone() == (1,)
    assert conn.execute("SELECT current_setting('threads')").fetchone() == (2,)
    with pytest.raises(RuntimeError), setting(conn, "checkpoint_threshold", "128MiB"):
        assert conn.execute("SELECT current_setting('checkpoint_threshold')").fetchone() == (
            "128.0 MiB",
        )
        raise RuntimeError("the block fails")
    assert conn.execute("SELECT current_setting('checkpoint_threshold')").fetchone() == (
        "16.0 MiB",
    )
