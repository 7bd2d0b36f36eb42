"""The README's journey, walked as a user does it (real subprocesses on one platform home):
``medallion demo`` (and what its first run promises: every layer with rows, CDC changes, the
syncs and freshness on the instance), ``eval "$(medallion services up)"`` and ``dg launch``,
a second ``medallion demo`` on the same home, then ``medallion dev`` with a file dropped into
the landing zone (the sensor picks it up), the UI's GraphQL showing materializations in every
layer and evaluated freshness, and a clean stop that leaves the home ready for the next
journey: no process, port or warehouse lock left behind."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import duckdb
import pytest

from medallion_platform.devkit.process import free_port, pid_alive
from medallion_platform.settings import PlatformSettings

# Several minutes: `make journey` runs it, and CI after `make test` (keeps `make test` short).
pytestmark = pytest.mark.journey

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
QUERY = """{ assetNodes { assetKey { path } groupName
  freshnessStatusInfo { freshnessStatus }
  assetMaterializations(limit: 1) { timestamp } } }"""
_SERVICE_PREFIXES = ("PAYMENTS_API_", "EVENTS_", "APP_DB_", "SALESFORCE_", "HUBSPOT_", "ZENDESK_")


def _env(settings: PlatformSettings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_PREFIXES)}
    env |= {"MEDALLION_HOME": str(settings.home), "DAGSTER_HOME": str(settings.dagster_home)}
    return env | (extra or {})


def _run(args: list[str], env: dict[str, str], timeout: float = 300):
    result = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _exports(text: str) -> dict[str, str]:
    """What ``eval "$(medallion services up)"`` would export."""
    found = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = json.loads(value) if value.startswith('"') else shlex.split(value)[0]
    return found


def _graphql(port: int) -> list[dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())["data"]["assetNodes"]


def _rows(settings: PlatformSettings, *tables: str) -> dict[str, int]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


GROWING = ("bronze.events", "bronze.app_db_customers")


def test_the_readme_journey_end_to_end(settings: PlatformSettings) -> None:
    took: dict[str, float] = {}
    lap = time.monotonic()

    def phase(name: str) -> None:
        nonlocal lap
        took[name], lap = time.monotonic() - lap, time.monotonic()

    medallion = str(BIN / "medallion")
    env = _env(settings)
    demo = _run([medallion, "demo", "--scale", "0.05"], env, timeout=400)
    _check_the_first_demo(settings, demo.stdout, env)
    first = _rows(settings, *GROWING)
    phase("demo")

    # Next steps from the README: services up, then the main job by `dg launch`. The broker
    # restarted with the same log, so the committed positions are valid (no PositionPastEnd).
    up = _run([medallion, "services", "up", "--events", "500", "--charges", "200"], env)
    try:
        job = _run([str(BIN / "dg"), "launch", "--job", "medallion_job"],
                   env | _exports(up.stdout), timeout=400)  # fmt: skip
        out = job.stdout + job.stderr
        assert "RUN_SUCCESS" in out and "PositionPastEnd" not in out
        assert "SupersessionWarning" not in out  # what `dagster asset materialize` prints
    finally:
        _run([medallion, "services", "down"], env)
    launched = _rows(settings, *GROWING)
    assert launched["bronze.events"] >= first["bronze.events"] + 500
    phase("dg launch")

    # The demo again on the same home: the broker gets its log back and new events after
    # it, the app database a new workload; both are captured, nothing waits.
    again = _run([medallion, "demo", "--scale", "0.05"], env, timeout=400)
    assert "events (kafka clickstream): lag 0" in again.stdout, again.stdout[-3000:]
    assert "PositionPastEnd" not in again.stdout + again.stderr
    second = _rows(settings, *GROWING)
    assert second["bronze.events"] >= launched["bronze.events"] + 5_000
    assert second["bronze.app_db_customers"] > launched["bronze.app_db_customers"]
    phase("second demo")

    _dev_picks_up_a_dropped_file_and_stops_clean(settings, env)
    phase("dev")
    print(
        f"journey: {sum(took.values()):.0f}s ("
        + ", ".join(f"{k} {v:.0f}s" for k, v in took.items())
        + ")"
    )


def _check_the_first_demo(settings: PlatformSettings, out: str, env: dict[str, str]) -> None:
    """What the first `make demo` promises: rows in every layer, quarantined rows, rejected
    files with reasons, committed positions, the clickstream read to its end, the instance
    it made, CDC changes beside the snapshot, and the syncs and freshness in Dagster."""
    assert "bronze" in out and "gold" in out and "Quarantined rows" in out
    assert "medallion dev" in out and "dg dev" in out  # where to look next
    # The demo's clickstream was read to the end: nothing waits on the broker.
    assert "events (kafka clickstream): lag 0" in out

    document = json.loads(_run([str(BIN / "medallion"), "status", "--json"], env).stdout)
    by_layer: dict[str, list[int]] = {}
    for table in document["tables"]:
        by_layer.setdefault(table["layer"], []).append(table["rows"])
    for layer in ("bronze", "silver", "gold"):
        assert by_layer.get(layer) and all(rows > 0 for rows in by_layer[layer]), layer
    assert sum(by_layer["quarantine"]) > 0  # the demo's malformed rows were quarantined
    assert {i["status"] for i in document["file_issues"]} == {"rejected", "duplicate"}
    assert all(i["reason"] for i in document["file_issues"])
    assert document["positions"], "committed source positions are listed"
    (events,) = document["streams"]
    assert [p["partition"] for p in events["partitions"]] == ["0", "1", "2"]
    assert all(p["committed"] for p in events["partitions"])
    # The instance the demo created turns telemetry off and watches for dead runs (no pool).
    instance_yaml = (settings.dagster_home / "dagster.yaml").read_text()
    assert "enabled: false" in instance_yaml and "class: LocalRunLauncher" in instance_yaml
    assert "pools" not in instance_yaml
    _check_first_demo_captured_changes(settings)
    _check_syncs_and_freshness_are_on_the_instance(settings, out)


def _check_syncs_and_freshness_are_on_the_instance(settings: PlatformSettings, out: str) -> None:
    """The syncs ran as Dagster materializations (with their figures), and every freshness
    policy was evaluated: the UI shows them, not "Never materialized" / "Not evaluated"."""
    from dagster import AssetKey, DagsterInstance

    from medallion_platform.config import platform_config

    assert "Freshness policies, evaluated" in out
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        for spec in platform_config().syncs:
            event = instance.get_latest_materialization_event(AssetKey(["reverse_etl", spec.name]))
            assert event is not None, spec.name
            metadata = event.asset_materialization.metadata
            assert metadata["rows_added"].value > 0 and metadata["rows_failed"].value == 0
        # A materialization keeps the columns' descriptions (the UI shows its schema).
        for key, column in (("gold/customer_360", "lifetime_value"), ("silver/orders", "_source")):
            event = instance.get_latest_materialization_event(AssetKey(key.split("/")))
            assert event is not None, key
            schema = event.asset_materialization.metadata["dagster/column_schema"].schema
            assert next(c for c in schema.columns if c.name == column).description, key
        keys = [AssetKey(["reverse_etl", s.name]) for s in platform_config().syncs]
        keys += [AssetKey(["gold", "customer_360"]), AssetKey(["ml", "churn_scores"])]
        states = instance.get_freshness_state_records(keys)
    assert {k: r.freshness_state.value for k, r in states.items()} == dict.fromkeys(keys, "PASS")


def _check_first_demo_captured_changes(settings: PlatformSettings) -> None:
    """The first demo captures the app database's snapshot, then changes made after it: the
    change logs hold inserts, updates and deletes (and a key change), and silver history has
    several versions for some customers."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        ops = {
            table: {
                op for (op,) in conn.execute(f"SELECT DISTINCT op FROM bronze.{table}").fetchall()
            }
            for table in ("app_db_customers", "app_db_orders", "app_db_order_items")
        }
        history, current = conn.execute(
            "SELECT (SELECT count(*) FROM silver.customers_history),"
            " (SELECT count(*) FROM silver.customers)"
        ).fetchone()
    assert {"r", "c", "u"} <= ops["app_db_customers"], ops
    assert {"r", "c", "u", "d"} <= ops["app_db_orders"] | ops["app_db_order_items"], ops
    assert "d" in ops["app_db_order_items"], ops  # the renumbered lines' old keys, at least
    assert history > current > 0


