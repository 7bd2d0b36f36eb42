"""Files in flight: still being written, growing after their load, or gone before it.

Whoever launches the run (a sensor, ``dagster job execute``, the UI), a file is loaded only
once it has settled, is checked again before and after it is archived, and a vanished file is
a reported outcome while the other files still load. Nothing is lost, nothing is silent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medallion_platform.connectors.files import ingest_files
from medallion_platform.connectors.files.landing import unmatched_files
from medallion_platform_tests.conftest import settled, write_csv

BRONZE = "bronze.files_products"
HEADER = "sku,name,unit_price\n"


def _rows(start: int, n: int) -> str:
    return "".join(f"SKU-{i:05d},Tent {i},1.50\n" for i in range(start, start + n))


def _count(warehouse, relpath: str | None = None) -> int:
    sql = f"SELECT count(*) FROM {BRONZE}"
    params: list = []
    if relpath:
        sql += " WHERE _source LIKE ?"
        params.append(relpath + "#row=%")
    with warehouse.connect() as conn:
        return conn.execute(sql, params).fetchone()[0]


@pytest.fixture
def landing(settings) -> Path:
    return settings.landing_dir


def test_a_file_still_being_written_waits_for_its_settle_time_in_a_direct_run(
    warehouse, landing, products_feed
) -> None:
    """The operator's case: 100 rows written, a run started by hand, 100 more rows written.
    The first run leaves the file (``settling``); once it settles, all 200 rows load."""
    path = landing / "products" / "catalog.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + _rows(0, 100))

    first = ingest_files(warehouse, products_feed, landing)
    (outcome,) = first.files
    assert outcome.status == "settling"
    assert "settle_seconds" in outcome.reason and f"{products_feed.settle_seconds:g}s" in (
        outcome.reason
    )
    assert path.exists() and not (landing / "_archive").exists()

    with path.open("a") as fh:  # the writer goes on, then stops
        fh.write(_rows(100, 100))
    settled(path)
    second = ingest_files(warehouse, products_feed, landing)
    assert [(f.status, f.rows) for f in second.files] == [("loaded", 200)]
    assert _count(warehouse) == 200


def test_a_file_that_grows_after_its_rows_are_committed_stays_and_loads_again(
    warehouse, landing, products_feed
) -> None:
    """A writer that appends right after the commit: the file is not archived with bytes
    nobody loaded; it is reported, stays in the landing zone, and its new content loads next."""
    path = write_csv(landing, "products/catalog.csv", HEADER + _rows(0, 100))

    def writer_appends_late(rel: str) -> None:
        with path.open("a") as fh:
            fh.write(_rows(100, 100))

    report = ingest_files(warehouse, products_feed, landing, on_committed=writer_appends_late)
    (outcome,) = report.files
    assert outcome.status == "changed_after_load" and outcome.rows == 100
    assert "changed after its 100 row(s) were committed" in outcome.reason
    assert path.exists() and path.stat().st_size > 0
    assert _count(warehouse) == 100
    with warehouse.connect() as conn:
        reason = conn.execute("SELECT reason FROM _meta.files WHERE status = 'loaded'").fetchone()
    assert "changed after" in reason[0]

    settled(path)
    again = ingest_files(warehouse, products_feed, landing)
    assert [(f.status, f.rows) for f in again.files] == [("loaded", 200)]
    with warehouse.connect() as conn:  # both versions are in bronze; no row of the file lost
        skus = conn.execute(f"SELECT count(DISTINCT sku) FROM {BRONZE}").fetchone()[0]
    assert skus == 200


def test_a_file_deleted_between_listing_and_reading_is_skipped_and_the_others_load(
    warehouse, landing, products_feed
) -> None:
    first = write_csv(landing, "products/a.csv", HEADER + _rows(0, 3_000))
    doomed = write_csv(landing, "products/b.csv", HEADER + _rows(5_000, 10))
    last = write_csv(landing, "products/c.csv", HEADER + _rows(9_000, 5))
    gone_before = landing / "products" / "listed_then_gone.csv"

    def delete_the_next_file(rel: str, rows: int) -> None:
        if rel == "products/a.csv" and doomed.exists():
            doomed.unlink()  # another process cleans up while we read a.csv

    report = ingest_files(
        warehouse,
        products_feed,
        landing,
        ["products/a.csv", "products/b.csv", "products/c.csv", "products/listed_then_gone.csv"],
        batch_rows=1_000,
        on_progress=delete_the_next_file,
    )
    status = {f.path: (f.status, f.rows) for f in report.files}
    assert status == {
        "products/a.csv": ("loaded", 3_000),
        "products/b.csv": ("vanished", 0),
        "products/c.csv": ("loaded", 5),
        "products/listed_then_gone.csv": ("vanished", 0),
    }
    vanished = {f.path: f.reason for f in report.files if f.status == "vanished"}
    assert all("deleted or moved away" in reason for reason in vanished.values())
    assert not gone_before.exists() and not first.exists() and not last.exists()
    assert _count(warehouse) == 3_005


def test_files_in_a_feed_folder_that_match_no_glob_are_listed(
    settings, landing, products_feed
) -> None:
    write_csv(landing, "products/catalog.csv", HEADER)
    write_csv(landing, "products/catalog.csv.gz", "")  # compressed csv: the feed takes it
    write_csv(landing, "products/catalog.xlsx", "PK")
    write_csv(landing, "products/notes/readme.txt", "x")
    write_csv(landing, "products/.partial.csv", "x")  # an upload in flight: not reported
    assert unmatched_files(landing, [products_feed]) == [
        "products/catalog.xlsx",
        "products/notes/readme.txt",
    ]
