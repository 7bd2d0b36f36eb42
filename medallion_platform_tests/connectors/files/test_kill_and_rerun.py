"""SIGKILL in the middle of a big file, then a rerun: every row exactly once, nothing lost.

A real child process loads the landing folder into a real DuckDB file and reports progress
after each inserted batch; the parent kills it (no cleanup, no ROLLBACK: the process is gone)
while the big file's transaction is open, inspects the warehouse, then reruns in-process.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medallion_platform.connectors.files import ingest_files, list_landing_files
from medallion_platform_tests.conftest import write_csv

BIG_ROWS = 600_000
SMALL_ROWS = 3
CHILD_BATCH_ROWS = 20_000
STARTUP_TIMEOUT_S = 60.0
BRONZE = "bronze.files_products"

CHILD = """
import sys
from pathlib import Path

from medallion_platform.connectors.files import FileFeed, ingest_files
from medallion_platform.warehouse import Warehouse


def progress(relpath, rows):
    print(f"progress {relpath} {rows}", flush=True)


feed = FileFeed.model_validate_json(sys.argv[3])
report = ingest_files(
    Warehouse(sys.argv[1]), feed, Path(sys.argv[2]), batch_rows=int(sys.argv[4]),
    on_progress=progress,
)
print("done", report.rows_loaded, flush=True)
"""


def _write_big(landing: Path, relpath: str) -> Path:
    header = "sku,name,category,unit_price,currency\n"
    body = "\n".join(
        f"SKU-{i:07d},Product {i},cat{i % 17},{i % 1000}.99,EUR" for i in range(1, BIG_ROWS + 1)
    )
    return write_csv(landing, relpath, header + body + "\n")


def _write_small(landing: Path, relpath: str) -> Path:
    rows = "".join(f"SMALL-{i},Small {i},misc,1.00,EUR\n" for i in range(1, SMALL_ROWS + 1))
    return write_csv(landing, relpath, "sku,name,category,unit_price,currency\n" + rows)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _query(warehouse, sql: str, params: list | None = None) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(sql, params or []).fetchall()


def _rows_of(warehouse, relpath: str) -> tuple[int, int, int, int, int]:
    """count, distinct _source, distinct sku, min and max _row_number of one file's rows."""
    return _query(
        warehouse,
        f"SELECT count(*), count(DISTINCT _source), count(DISTINCT sku), "
        f"coalesce(min(_row_number), 0), coalesce(max(_row_number), 0) "
        f"FROM {BRONZE} WHERE _source LIKE ?",
        [relpath + "#row=%"],
    )[0]


def _registry(warehouse) -> list[tuple[str, str, int]]:
    return _query(warehouse, "SELECT path, status, rows FROM _meta.files ORDER BY batch_id")


def _kill_child_during(tmp_path: Path, warehouse, feed, landing: Path, relpath: str, rows: int):
    """Run the loader in a child; SIGKILL it once it reports >= ``rows`` rows of ``relpath``.

    Returns the progress lines the child printed. Never hangs: reads go through a queue with a
    deadline, and the child is killed and reaped whatever happens.
    """
    script = tmp_path / "child_ingest.py"
    script.write_text(CHILD, encoding="utf-8")
    stderr_path = tmp_path / "child.stderr"
    args = [str(warehouse.path), str(landing), feed.model_dump_json(), str(CHILD_BATCH_ROWS)]
    lines: list[str] = []
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        out: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:
                out.put(line.rstrip("\n"))
            out.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                try:
                    line = out.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    pytest.fail(f"no progress for {relpath} in {STARTUP_TIMEOUT_S}s: {lines}")
                if line is None:
                    pytest.fail(
                        f"child ended before the kill point (rc={proc.wait(timeout=10)}): "
                        f"{lines}\n{stderr_path.read_text()}"
                    )
                lines.append(line)
                parts = line.split()
                if parts[:2] == ["progress", relpath] and int(parts[2]) >= rows:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            reader.join(timeout=10)
            proc.stdout.close()
    while (line := out.get_nowait() if not out.empty() else None) is not None:
        lines.append(line)
    assert not any(line.startswith("done") for line in lines), lines
    return lines