def _dev_picks_up_a_dropped_file_and_stops_clean(
    settings: PlatformSettings, env: dict[str, str]
) -> None:
    """`medallion dev`: the UI, the daemon (sensors, freshness) and the services. A catalog
    file dropped while it runs is loaded by the landing-zone sensor; the UI shows every layer
    materialized and freshness evaluated; SIGTERM stops everything within 5 s."""
    medallion = str(BIN / "medallion")
    port = free_port()
    dev = subprocess.Popen(
        [medallion, "dev", "--port", str(port), "--events", "0"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Dropped as soon as dev runs, complete (its time an hour back, as a finished upload
        # moved in keeps it): the daemon's first sensor tick takes it, no settle wait.
        dropped = time.time()
        sku = f"SKU-9{int(dropped) % 100_000:05d}"  # a new product each journey
        drop = settings.landing_dir / "products" / f"catalog_journey_{int(dropped)}.csv"
        drop.write_text(
            "sku,name,category,brand,unit_price,currency,weight_kg,active,updated_at\n"
            f"{sku},Journey Test Tent,tents,Acme,99.00,USD,2.50,true,2026-11-20T10:00:00\n"
        )
        os.utime(drop, (dropped - 3600, dropped - 3600))
        nodes = _wait_for_ui(port, dev)
        ui = time.time() - dropped
        deadline = time.monotonic() + 150
        while _latest(nodes, "bronze/files_products") <= dropped:
            assert time.monotonic() < deadline, "the landing-zone sensor did not pick the file up"
            time.sleep(2)
            nodes = _graphql(port)
        loaded = time.time() - dropped
        by_group: dict[str, list[dict]] = {}
        for node in nodes:
            by_group.setdefault(node["groupName"], []).append(node)
        for group in ("bronze", "silver", "gold", "ml", "reports", "reverse_etl"):
            assert any(n["assetMaterializations"] for n in by_group[group]), group
        fresh = [n["freshnessStatusInfo"]["freshnessStatus"] for n in nodes
                 if n["freshnessStatusInfo"]]  # fmt: skip
        assert fresh and "UNKNOWN" not in fresh, fresh
        services = [json.loads(p.read_text()) for p in settings.home.glob("services/*.json")]
        assert services
        processes = [dev.pid, *_descendants(dev.pid), *(s["pid"] for s in services)]
        ports = [port, *(_port(s["base_url"]) for s in services)]
        # A clean stop: within 5 s of SIGTERM, nothing left behind.
        stop = time.monotonic()
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=10)
        took = time.monotonic() - stop
        assert took < 5, f"medallion dev took {took:.1f}s to stop"
        print(
            f"dev: UI after {ui:.0f}s, the file loaded after {loaded:.0f}s, stopped in {took:.1f}s"
        )
    finally:
        if dev.poll() is None:
            dev.kill()
        subprocess.run([medallion, "services", "down"], env=env, capture_output=True)
    _check_nothing_left_behind(settings, processes, ports)


def _check_nothing_left_behind(
    settings: PlatformSettings, processes: list[int], ports: list[int]
) -> None:
    """The home is ready for the next journey: every process of this one ended (UI, daemon,
    code servers, run workers, services), its ports are free, nobody holds the warehouse."""
    from medallion_platform.warehouse.writer_lock import Holder, writer_lock

    deadline = time.monotonic() + 5  # a run worker's last second
    while alive := [pid for pid in processes if pid_alive(pid)]:
        assert time.monotonic() < deadline, f"still running after the stop: {alive}"
        time.sleep(0.2)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As a restarted server binds (a closed connection's TIME_WAIT is no obstacle):
            # OSError only if something still listens there.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
    assert not list(settings.home.glob("services/*.json"))
    with writer_lock(settings.warehouse_path, Holder.this_process("journey"), timeout_s=5):
        pass


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (by parent pid, from /proc): dagster dev's webserver,
    daemon, code servers and run workers, and the services."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _port(address: str) -> int:
    """The port of a service's address (a URL, or Kafka's host:port)."""
    parsed = urllib.parse.urlsplit(address if "//" in address else f"//{address}")
    assert parsed.port, address
    return parsed.port


def _latest(nodes: list[dict], key: str) -> float:
    """The time of the asset's latest materialization, in seconds (GraphQL gives ms)."""
    for node in nodes:
        if "/".join(node["assetKey"]["path"]) == key and node["assetMaterializations"]:
            return float(node["assetMaterializations"][0]["timestamp"]) / 1000
    return 0.0


def _wait_for_ui(port: int, dev: subprocess.Popen) -> list[dict]:
    deadline = time.monotonic() + 180
    while True:
        assert dev.poll() is None, "medallion dev exited"
        try:
            return _graphql(port)
        except (OSError, KeyError, TypeError):
            assert time.monotonic() < deadline, "the UI did not answer"
            time.sleep(1)
