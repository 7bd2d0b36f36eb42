"""File-ingestion benchmark: the platform's bronze → silver → gold path against raw DuckDB.

Generates the demo landing files at a scale giving at least ``--rows`` data rows, then, on
those same files, measures (each phase in its own child process, for an honest peak RSS):

- ``raw``: DuckDB's ``read_csv`` (all_varchar, union_by_name, ignore_errors) into a fresh file;
- ``dlt``: dlt's filesystem source and pyarrow's CSV reader (every value as text, the file name
  as lineage) into a fresh DuckDB file: the peer bronze is compared with (the ``bench`` extra);
- ``bronze``: ``ingest_files`` for every configured feed into a fresh warehouse;
- ``silver``: ``apply_contract`` for each file feed's contract, one transaction each;
- ``gold``: ``build_model`` per model (what the IO manager runs): ``CREATE OR REPLACE TABLE
  gold.<name> AS <model SQL>``, or, in the incremental phase, only the changed keys of a
  model declared ``incremental``;
- then ``--rounds`` incremental rounds, each of new files worth ``--incremental`` % of the
  rows: ``raw_inc`` (raw DuckDB appending the round's files to its tables, the floor under
  bronze's round), then bronze, silver and gold on the new data only.

Run: ``python bench/bench_files.py --rows 5000000`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

ROOT = Path(__file__).resolve().parent.parent


WORK_ROOT = ROOT / "bench" / ".work"
# Loaded data rows per unit of generator scale: products 2000 * (1 + 0.10 + 0.02 + 0.05),
# ad spend 4 channels * 30 days * 10 campaigns. Only a first guess: the manifest decides.
ROWS_PER_SCALE = 2000 * 1.17 + 4 * 30 * 10
LOADED_KINDS = ("good", "drifted_header")  # what the platform loads; the rest it sets aside
PHASES = ("generate", "raw", "dlt", "bronze", "silver", "gold")
LAYERS = ("bronze", "silver", "gold")
# After the full run: new files worth --incremental % of its rows arrive (``grow``, not timed)
# and each layer runs again on the same warehouse, as the landing-zone sensor would.
INCREMENTAL_PHASES = ("grow", "raw_inc", "bronze_inc", "silver_inc", "gold_inc")
GROW_START_OFFSET_DAYS = 45  # the new drops are dated after the first ones: new file names
Result = dict[str, Any]


def _peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _duckdb_config(memory_limit: str | None) -> dict[str, str]:
    """DuckDB connect config for the raw baseline (same memory limit as the warehouse)."""
    return {"memory_limit": memory_limit} if memory_limit else {}


# --- phases (each runs in a child process: ``--phase NAME``) ---------------------------------


WIDE_FEED = "wide"
WIDE_COLUMNS = 19


def generate_wide_csv(path: Path, rows: int, seed: int = 7) -> None:
    """A wide CSV as pandas writes it (``df.to_csv``): 19 columns of ids, integers with gaps
    (written 517.0), floats, text with commas, quotes and line breaks, dates, booleans and
    empty fields; input the platform did not make, in 100,000-row pieces."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    words = np.array(["Tent", "Stove, 2-burner", 'Boots "Alpine"', "Pack\n65L", "Café", ""])
    path.parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        frame = pd.DataFrame({"id": np.arange(start, start + n)})
        for i in range(1, WIDE_COLUMNS):
            kind = i % 6
            if kind == 0:
                col = pd.Series(rng.integers(0, 10_000, n)).where(rng.random(n) > 0.1)
            elif kind == 1:
                col = pd.Series(rng.normal(100, 30, n).round(4))
            elif kind == 2:
                col = pd.Series(rng.choice(words, n))
            elif kind == 3:
                col = pd.Series(
                    pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), "s")
                )
            elif kind == 4:
                col = pd.Series(rng.random(n) > 0.5)
            else:
                col = pd.Series(rng.integers(0, 10**9, n)).astype(str).str.zfill(12)
            frame[f"Field {i}"] = col
        frame.to_csv(path, mode="a" if start else "w", header=not start, index=False)


