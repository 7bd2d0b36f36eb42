"""Silver and gold on Spark local[2] beside DuckDB, on the same bronze of the file benchmark.

Generates the demo landing files (at least ``--rows`` data rows) and loads bronze with the
platform (DuckDB, as always), then measures, each phase in its own child process:

- ``silver`` / ``gold``: the DuckDB engine (``bench_files.py``'s phases: ``apply_contract``
  per contract, ``CREATE OR REPLACE TABLE … AS`` per model);
- ``export``: DuckDB writes each committed bronze batch to the lake as Parquet (what the Spark
  engine does before a contract's first run; later runs export only new batches);
- ``spark``: one Spark session on ``local[2]`` (start-up timed apart), the same contracts with
  ``apply_contract_spark`` and the same gold models, transpiled, each committed to the lake.

Both engines' outputs are checked to hold the same rows. Peak memory: the Python process's
``ru_maxrss`` and, for Spark, the JVM's own peak (``VmHWM``).

Run: ``python bench/bench_spark.py --rows 5000000`` (see bench/README.md, "Spark").
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_files
import common

ROOT = Path(__file__).resolve().parent.parent
Result = dict[str, Any]


def _models(config) -> list:
    """The gold models over the file feeds' silver, in dependency order (as bench_files)."""
    feeds = {feed.bronze_table for feed in config.feeds}
    built = {f"silver.{c.name}" for c in config.contracts if c.source in feeds}
    models = []
    for model in config.gold_models:
        if set(model.depends_on) <= built:
            models.append(model)
            built.add(f"gold.{model.name}")
    return models


def _contracts(config) -> list:
    feeds = {feed.bronze_table for feed in config.feeds}
    return [c for c in config.contracts if c.source in feeds]


def phase_export(workdir: Path, memory_limit: str | None) -> Result:
    """DuckDB → lake: every committed batch of the file feeds' bronze as Parquet."""
    from medallion_platform.config import platform_config
    from medallion_platform.engines.duckdb_lake import export_bronze
    from medallion_platform.engines.lake import Lake
    from medallion_platform.warehouse import Warehouse

    config = platform_config()
    lake = Lake(workdir / "lake")
    warehouse = Warehouse(workdir / "warehouse.duckdb", memory_limit=memory_limit)
    start = time.perf_counter()
    batches = {}
    with warehouse.connect() as conn:
        for contract in _contracts(config):
            batches[contract.source] = len(export_bronze(conn, lake, contract.source))
        rows = sum(
            conn.execute(f"SELECT count(*) FROM bronze.{c.source}").fetchone()[0]
            for c in _contracts(config)
        )
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (workdir / "lake").rglob("*.parquet"))
    return {"rows": rows, "seconds": seconds, "batches": batches, "lake_mib": size / 2**20}