def _assert_each_file_once(warehouse, landing, feed, files: dict[str, int]) -> None:
    for relpath, n in files.items():
        assert _rows_of(warehouse, relpath) == (n, n, n, 1, n), relpath
    assert _query(warehouse, f"SELECT count(*) FROM {BRONZE}") == [(sum(files.values()),)]
    registry = _registry(warehouse)
    assert sorted(registry) == sorted((rel, "loaded", n) for rel, n in files.items())
    assert list_landing_files(landing, feed) == []


def test_kill_during_big_file_then_rerun_loads_everything_once(
    tmp_path, warehouse, settings, products_feed
):
    """Killed inside the first file: nothing of it is committed; the rerun loads it whole."""
    landing = settings.landing_dir
    big = _write_big(landing, "products/a_big.csv")
    small = _write_small(landing, "products/b_small.csv")
    big_hash, small_hash = _sha256(big), _sha256(small)

    lines = _kill_child_during(
        tmp_path, warehouse, products_feed, landing, "products/a_big.csv", CHILD_BATCH_ROWS
    )
    assert lines and lines[-1].startswith("progress products/a_big.csv")

    # What the kill left: no rows, no registry entry, no position; both files still waiting.
    assert _query(warehouse, f"SELECT count(*) FROM {BRONZE}") == [(0,)]
    assert _registry(warehouse) == []
    assert _query(warehouse, "SELECT count(*) FROM _meta.positions") == [(0,)]
    assert [f.relpath for f in list_landing_files(landing, products_feed)] == [
        "products/a_big.csv",
        "products/b_small.csv",
    ]
    assert (_sha256(big), _sha256(small)) == (big_hash, small_hash)

    report = ingest_files(warehouse, products_feed, landing)

    assert [(f.path, f.status, f.rows) for f in report.files] == [
        ("products/a_big.csv", "loaded", BIG_ROWS),
        ("products/b_small.csv", "loaded", SMALL_ROWS),
    ]
    _assert_each_file_once(
        warehouse,
        landing,
        products_feed,
        {"products/a_big.csv": BIG_ROWS, "products/b_small.csv": SMALL_ROWS},
    )


def test_kill_after_a_committed_file_does_not_load_it_twice(
    tmp_path, warehouse, settings, products_feed
):
    """The small file committed before the kill stays once; the big one, killed deep, reloads.

    The kill waits until seven batches (140,000 rows) of the big file sit in the open
    transaction, so a rerun must discard a large uncommitted append, not a single batch.
    """
    landing = settings.landing_dir
    _write_small(landing, "products/a_small.csv")
    big = _write_big(landing, "products/b_big.csv")
    big_hash = _sha256(big)

    lines = _kill_child_during(
        tmp_path, warehouse, products_feed, landing, "products/b_big.csv", 140_000
    )
    assert f"progress products/a_small.csv {SMALL_ROWS}" in lines

    assert _rows_of(warehouse, "products/a_small.csv") == (3, 3, 3, 1, 3)
    assert _rows_of(warehouse, "products/b_big.csv")[0] == 0
    assert _registry(warehouse) == [("products/a_small.csv", "loaded", SMALL_ROWS)]
    assert [f.relpath for f in list_landing_files(landing, products_feed)] == ["products/b_big.csv"]
    assert _sha256(big) == big_hash

    report = ingest_files(warehouse, products_feed, landing)

    assert [(f.path, f.status, f.rows) for f in report.files] == [
        ("products/b_big.csv", "loaded", BIG_ROWS)
    ]
    _assert_each_file_once(
        warehouse,
        landing,
        products_feed,
        {"products/a_small.csv": SMALL_ROWS, "products/b_big.csv": BIG_ROWS},
    )