def phase_generate(
    workdir: Path, rows: int, memory_limit: str | None, shape: str = "demo"
) -> Result:
    """Write the landing files at the smallest tried scale whose loadable rows reach ``rows``
    (``shape`` wide: one pandas-written 19-column CSV of ``rows`` rows instead)."""
    if shape == WIDE_FEED:
        path = workdir / "landing" / WIDE_FEED / "wide.csv"
        start = time.perf_counter()
        generate_wide_csv(path, rows)
        return {
            "rows": rows,
            "seconds": time.perf_counter() - start,
            "scale": 0.0,
            "shape": WIDE_FEED,
            "files": {WIDE_FEED: [str(path)]},
            "file_kinds": {"wide": 1},
            "landing_mib": path.stat().st_size / 2**20,
        }
    from medallion_platform.devkit.demo.generator import generate_landing_files

    landing = workdir / "landing"
    scale = max(rows / ROWS_PER_SCALE * 1.001, 0.001)
    start = time.perf_counter()
    for _ in range(5):
        manifest = generate_landing_files(landing, scale=scale)
        loadable = sum(f.rows for f in manifest.files if f.kind in LOADED_KINDS)
        if loadable >= rows:
            break
        scale *= rows / loadable * 1.001  # integer rounding in the generator: go a bit higher
    else:
        raise RuntimeError(f"could not reach {rows} rows (last scale {scale})")
    seconds = time.perf_counter() - start
    files = {
        feed: sorted(
            str(f.path) for f in manifest.files if f.feed == feed and f.kind in LOADED_KINDS
        )
        for feed in ("products", "ad_spend")
    }
    kinds: dict[str, int] = {}
    for f in manifest.files:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    size = sum(p.stat().st_size for p in landing.rglob("*") if p.is_file())
    return {
        "rows": loadable,
        "seconds": seconds,
        "scale": scale,
        "files": files,
        "file_kinds": kinds,
        "landing_mib": size / 2**20,
        "malformed_rows": manifest.malformed_rows,
    }


def _read_csv(paths: list[str]) -> str:
    """Raw DuckDB's read of ``paths``: every value as text, columns by name, bad rows skipped,
    the file name kept (the same options in the full read and each round's)."""
    listing = "[" + ", ".join(_sql_str(p) for p in paths) + "]"
    return (
        f"read_csv({listing}, all_varchar=true, union_by_name=true, ignore_errors=true, "
        "filename=true)"
    )


def _raw_load(
    workdir: Path, memory_limit: str | None, files: dict[str, list[str]], sql: str
) -> Result:
    """Run ``sql`` (``{table}`` and ``{read}`` filled in) per feed in ``raw.duckdb``, then close
    it (a checkpoint of what was written): rows and seconds, per table and in all."""
    import duckdb

    start = time.perf_counter()
    conn = duckdb.connect(str(workdir / "raw.duckdb"), config=_duckdb_config(memory_limit))
    counts = {}
    split = {}
    for feed, paths in files.items():
        t0 = time.perf_counter()
        (counts[feed],) = conn.execute(
            sql.format(table=f"raw_{feed}", read=_read_csv(paths))
        ).fetchone()
        split[feed] = time.perf_counter() - t0
    conn.close()
    return {
        "rows": sum(counts.values()),
        "seconds": time.perf_counter() - start,
        "rows_by_table": counts,
        "seconds_by_table": split,
    }


def phase_raw(workdir: Path, rows: int, memory_limit: str | None) -> Result:
    """Raw DuckDB: read_csv the same files the platform loads, into a fresh database file."""
    files: dict[str, list[str]] = json.loads((workdir / "generate.json").read_text())["files"]
    return _raw_load(workdir, memory_limit, files, "CREATE TABLE {table} AS SELECT * FROM {read}")