def _jvm_peak_mib(session) -> float | None:
    """The Spark JVM's peak resident memory (VmHWM), in MiB; None if it cannot be read."""
    proc = getattr(session.sparkContext._gateway, "proc", None)
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except (AttributeError, OSError):
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def phase_spark(workdir: Path, memory_limit: str | None, master: str, driver_memory: str) -> Result:
    """The Spark engine: session start, then every contract and every gold model."""
    from medallion_platform.config import platform_config
    from medallion_platform.contracts.spark import apply_contract_spark
    from medallion_platform.engines.lake import Lake
    from medallion_platform.engines.settings import EngineSettings
    from medallion_platform.engines.spark import SparkEngine, spark_session
    from medallion_platform.warehouse import Warehouse
    from medallion_platform.warehouse.warehouse import table_columns

    config = platform_config()
    settings = EngineSettings(engine="spark", spark_master=master, lake=str(workdir / "lake"))
    events = workdir / "spark-events"
    events.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    session = spark_session(
        settings,
        conf={
            "spark.driver.memory": driver_memory,
            # Spark's own event log: the bytes each step read, shuffled and wrote.
            "spark.eventLog.enabled": "true",
            "spark.eventLog.compress": "false",
            "spark.eventLog.dir": events.as_uri(),
        },
    )
    started = time.perf_counter() - t0
    engine = SparkEngine(session, Lake(settings.lake))
    with Warehouse(workdir / "warehouse.duckdb", read_only=True).connect() as conn:
        columns = {c.source: table_columns(conn, "bronze", c.source) for c in _contracts(config)}
    silver_split, stats = {}, {}
    start = time.perf_counter()
    for contract in _contracts(config):
        t1 = time.perf_counter()
        session.sparkContext.setJobGroup(contract.name, f"silver.{contract.name}")
        stats[contract.name] = apply_contract_spark(
            engine, contract, bronze_columns=columns[contract.source]
        )
        silver_split[contract.name] = time.perf_counter() - t1
    silver_s = time.perf_counter() - start
    gold_split = {}
    start = time.perf_counter()
    for model in _models(config):
        t1 = time.perf_counter()
        session.sparkContext.setJobGroup(model.name, f"gold.{model.name}")
        engine.build_model(model)
        gold_split[model.name] = time.perf_counter() - t1
    gold_s = time.perf_counter() - start
    jvm = _jvm_peak_mib(session)
    out = {
        name: session.read.parquet(str(engine.lake.require(*name.split(".")))).count()
        for name in [f"silver.{c.name}" for c in _contracts(config)]
        + [f"gold.{m.name}" for m in _models(config)]
    }
    session.stop()
    return {
        "bytes_by_table": _bytes_by_group(events),
        "rows": sum(s.rows_in for s in stats.values()),
        "seconds": silver_s + gold_s,
        "session_start_s": started,
        "silver_s": silver_s,
        "gold_s": gold_s,
        "seconds_by_table": {**silver_split, **gold_split},
        "quarantined": {n: s.quarantined for n, s in stats.items()},
        "out": out,
        "jvm_peak_mib": jvm,
        "master": master,
        "driver_memory": driver_memory,
    }


def _bytes_by_group(events: Path) -> dict[str, dict[str, int]]:
    """From Spark's event log: per job group (a contract or a model), the bytes its tasks
    read from files, wrote to the shuffle and wrote to files."""
    stage_group: dict[int, str] = {}
    totals: dict[str, dict[str, int]] = {}
    for log in events.rglob("*"):
        if not log.is_file() or log.name.startswith("."):
            continue
        for line in log.read_text(errors="replace").splitlines():
            event = json.loads(line)
            if event["Event"] == "SparkListenerJobStart":
                group = (event.get("Properties") or {}).get("spark.jobGroup.id")
                for stage in event["Stage Infos"]:
                    if group:
                        stage_group[stage["Stage ID"]] = group
            elif event["Event"] == "SparkListenerTaskEnd" and event.get("Task Metrics"):
                group = stage_group.get(event["Stage ID"])
                if group is None:
                    continue
                metrics = event["Task Metrics"]
                total = totals.setdefault(group, {"read": 0, "shuffled": 0, "written": 0})
                total["read"] += metrics["Input Metrics"]["Bytes Read"]
                total["shuffled"] += metrics["Shuffle Write Metrics"]["Shuffle Bytes Written"]
                total["written"] += metrics["Output Metrics"]["Bytes Written"]
    return totals


def _duckdb_counts(workdir: Path) -> dict[str, int]:
    sys.path.insert(0, str(ROOT))
    from medallion_platform.config import platform_config
    from medallion_platform.warehouse import Warehouse

    config = platform_config()
    names = [f"silver.{c.name}" for c in _contracts(config)]
    names += [f"gold.{m.name}" for m in _models(config)]
    with Warehouse(workdir / "warehouse.duckdb", read_only=True).connect() as conn:
        return {n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}


def spawn(name: str, workdir: Path, args: argparse.Namespace) -> Result:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name]
    cmd += ["--workdir", str(workdir), "--master", args.master]
    cmd += ["--driver-memory", args.driver_memory]
    if args.memory_limit:
        cmd += ["--memory-limit", args.memory_limit]
    print(f"... {name}", flush=True)
    subprocess.run(cmd, check=True)
    result: Result = json.loads((workdir / f"{name}.json").read_text())
    print(f"    {result['rows']:,} rows in {result['seconds']:.1f}s", flush=True)
    return result


