"""The ``medallion`` command: demo, status, lineage, dev, init."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from medallion_platform.settings import PlatformSettings


def _demo(args: argparse.Namespace) -> int:
    from medallion_platform.devkit import services
    from medallion_platform.devkit.demo.run import evaluate_freshness, run_syncs, seed
    from medallion_platform.status import format_status, read_status

    settings = PlatformSettings.from_env()
    started = time.monotonic()
    manifest = seed(settings, scale=args.scale, seed=args.seed)
    print(
        f"Dropped {len(manifest.files)} demo files into {settings.landing_dir} "
        f"(scale {args.scale:g}, seed {args.seed}: {manifest.products:,} products, "
        f"{manifest.ad_spend_rows:,} ad-spend rows, {manifest.malformed_rows} malformed rows)."
    )
    if args.no_run:
        print("Not running the pipeline (--no-run).")
        return 0
    events = max(2_000, int(100_000 * args.scale))
    customers = max(100, int(2_000 * args.scale))
    infos = services.up(
        settings,
        charges=max(200, int(5_000 * args.scale)),
        events=events,
        customers=customers,
        seed=args.seed,
    )
    for info in infos:
        note = f" ({info.note})" if info.note else ""
        print(f"Started {info.name} at {info.base_url}{note}, stopped when the demo ends.")
    print(f"The demo storefront published {events:,} clickstream events (plus redeliveries).")
    logging.getLogger("dagster").setLevel(logging.WARNING)
    for info in infos:
        os.environ.update(info.env)
    try:
        ok = _demo_runs(settings, customers=customers, seed=args.seed)
        status = read_status(settings)  # while the broker is up: its lag is shown too
        synced = run_syncs(settings) if ok else []
    finally:
        services.down(settings)
    freshness = evaluate_freshness(settings)
    print()
    print(format_status(status))
    print()
    if synced:
        print(
            "Reverse ETL (reverse_etl_job) to the local Salesforce, HubSpot and Zendesk emulators:"
        )
        for line in synced:
            print(f"  {line}")
        print()
    if freshness:
        states = ", ".join(f"{n} {state}" for state, n in sorted(freshness.items()))
        print(f"Freshness policies, evaluated as the UI shows them: {states}.")
        print()
    report = settings.reports_dir / "kpi_report.html"
    if settings.warehouse_path.exists():
        from medallion_platform.reports.kpi_report import format_headline, headline_kpis
        from medallion_platform.warehouse import Warehouse

        with Warehouse(settings.warehouse_path, read_only=True).connect() as conn:
            print(format_headline(headline_kpis(conn)))
        print()
    print(f"{'Finished' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s.")
    print("Where to look:")
    print(f"  medallion status            # this summary again (MEDALLION_HOME={settings.home})")
    print("  medallion dev               # the Dagster UI on http://127.0.0.1:3000, services up")
    print(f'  or by hand: eval "$(medallion services up)"; DAGSTER_HOME={settings.dagster_home} \\')
    print("              dg dev   # from the repository; dg launch --job medallion_job: a run")
    print(f"  duckdb.connect({str(settings.warehouse_path)!r}, read_only=True)  # notebooks, BI")
    print(f"  {settings.exports_dir / 'gold'}/*.parquet  # gold for BI tools")
    if report.exists():
        print(f"  file://{report}  # the KPI report (open in a browser)")
    print("  medallion lineage gold/customer_360 [--columns]  # where a table comes from")
    return 0 if ok else 1


def _demo_runs(settings: PlatformSettings, *, customers: int, seed: int) -> bool:
    """The app database's snapshot first, then storefront activity on it, then the main job:
    so the first demo already captures inserts, updates, deletes and key changes (bronze ops
    c, u, d beside the snapshot's r) and silver keeps several versions of some customers."""
    from medallion_platform.definitions import MAIN_JOB
    from medallion_platform.devkit.demo.run import (
        apply_app_changes,
        cdc_bronze_keys,
        demo_definitions,
        run_job,
    )

    defs = demo_definitions(settings)
    print("Capturing the app database (CDC): its snapshot first …")
    captured = run_job(settings, MAIN_JOB, asset_selection=cdc_bronze_keys(), defs=defs)
    changes = apply_app_changes(transactions=max(50, customers // 40), renumbered=3, seed=seed + 1)
    print(f"… then the storefront kept going: {changes}.")
    print(
        "Running medallion_job (files + payments API + clickstream + app database CDC → "
        "bronze → silver → gold → ML → report) through Dagster …"
    )
    return run_job(settings, MAIN_JOB, defs=defs) and captured


def _status(args: argparse.Namespace) -> int:
    from medallion_platform.status import format_status, read_status

    try:
        status = read_status(PlatformSettings.from_env())
    except FileNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(status.model_dump_json(indent=2) if args.json else format_status(status))
    return 0


def _sync(args: argparse.Namespace) -> int:
    from medallion_platform.config import platform_config
    from medallion_platform.reverse_etl.destinations.base import DestinationError
    from medallion_platform.reverse_etl.engine import SyncError, run_sync

    syncs = platform_config().syncs
    names = [s.name for s in syncs] if args.name == "all" else [args.name]
    code = 0
    for name in names:
        try:
            result = run_sync(
                name, PlatformSettings.from_env(), args.dry_run, full=args.full, syncs=syncs
            )
        except KeyError as exc:
            print(f"medallion sync: {exc.args[0]}", file=sys.stderr)
            return 2
        except (SyncError, DestinationError, ValueError) as exc:
            print(f"medallion sync {name}: {exc}", file=sys.stderr)
            code = 1
            continue
        print(result.summary())
        for failure in result.failures:
            print(f"  failed {failure.identity} ({failure.action}): {failure.error}")
        code = code or (1 if result.failed and not args.dry_run else 0)
    return code


def _lineage(args: argparse.Namespace) -> int:
    from medallion_platform.config import platform_config
    from medallion_platform.definitions import build_definitions
    from medallion_platform.lineage.columns import (
        ColumnLineageError,
        MissingTablesError,
        read_schemas,
    )
    from medallion_platform.lineage.graph import (
        UnknownAssetError,
        build_report,
        format_report,
        key_string,
        resolve_asset_key,
    )
    from medallion_platform.warehouse import Warehouse
    from medallion_platform.warehouse.warehouse import WarehouseBusyError

    settings = PlatformSettings.from_env()
    defs = build_definitions(settings)
    try:
        key = resolve_asset_key(defs.resolve_asset_graph(), args.asset)
    except UnknownAssetError as exc:
        print(f"medallion lineage: {exc}", file=sys.stderr)
        return 2
    sections = {"upstream": not args.downstream_only, "downstream": not args.upstream_only}
    if not args.columns:
        report = build_report(defs, key, **sections)
        print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
        return 0

    models = platform_config().sql_models
    if not any([m.layer, m.name] == list(key.path) for m in models):
        print(
            f"medallion lineage: {key_string(key)} is not a SQL model, so --columns has nothing "
            "to show (column lineage covers the models of config/*_models.yaml).",
            file=sys.stderr,
        )
        return 1
    path = settings.warehouse_path
    if not path.exists():
        print(
            f"medallion lineage: no warehouse at {path}: materialize {key_string(key)} and what "
            "it reads first (`medallion demo`, or a run of medallion_job), or set "
            "MEDALLION_HOME to the platform home you meant.",
            file=sys.stderr,
        )
        return 1
    try:
        with Warehouse(path, read_only=True, lock_timeout_s=60).connect() as conn:
            report = build_report(
                defs,
                key,
                **sections,
                models=models,
                read_schemas=lambda model: read_schemas(conn, model.depends_on),
            )
    except MissingTablesError as exc:
        keys = ", ".join(t.replace(".", "/") for t in exc.tables)
        print(
            f"medallion lineage: {keys} not in the warehouse {path} yet: materialize {keys} "
            "first (a run of medallion_job builds everything).",
            file=sys.stderr,
        )
        return 1
    except (ColumnLineageError, WarehouseBusyError) as exc:
        print(f"medallion lineage: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


def _init(_args: argparse.Namespace) -> int:
    from medallion_platform.instance import ensure_instance
    from medallion_platform.warehouse import Warehouse

    settings = PlatformSettings.from_env()
    home = ensure_instance(settings)
    Warehouse(settings.warehouse_path).ensure_layout()
    print(json.dumps({"home": str(settings.home), "dagster_home": str(home)}))
    return 0


def dev_command(port: int) -> list[str]:
    """``dagster dev`` from beside this interpreter: a venv's bin/ need not be on PATH."""
    beside = Path(sys.executable).parent / "dagster"
    dagster = str(beside) if beside.exists() else "dagster"
    return [dagster, "dev", "-m", "medallion_platform", "-p", str(port)]


def _dev(args: argparse.Namespace) -> int:
    from medallion_platform.devkit import services
    from medallion_platform.devkit.process import stop_session
    from medallion_platform.instance import use_instance

    settings = PlatformSettings.from_env()
    use_instance(settings)
    infos = services.up(settings, events=args.events)
    for info in infos:
        os.environ.update(info.env)
        print(f"{info.name} at {info.base_url}", flush=True)
    command = dev_command(args.port)
    print(f"DAGSTER_HOME={os.environ['DAGSTER_HOME']} {' '.join(command)}", flush=True)
    # Its own session: Ctrl-C and SIGTERM come to us, and we stop the whole group (dagster dev
    # leaves its code server behind otherwise), then the services, within a few seconds.
    process = subprocess.Popen(command, start_new_session=True)
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop and process.poll() is None:
            time.sleep(0.1)
    finally:
        # Dagster and the services at once: the stop takes as long as the slower of the two
        # (about 2 s), not their sum; a run cut short meanwhile is killed with its session.
        with ThreadPoolExecutor(max_workers=1) as pool:
            stopped = pool.submit(services.down, settings)
            stop_session(process, grace_s=2.0)
            stopped.result()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if stop else int(process.returncode or 0)


def _services(args: argparse.Namespace) -> int:
    from medallion_platform.devkit import services

    settings = PlatformSettings.from_env()
    if args.action == "up":
        infos = services.up(settings, charges=args.charges, events=args.events)
        print(services.export_lines(infos))
    elif args.action == "down":
        stopped = services.down(settings)
        print("stopped: " + (", ".join(stopped) or "nothing was running"), file=sys.stderr)
    elif args.action == "env":
        print(services.export_lines([i for i in services.status(settings) if i.running()]))
    else:
        for info in services.status(settings):
            state = "running" if info.running() else "stopped"
            print(f"{info.name:<14} {state:<8} pid {info.pid:<8} {info.base_url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medallion",
        description="Medallion data platform on Dagster and DuckDB. State lives under "
        "MEDALLION_HOME (default ./.medallion).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="Drop seeded demo files and run the main job.")
    demo.add_argument("--scale", type=float, default=1.0, help="Data volume multiplier.")
    demo.add_argument("--seed", type=int, default=42, help="Random seed (same seed, same data).")
    demo.add_argument(
        "--no-run", action="store_true", help="Only drop the files (and create the instance)."
    )
    demo.set_defaults(func=_demo)

    status = sub.add_parser("status", help="Tables, positions, files and quarantine (read-only).")
    status.add_argument("--json", action="store_true", help="Machine-readable output.")
    status.set_defaults(func=_status)

    lineage = sub.add_parser(
        "lineage",
        help="Where an asset comes from (back to the source systems), what reads it, and "
        "with --columns where each column comes from.",
    )
    lineage.add_argument("asset", help="Asset key, slash separated: gold/customer_360.")
    lineage.add_argument(
        "--columns",
        action="store_true",
        help="Column lineage of a SQL model through every SQL model it reads (needs its inputs "
        "materialized; the warehouse is opened read-only).",
    )
    direction = lineage.add_mutually_exclusive_group()
    direction.add_argument("--upstream-only", action="store_true", help="Only where it comes from.")
    direction.add_argument("--downstream-only", action="store_true", help="Only what reads it.")
    lineage.add_argument("--json", action="store_true", help="Machine-readable output.")
    lineage.set_defaults(func=_lineage)

    sync = sub.add_parser(
        "sync",
        help="Run a reverse-ETL sync (config/syncs.yaml): send what changed since the last one.",
    )
    sync.add_argument("name", help="The sync's name, or 'all'.")
    sync.add_argument(
        "--dry-run", action="store_true", help="Report the planned adds/changes/removals only."
    )
    sync.add_argument(
        "--full",
        action="store_true",
        help="Forget what was synced and send every row again (after the destination was "
        "emptied or restored; upserts by identity make it safe).",
    )
    sync.set_defaults(func=_sync)

    init = sub.add_parser("init", help="Create the platform home, warehouse and Dagster instance.")
    init.set_defaults(func=_init)

    services_cmd = sub.add_parser(
        "services",
        help="Local demo services (payments API, Kafka broker): up prints the env to export.",
    )
    services_cmd.add_argument("action", choices=["up", "down", "status", "env"])
    services_cmd.add_argument("--charges", type=int, default=5_000, help="Charges to serve.")
    services_cmd.add_argument(
        "--events",
        type=int,
        default=100_000,
        help="New clickstream events to publish when the broker starts, after those of earlier "
        "runs (0: start it with none new).",
    )
    services_cmd.set_defaults(func=_services)

    dev = sub.add_parser("dev", help="Start the Dagster UI and daemon on this platform home.")
    dev.add_argument("--port", type=int, default=3000)
    dev.add_argument(
        "--events",
        type=int,
        default=100_000,
        help="New clickstream events to publish if the broker starts (0: none).",
    )
    dev.set_defaults(func=_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