def phase_dlt(workdir: Path, rows: int, memory_limit: str | None) -> Result:
    """dlt, as one would load these files with it: its filesystem source lists each feed's
    folder, pyarrow's CSV reader reads every value as text (rows of the wrong width skipped,
    as ``ignore_errors`` does for raw), the file name rides along as lineage, and dlt loads
    the Arrow tables into a fresh DuckDB file (extract, normalize, load)."""
    import csv
    import os

    import dlt
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from dlt.sources.filesystem import filesystem

    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["DLT_DATA_DIR"] = str(workdir / "dlt_data")
    files: dict[str, list[str]] = json.loads((workdir / "generate.json").read_text())["files"]
    landing = workdir / "landing"

    @dlt.transformer
    def csv_as_text(items: Any, wanted: set[str]) -> Any:
        for item in items:
            if item["file_name"] not in wanted:  # the files raw reads, no others
                continue
            with item.open() as fh:
                header = next(csv.reader([fh.readline().decode("utf-8-sig")]))
                fh.seek(0)
                reader = pacsv.open_csv(
                    fh,
                    read_options=pacsv.ReadOptions(block_size=4 << 20),
                    parse_options=pacsv.ParseOptions(
                        newlines_in_values=True, invalid_row_handler=lambda row: "skip"
                    ),
                    convert_options=pacsv.ConvertOptions(
                        column_types=dict.fromkeys(header, pa.string()),
                        strings_can_be_null=False,
                    ),
                )
                for batch in reader:
                    name = pa.repeat(pa.scalar(item["file_name"]), batch.num_rows)
                    yield pa.Table.from_batches([batch]).append_column("_file_name", name)

    destination = dlt.destinations.duckdb(str(workdir / "dlt.duckdb"))
    pipeline = dlt.pipeline(
        pipeline_name="bench_files",
        pipelines_dir=str(workdir / "dlt_pipelines"),
        destination=destination,
        dataset_name="raw_files",
    )
    start = time.perf_counter()
    split = {}
    for feed, paths in files.items():
        t0 = time.perf_counter()
        folder = landing / feed
        listing = filesystem(bucket_url=folder.as_uri(), file_glob="*.csv")
        wanted = {Path(p).name for p in paths}
        pipeline.run(
            (listing | csv_as_text(wanted=wanted)).with_name(f"dlt_{feed}"),
            write_disposition="append",
        )
        split[feed] = time.perf_counter() - t0
    seconds = time.perf_counter() - start
    import duckdb

    with duckdb.connect(str(workdir / "dlt.duckdb"), read_only=True) as conn:
        counts = {
            feed: conn.execute(f"SELECT count(*) FROM raw_files.dlt_{feed}").fetchone()[0]
            for feed in files
        }
    return {
        "rows": sum(counts.values()),
        "seconds": seconds,
        "rows_by_table": counts,
        "seconds_by_table": split,
    }


def phase_bronze(workdir: Path, rows: int, memory_limit: str | None) -> Result:
    """The platform's bronze: ingest_files for every feed, into a fresh warehouse."""
    from medallion_platform.config import platform_config
    from medallion_platform.connectors.files.loader import ingest_files
    from medallion_platform.warehouse import Warehouse

    feeds = platform_config().feeds
    if json.loads((workdir / "generate.json").read_text()).get("shape") == WIDE_FEED:
        from medallion_platform.connectors.files import FileFeed

        feeds = [
            FileFeed(
                name=WIDE_FEED,
                description="a pandas-written wide CSV",
                folder=WIDE_FEED,
                contract=WIDE_FEED,
                required_columns=["id"],
                settle_seconds=0,
            )
        ]
    start = time.perf_counter()
    warehouse = Warehouse(workdir / "warehouse.duckdb", memory_limit=memory_limit)
    loaded: dict[str, int] = {}
    split: dict[str, float] = {}
    statuses: dict[str, int] = {}
    for feed in feeds:
        t0 = time.perf_counter()
        report = ingest_files(warehouse, feed, workdir / "landing")
        loaded[feed.name] = report.rows_loaded
        split[feed.name] = time.perf_counter() - t0
        for f in report.files:
            statuses[f.status] = statuses.get(f.status, 0) + 1
    seconds = time.perf_counter() - start
    return {
        "rows": sum(loaded.values()),
        "seconds": seconds,
        "rows_by_table": loaded,
        "seconds_by_table": split,
        "file_status": statuses,
    }


