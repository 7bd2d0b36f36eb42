"""File drops: ``ingest_files`` killed mid-file, between commit and archive, or anywhere.

Truth: the files the trial wrote (every row a unique SKU). After any kill, bronze holds whole
files only, each registered once with its rows and the position naming a registered file;
after the reruns every SKU is in bronze exactly once and the landing zone is empty.
"""

from __future__ import annotations

from math import ceil
from pathlib import Path

import pytest

from medallion_platform.connectors.files import FileFeed, list_landing_files
from medallion_platform_tests.conftest import write_csv
from medallion_platform_tests.faults.children import Job
from medallion_platform_tests.faults.harness import Trial, draw_plan, query, reading, trial_seeds

BATCH_ROWS = 100
BRONZE = "bronze.files_products"
SOURCE = "files:products"


def _write_files(trial: Trial, landing: Path) -> dict[str, list[str]]:
    """4 to 6 files of 150 to 600 rows; relpath → its SKUs, in the order they will load."""
    files: dict[str, list[str]] = {}
    for n in range(trial.rng.randint(4, 6)):
        rel = f"products/drop_{n:02d}.csv"
        skus = [f"SKU-{trial.outcome.seed}-{n}-{i:04d}" for i in range(trial.rng.randint(150, 600))]
        body = "".join(
            f"{sku},Product {sku},cat{i % 7},{i % 90}.50,EUR\n" for i, sku in enumerate(skus)
        )
        write_csv(landing, rel, "sku,name,category,unit_price,currency\n" + body)
        files[rel] = skus
    return files


def _check_committed(
    trial: Trial,
    warehouse: Path,
    files: dict[str, list[str]],
    landing: Path,
    feed: FileFeed,
    when: str,
) -> None:
    """Whole files only, each registered once, the position on a registered file, and every
    file either still waiting or loaded."""
    with reading(warehouse) as q:
        per_file = dict(q(f"SELECT split_part(_source, '#', 1), count(*) FROM {BRONZE} GROUP BY 1"))
        registry = q("SELECT path, rows, batch_id FROM _meta.files WHERE status = 'loaded'")
        position = q("SELECT position, batch_id FROM _meta.positions WHERE source = ?", [SOURCE])
    registered = {path: (rows, batch) for path, rows, batch in registry}
    trial.expect(len(registered) == len(registry), f"{when}: a file registered twice: {registry}")
    for rel, count in per_file.items():
        trial.expect(
            count == len(files.get(rel, [])),
            f"{when}: {rel} has {count} rows in bronze, the file {len(files.get(rel, []))}",
        )
        trial.expect(rel in registered, f"{when}: {rel} has rows in bronze but is not registered")
    for rel, (rows, _) in registered.items():
        trial.expect(
            per_file.get(rel) == rows,
            f"{when}: {rel} registered with {rows} rows, bronze has {per_file.get(rel)}",
        )
    if position:
        rel, batch = position[0]
        trial.expect(
            registered.get(rel, (None, None))[1] == batch,
            f"{when}: position {position} names no loaded file",
        )
    else:
        trial.expect(not registered, f"{when}: files registered but no position")
    waiting = {f.relpath for f in list_landing_files(landing, feed)}
    for rel in files:
        trial.expect(
            rel in waiting or rel in registered, f"{when}: {rel} neither waiting nor loaded"
        )


@pytest.mark.parametrize("seed", trial_seeds())
def test_files_killed_then_rerun_lose_and_double_nothing(
    seed: int, tmp_path: Path, products_feed: FileFeed
) -> None:
    with Trial("files", seed) as trial:
        landing = tmp_path / "landing"
        warehouse = tmp_path / "warehouse.duckdb"
        files = _write_files(trial, landing)
        job = Job(
            "files",
            str(warehouse),
            {"feed": products_feed, "landing": str(landing), "batch_rows": BATCH_ROWS},
        )
        events = {
            "appended": sum(ceil(len(s) / BATCH_ROWS) for s in files.values()),
            "committed": len(files),
        }
        first = trial.run(job, trial.first_plan(events, timer_s=0.4))
        if first.status == "killed":
            _check_committed(trial, warehouse, files, landing, products_feed, "after the kill")
            if trial.second_crash():
                plan = draw_plan(trial.rng, {"appended": 2, "committed": 1}, timer_s=0.2)
                if trial.run(job, plan).status == "killed":
                    _check_committed(
                        trial, warehouse, files, landing, products_feed, "after the second kill"
                    )
        trial.run(job)
        trial.account(
            [sku for skus in files.values() for sku in skus],
            [sku for (sku,) in query(warehouse, f"SELECT sku FROM {BRONZE}")],
        )
        _check_committed(trial, warehouse, files, landing, products_feed, "at the end")
        trial.expect(
            list_landing_files(landing, products_feed) == [], "files left in the landing zone"
        )
        archived = sorted(p.name for p in (landing / "_archive" / "products").rglob("*.csv"))
        trial.expect(archived == sorted(Path(rel).name for rel in files), f"archive: {archived}")
        trial.assert_clean()