def render(results: dict[str, Result], duck_counts: dict[str, int], args) -> str:
    silver, gold, export, spark = (results[p] for p in ("silver", "gold", "export", "spark"))
    duck_s = silver["seconds"] + gold["seconds"]
    rows = silver["rows"]

    def line(label: str, seconds: float, rss: float | str) -> str:
        rss_text = f"{rss:,.0f}" if isinstance(rss, float | int) else rss
        return f"| {label:<34} | {seconds:>8.1f} | {rows / seconds:>10,.0f} | {rss_text:>16} |"

    jvm = spark["jvm_peak_mib"]
    lines = [
        f"bronze rows: {rows:,} ({export['lake_mib']:.0f} MiB of Parquet in the lake, "
        f"{sum(export['batches'].values())} batch files)   Spark: {spark['master']}, "
        f"driver memory {spark['driver_memory']}",
        "",
        "| step                               |  seconds | bronze rows/s | peak RSS MiB     |",
        "|------------------------------------|---------:|-----------:|-----------------:|",
        line("DuckDB silver (apply_contract)", silver["seconds"], silver["peak_rss_mib"]),
        line("DuckDB gold (CREATE TABLE AS)", gold["seconds"], gold["peak_rss_mib"]),
        line("DuckDB silver + gold", duck_s, max(silver["peak_rss_mib"], gold["peak_rss_mib"])),
        line("export bronze to the lake (DuckDB)", export["seconds"], export["peak_rss_mib"]),
        line("Spark silver", spark["silver_s"], f"JVM {jvm:,.0f}" if jvm else "JVM ?"),
        line("Spark gold", spark["gold_s"], f"py {spark['peak_rss_mib']:,.0f}"),
        line("Spark silver + gold", spark["seconds"], "(same session)"),
        "",
        f"Spark session start (not in the figures): {spark['session_start_s']:.1f}s",
        f"Spark silver + gold / DuckDB silver + gold time: {spark['seconds'] / duck_s:.1f}x",
        "seconds by table: DuckDB "
        + bench_files._fmt({**silver["seconds_by_table"], **gold["seconds_by_table"]})
        + "; Spark "
        + bench_files._fmt(spark["seconds_by_table"]),
        f"rows out (both engines): {spark['out']}",
        "Spark bytes (MiB) read from files / shuffled / written: "
        + "; ".join(
            f"{name} {b['read'] / 2**20:,.0f} / {b['shuffled'] / 2**20:,.0f} / "
            f"{b['written'] / 2**20:,.0f}"
            for name, b in spark["bytes_by_table"].items()
        ),
        "",
        "machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()),
    ]
    if spark["out"] != duck_counts:
        lines.insert(0, f"MISMATCH: DuckDB {duck_counts} != Spark {spark['out']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="minimum data rows loaded")
    parser.add_argument("--workdir", type=Path, help="default: a temp dir under bench/.work")
    parser.add_argument("--keep", action="store_true", help="keep the work dir at the end")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. '2GB'")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--driver-memory", default="4g", help="Spark driver (JVM) heap")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    parser.add_argument("--phase", choices=("export", "spark"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        if args.phase == "export":
            result = phase_export(args.workdir, args.memory_limit)
        else:
            result = phase_spark(args.workdir, args.memory_limit, args.master, args.driver_memory)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (args.workdir / f"{args.phase}.json").write_text(json.dumps(result, indent=2))
        return 0

    bench_files.WORK_ROOT.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="spark-", dir=bench_files.WORK_ROOT))
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results: dict[str, Any] = {}
        for name in ("generate", "bronze", "silver", "gold"):  # the file benchmark's phases
            results[name] = bench_files.spawn_phase(name, workdir, args.rows, args.memory_limit)
        duck_counts = _duckdb_counts(workdir)
        for name in ("export", "spark"):
            results[name] = spawn(name, workdir, args)
        from importlib.metadata import version

        results["machine"] = common.machine_info(pyspark=version("pyspark"))
        print()
        print(render(results, duck_counts, args))
        if args.json:
            results["generate"].pop("files", None)
            print(json.dumps(results, indent=2))
        return 0 if results["spark"]["out"] == duck_counts else 1
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