def phase_silver(workdir: Path, rows: int, memory_limit: str | None) -> Result:
    """The platform's silver: apply_contract per contract, each in its own transaction."""
    from medallion_platform.config import platform_config
    from medallion_platform.contracts.apply import apply_contract
    from medallion_platform.warehouse import Warehouse

    config = platform_config()
    feeds = {feed.bronze_table for feed in config.feeds}  # the other sources have their benches
    contracts = [c for c in config.contracts if c.source in feeds]
    start = time.perf_counter()
    warehouse = Warehouse(workdir / "warehouse.duckdb", memory_limit=memory_limit)
    stats = {}
    split = {}
    for contract in contracts:
        t0 = time.perf_counter()
        with warehouse.transaction() as conn:
            stats[contract.name] = apply_contract(conn, contract, memory=warehouse.silver_memory)
        split[contract.name] = time.perf_counter() - t0
    seconds = time.perf_counter() - start
    return {
        "rows": sum(s.rows_in for s in stats.values()),
        "seconds": seconds,
        "rows_by_table": {n: s.rows_in for n, s in stats.items()},
        "seconds_by_table": split,
        "valid": {n: s.valid for n, s in stats.items()},
        "quarantined": {n: s.quarantined for n, s in stats.items()},
        "silver_rows": {n: s.inserted for n, s in stats.items()},
    }


def phase_gold(workdir: Path, rows: int, memory_limit: str | None) -> Result:
    """The platform's gold: ``build_model`` per model (what the gold assets run), one
    transaction each: the whole table, or only the changed keys of an incremental model."""
    from medallion_platform.config import platform_config
    from medallion_platform.gold.incremental import build_model
    from medallion_platform.warehouse import Warehouse
    from medallion_platform.warehouse.identifiers import qualified

    config = platform_config()
    feeds = {feed.bronze_table for feed in config.feeds}
    built = {f"silver.{c.name}" for c in config.contracts if c.source in feeds}
    models = []
    for model in config.gold_models:  # the models over the file feeds' silver, in order
        if set(model.depends_on) <= built:
            models.append(model)
            built.add(f"gold.{model.name}")
    warehouse = Warehouse(workdir / "warehouse.duckdb", memory_limit=memory_limit)
    with warehouse.connect() as conn:  # untimed: how many silver rows each model reads
        read = {
            m.name: sum(
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in m.depends_on
            )
            for m in models
        }
    start = time.perf_counter()
    split = {}
    builds = {}
    for model in models:
        t0 = time.perf_counter()
        with warehouse.transaction() as conn:
            built = build_model(conn, model)
        split[model.name] = time.perf_counter() - t0
        builds[model.name] = built.model_dump(exclude_none=True)
    seconds = time.perf_counter() - start
    with warehouse.connect() as conn:
        out = {
            m.name: conn.execute(f"SELECT count(*) FROM {qualified('gold', m.name)}").fetchone()[0]
            for m in models
        }
    return {
        "rows": sum(read.values()),
        "seconds": seconds,
        "rows_by_table": read,
        "seconds_by_table": split,
        "out": out,
        "builds": builds,
    }


def phase_grow(workdir: Path, rows: int, memory_limit: str | None) -> Result:
    """Not timed: new landing files worth ``percent`` % of the full run's rows (the parent
    writes it to ``grow_request.json``), dated after the first drops so their names are new:
    a catalog export that reprices known SKUs and adds some, and more days of ad spend."""
    from datetime import date, timedelta

    from medallion_platform.devkit.demo.generator import generate_landing_files

    request = json.loads((workdir / "grow_request.json").read_text())
    percent, round_ = request["percent"], request.get("round", 1)
    first = json.loads((workdir / "generate.json").read_text())
    start = time.perf_counter()
    manifest = generate_landing_files(
        workdir / "landing",
        scale=first["scale"] * percent / 100,
        seed=42 + round_,
        start_date=date(2026, 10, 1) + timedelta(days=GROW_START_OFFSET_DAYS * round_),
    )
    loadable = [f for f in manifest.files if f.kind in LOADED_KINDS]
    return {
        "rows": sum(f.rows for f in loadable),
        "seconds": time.perf_counter() - start,
        "percent_requested": percent,
        "files": len(manifest.files),
        "loadable_files": len(loadable),
        "paths": {
            feed: sorted(str(f.path) for f in loadable if f.feed == feed)
            for feed in ("products", "ad_spend")
        },
    }


def phase_raw_inc(workdir: Path, rows: int, memory_limit: str | None) -> Result:
    """Raw DuckDB's own round, the floor under bronze's: the round's loadable files read as in
    the full read and appended to its tables (``INSERT … BY NAME``), then the database closed,
    which checkpoints what was appended, as bronze's close does."""
    paths: dict[str, list[str]] = json.loads((workdir / "grow.json").read_text())["paths"]
    return _raw_load(
        workdir, memory_limit, paths, "INSERT INTO {table} BY NAME SELECT * FROM {read}"
    )


# Imported before the phase's clock and RSS baseline start, so neither counts import costs.
PHASE_IMPORTS = {
    "generate": ["medallion_platform.devkit.demo.generator"],
    "raw": ["duckdb"],
    "dlt": ["dlt", "dlt.sources.filesystem", "pyarrow.csv", "duckdb"],
    "bronze": ["medallion_platform.connectors.files.loader", "medallion_platform.config"],
    "silver": ["medallion_platform.contracts.apply", "medallion_platform.config"],
    "gold": [
        "medallion_platform.warehouse",
        "medallion_platform.config",
        "medallion_platform.gold.incremental",
    ],
    "grow": ["medallion_platform.devkit.demo.generator"],
    "raw_inc": ["duckdb"],
}
for _layer in LAYERS:
    PHASE_IMPORTS[f"{_layer}_inc"] = PHASE_IMPORTS[_layer]
PHASE_FUNCS = {
    "generate": phase_generate,
    "raw": phase_raw,
    "dlt": phase_dlt,
    "bronze": phase_bronze,
    "silver": phase_silver,
    "gold": phase_gold,
    "grow": phase_grow,
    "raw_inc": phase_raw_inc,
    # The same code on the same warehouse: only new files, new bronze batches, and the
    # changed keys of incremental gold models (the others rebuilt).
    "bronze_inc": phase_bronze,
    "silver_inc": phase_silver,
    "gold_inc": phase_gold,
}


def run_child_phase(
    name: str, workdir: Path, rows: int, memory_limit: str | None, shape: str = "demo"
) -> None:
    """Child side: run one phase, add RSS figures, write ``<workdir>/<name>.json``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for module in PHASE_IMPORTS[name]:
        importlib.import_module(module)
    rss_start = _peak_rss_mib()
    cpu_start = common.cpu_seconds()
    if name == "generate":
        result = phase_generate(workdir, rows, memory_limit, shape)
    else:
        result = PHASE_FUNCS[name](workdir, rows, memory_limit)
    result["cpu_seconds"] = common.cpu_seconds() - cpu_start
    result["rss_after_imports_mib"] = rss_start
    result["peak_rss_mib"] = _peak_rss_mib()
    (workdir / f"{name}.json").write_text(json.dumps(result, indent=2))


def spawn_phase(
    name: str, workdir: Path, rows: int, memory_limit: str | None, shape: str = "demo"
) -> Result | None:
    """Parent side: run one phase in a fresh interpreter and return what it reported (None for
    the dlt phase when dlt is not installed)."""
    if name == "dlt" and importlib.util.find_spec("dlt") is None:
        print("... dlt: not installed, skipped (pip install -e '.[bench]')", flush=True)
        return None
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name]
    cmd += ["--workdir", str(workdir), "--rows", str(rows), "--shape", shape]
    if memory_limit:
        cmd += ["--memory-limit", memory_limit]
    print(f"... {name}", flush=True)
    subprocess.run(cmd, check=True)
    result: Result = json.loads((workdir / f"{name}.json").read_text())
    print(f"    {result['rows']:,} rows in {result['seconds']:.1f}s", flush=True)
    return result


# --- report ----------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    """What the figures were measured on (and dlt's version, when it ran)."""
    if importlib.util.find_spec("dlt") is None:
        return common.machine_info()
    from importlib.metadata import version

    return common.machine_info(dlt=version("dlt"))


def _fmt(seconds: dict[str, float]) -> str:
    """``name 1.23s, …``."""
    return ", ".join(f"{name} {s:.2f}s" for name, s in seconds.items())


def _row(label: str, rows: int, seconds: float, rss: float) -> str:
    """One line of the Markdown results table."""
    rate = rows / seconds if seconds > 0 else float("inf")
    return f"| {label:<23} | {rows:>11,} | {seconds:>8.2f} | {rate:>11,.0f} | {rss:>13,.0f} |"


def render(
    results: dict[str, Result | None], info: dict[str, str], args: argparse.Namespace
) -> str:
    """The results as a Markdown table plus ratios and machine info."""
    raw, dlt, bronze, silver, gold = (results.get(p) for p in ("raw", "dlt", *LAYERS))
    gen = results["generate"]
    lines = [
        f"requested rows: {args.rows:,}   generator scale: {gen['scale']:.3f}   "
        f"landing files: {sum(gen['file_kinds'].values())} {gen['file_kinds']}   "
        f"({gen['landing_mib']:.0f} MiB)",
        f"generation (not in the figures): {gen['seconds']:.1f}s, "
        f"peak RSS {gen['peak_rss_mib']:.0f} MiB",
        f"memory limit: {args.memory_limit or common.platform_memory_limit(ROOT)}",
        "",
        "| phase                   |        rows |  seconds |      rows/s |  peak RSS MiB |",
        "|-------------------------|------------:|---------:|------------:|--------------:|",
    ]
    labels = {
        "raw": "raw DuckDB read_csv",
        "dlt": "dlt (pyarrow CSV)",
        "bronze": "bronze (ingest_files)",
        "silver": "silver (apply_contract)",
        "gold": "gold (CREATE TABLE AS)",
    }
    for name, label in labels.items():
        if results.get(name):
            r = results[name]
            lines.append(_row(label, r["rows"], r["seconds"], r["peak_rss_mib"]))
    if silver and gold:
        platform_s = bronze["seconds"] + silver["seconds"] + gold["seconds"]
        platform_rss = max(results[p]["peak_rss_mib"] for p in LAYERS)
        lines.append(_row("platform total", bronze["rows"], platform_s, platform_rss))
    lines += ["", f"bronze / raw time:         {bronze['seconds'] / raw['seconds']:.2f}x"]
    if dlt:
        lines += [
            f"dlt / raw time:            {dlt['seconds'] / raw['seconds']:.2f}x",
            f"bronze / dlt time:         {bronze['seconds'] / dlt['seconds']:.2f}x",
        ]
    cpu = {p: results[p].get("cpu_seconds") for p in ("raw", "dlt", *LAYERS) if results.get(p)}
    if all(v is not None for v in cpu.values()):
        lines.append(
            "CPU seconds (user + sys): " + ", ".join(f"{p} {v:.1f}" for p, v in cpu.items())
        )
        if dlt:
            lines.append(f"bronze / dlt CPU:          {cpu['bronze'] / cpu['dlt']:.2f}x")
    else:
        lines.append("dlt: not installed, not measured (pip install -e '.[bench]')")
    if silver and gold:
        lines.append(f"platform total / raw time: {platform_s / raw['seconds']:.1f}x")
    lines += [
        "",
        f"rows kept: raw {raw['rows_by_table']}, bronze {bronze['rows_by_table']} "
        f"(raw drops rows read_csv rejects; bronze keeps them)",
        f"bronze files: {bronze['file_status']}",
    ]
    if silver and gold:
        lines.append(
            f"silver: valid {silver['valid']}, quarantined {silver['quarantined']}, "
            f"keys {silver['silver_rows']}; gold rows out {gold['out']}"
        )
    ran = [p for p in PHASES if results.get(p)]
    lines += [
        "seconds by table: "
        + "; ".join(f"{p} {_fmt(results[p]['seconds_by_table'])}" for p in ran[1:]),
        "peak RSS after imports, before work: "
        + ", ".join(f"{p} {results[p]['rss_after_imports_mib']:.0f}" for p in ran)
        + " MiB",
        "",
        "machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
    ]
    return "\n".join(lines)


def round_name(phase: str, round_: int) -> str:
    """The results key of an incremental phase in round ``round_`` (1: the phase's own name)."""
    return phase if round_ == 1 else f"{phase}_r{round_}"


def _cpu_share(full: dict[str, Result], inc: dict[str, Result]) -> str:
    """The incremental layers' CPU seconds as a share of the full run's (steadier than wall
    time on a shared machine), or "n/a" when a phase did not report them."""
    if any("cpu_seconds" not in r for r in (*full.values(), *inc.values())):
        return "n/a"
    full_cpu = sum(r["cpu_seconds"] for r in full.values())
    inc_cpu = sum(r["cpu_seconds"] for r in inc.values())
    return f"{100 * inc_cpu / full_cpu:.1f} % ({inc_cpu:.1f} of {full_cpu:.1f})"


def _raw_floor(results: dict[str, Result | None], round_: int) -> list[str]:
    """Raw DuckDB's own round against its own full read, beside bronze's (one line, or none
    when the raw phases did not run)."""
    raw, raw_inc = results.get("raw"), results.get(round_name("raw_inc", round_))
    bronze, bronze_inc = results["bronze"], results[round_name("bronze_inc", round_)]
    if not raw or not raw_inc:
        return []
    return [
        f"raw DuckDB's own round (read_csv of the same new files appended to its tables, "
        f"closed): {raw_inc['seconds']:.2f} s, {100 * raw_inc['seconds'] / raw['seconds']:.1f} % "
        f"of its full read ({raw['seconds']:.2f} s); bronze's round "
        f"{100 * bronze_inc['seconds'] / bronze['seconds']:.1f} % of bronze's full load"
    ]


def render_incremental(results: dict[str, Result | None], round_: int = 1) -> str:
    """One incremental round against the full run: each layer's seconds as a share of the full
    bronze → silver → gold (the goal of issue 14: 1 % new data costs at most 5 %)."""
    grow = results[round_name("grow", round_)]
    full = {layer: results[layer] for layer in LAYERS}
    inc = {layer: results[round_name(f"{layer}_inc", round_)] for layer in LAYERS}
    full_s = sum(r["seconds"] for r in full.values())
    inc_s = sum(r["seconds"] for r in inc.values())
    labels = {
        "bronze": "bronze (new files)",
        "silver": "silver (new batches)",
        "gold": "gold (incremental)",
    }
    lines = [
        f"incremental round {round_}: {grow['rows']:,} new rows in {grow['loadable_files']} "
        "loadable files "
        f"({grow['files']} dropped), {100 * grow['rows'] / full['bronze']['rows']:.2f} % of the "
        f"full run's {full['bronze']['rows']:,} (requested {grow['percent_requested']:g} %)",
        "",
        "| layer                | full s | incremental s | rows in (incremental) | "
        "share of full total |",
        "|----------------------|-------:|--------------:|----------------------:|"
        "--------------------:|",
    ]
    for layer, label in labels.items():
        lines.append(
            f"| {label:<20} | {full[layer]['seconds']:>6.2f} | {inc[layer]['seconds']:>13.2f} "
            f"| {inc[layer]['rows']:>21,} | {100 * inc[layer]['seconds'] / full_s:>18.1f} % |"
        )
    lines += [
        f"| {'total':<20} | {full_s:>6.2f} | {inc_s:>13.2f} | {'':>21} "
        f"| {100 * inc_s / full_s:>18.1f} % |",
        "",
        f"incremental / full time: {100 * inc_s / full_s:.1f} % (goal <= 5 %); by CPU "
        f"seconds: {_cpu_share(full, inc)}; seconds by table: "
        + "; ".join(
            f"{p} {_fmt(results[round_name(p, round_)]['seconds_by_table'])}"
            for p in ("bronze_inc", "silver_inc", "gold_inc")
        ),
        *_raw_floor(results, round_),
        f"peak RSS: bronze {inc['bronze']['peak_rss_mib']:.0f}, silver "
        f"{inc['silver']['peak_rss_mib']:.0f}, gold {inc['gold']['peak_rss_mib']:.0f} MiB",
        "gold builds: "
        + "; ".join(
            f"{name} {b['build']}"
            + (f" ({b['changed_keys']:,} keys)" if "changed_keys" in b else f" ({b['reason']})")
            for name, b in inc["gold"].get("builds", {}).items()
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; as parent run every phase in a child, as child run one phase."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="minimum data rows loaded")
    parser.add_argument("--workdir", type=Path, help="default: a temp dir under bench/.work")
    parser.add_argument("--keep", action="store_true", help="keep the work dir at the end")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. '2GB'")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    parser.add_argument(
        "--shape",
        choices=("demo", WIDE_FEED),
        default="demo",
        help="demo: the demo's landing files; wide: one pandas-written 19-column CSV "
        "(raw, dlt and bronze only)",
    )
    parser.add_argument(
        "--upto",
        choices=("bronze", "gold"),
        default="gold",
        help="last phase to run (bronze: skip silver and gold, e.g. for bronze's memory at 20M)",
    )
    parser.add_argument(
        "--incremental",
        type=float,
        default=1.0,
        metavar="PCT",
        help="after the full run, new files worth PCT %% of its rows arrive and every layer "
        "runs again (0: skip; demo shape and --upto gold only)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="incremental rounds, each with its own new files (the first after a bulk load "
        "pays DuckDB's merge of the load's partly filled row groups; the next ones show the "
        "steady state)",
    )
    parser.add_argument("--phase", choices=(*PHASES, *INCREMENTAL_PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        run_child_phase(args.phase, args.workdir, args.rows, args.memory_limit, args.shape)
        return 0

    if args.workdir:
        workdir = args.workdir.absolute()
        if workdir.exists() and any(workdir.iterdir()):
            parser.error(f"--workdir {workdir} must be empty or absent (the run needs fresh files)")
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=WORK_ROOT))
    try:
        results: dict[str, Result | None] = {}
        # raw and dlt run before bronze: the platform moves the files it loads into _archive/.
        upto = "bronze" if args.shape == WIDE_FEED else args.upto  # no contract for it
        for name in PHASES[: PHASES.index(upto) + 1]:
            results[name] = spawn_phase(name, workdir, args.rows, args.memory_limit, args.shape)
        if results["bronze"]["rows"] < args.rows:
            print(f"error: bronze loaded {results['bronze']['rows']:,} < {args.rows:,} rows")
            return 1
        if args.incremental > 0 and upto == "gold":
            for round_ in range(1, args.rounds + 1):
                request = {"percent": args.incremental, "round": round_}
                (workdir / "grow_request.json").write_text(json.dumps(request))
                for name in INCREMENTAL_PHASES:
                    results[round_name(name, round_)] = spawn_phase(
                        name, workdir, args.rows, args.memory_limit, args.shape
                    )
        info = machine_info()
        print()
        print(render(results, info, args))
        for round_ in range(1, args.rounds + 1):
            if results.get(round_name("gold_inc", round_)):
                print()
                print(render_incremental(results, round_))
        if args.json:
            for result in results.values():
                if result:
                    result.pop("files", None)
                    result.pop("paths", None)  # a round's file list, not a figure
            print(json.dumps({"rows_requested": args.rows, "machine": info, **results}, indent=2))
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
