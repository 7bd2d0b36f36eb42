"""The README's journey, walked as a user does it (real subprocesses on one platform home):
``medallion demo``, ``eval "$(medallion services up)"``, ``dagster job execute``, then
``medallion dev`` with a file dropped into the landing zone (the sensor picks it up), the UI's
GraphQL showing materializations in every layer and evaluated freshness, and a clean stop."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from medallion_platform.devkit.process import free_port, pid_alive
from medallion_platform.settings import PlatformSettings

BIN = Path(sys.executable).parent
QUERY = """{ assetNodes { assetKey { path } groupName
  freshnessStatusInfo { freshnessStatus }
  assetMaterializations(limit: 1) { timestamp } } }"""


def _env(settings: PlatformSettings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_PREFIXES)}
    env |= {"MEDALLION_HOME": str(settings.home), "DAGSTER_HOME": str(settings.dagster_home)}
    return env | (extra or {})


_SERVICE_PREFIXES = ("PAYMENTS_API_", "EVENTS_KAFKA_", "APP_DB_", "SALESFORCE_", "HUBSPOT_")


def _run(args: list[str], env: dict[str, str], timeout: float = 300):
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
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


def test_the_readme_journey_end_to_end(settings: PlatformSettings) -> None:
    started = time.monotonic()
    medallion = str(BIN / "medallion")
    env = _env(settings)
    _run([medallion, "demo", "--scale", "0.05"], env, timeout=400)

    # Next steps from the README: services up, then the main job by Dagster's CLI. The broker
    # restarted with the same log, so the committed positions are valid (no PositionPastEnd).
    up = _run([medallion, "services", "up", "--events", "500", "--charges", "200"], env)
    try:
        job = _run(
            [str(BIN / "dagster"), "job", "execute", "-m", "medallion_platform", "-j",
             "medallion_job"],
            env | _exports(up.stdout),
            timeout=400,
        )  # fmt: skip
        assert "RUN_SUCCESS" in job.stdout + job.stderr
        assert "PositionPastEnd" not in job.stdout + job.stderr
    finally:
        _run([medallion, "services", "down"], env)

    # medallion dev: the UI, the daemon (sensors, freshness) and the services.
    port = free_port()
    dev = subprocess.Popen(
        [medallion, "dev", "--port", str(port), "--events", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        nodes = _wait_for_ui(port, dev)
        before = _latest(nodes, "bronze/files_products")
        drop = settings.landing_dir / "products" / "catalog_journey.csv"
        drop.write_text(
            "sku,name,category,brand,unit_price,currency,weight_kg,active,updated_at\n"
            "SKU-009999,Journey Test Tent,tents,Acme,99.00,USD,2.50,true,2026-11-20T10:00:00\n"
        )
        deadline = time.monotonic() + 150
        while _latest(nodes, "bronze/files_products") <= before:
            assert time.monotonic() < deadline, "the landing-zone sensor did not pick the file up"
            time.sleep(2)
            nodes = _graphql(port)
        by_group: dict[str, list[dict]] = {}
        for node in nodes:
            by_group.setdefault(node["groupName"], []).append(node)
        for group in ("bronze", "silver", "gold", "ml", "reports", "reverse_etl"):
            assert any(n["assetMaterializations"] for n in by_group[group]), group
        fresh = [n["freshnessStatusInfo"]["freshnessStatus"] for n in nodes
                 if n["freshnessStatusInfo"]]  # fmt: skip
        assert fresh and "UNKNOWN" not in fresh, fresh
        services = [json.loads(p.read_text())["pid"] for p in settings.home.glob("services/*.json")]
        assert services
        # A clean stop: within 5 s of SIGTERM, nothing left behind.
        stop = time.monotonic()
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=10)
        took = time.monotonic() - stop
        assert took < 5, f"medallion dev took {took:.1f}s to stop"
        assert not [pid for pid in services if pid_alive(pid)]
    finally:
        if dev.poll() is None:
            dev.kill()
        subprocess.run([medallion, "services", "down"], env=env, capture_output=True)
    print(f"journey: {time.monotonic() - started:.0f}s")


def _latest(nodes: list[dict], key: str) -> float:
    for node in nodes:
        if "/".join(node["assetKey"]["path"]) == key and node["assetMaterializations"]:
            return float(node["assetMaterializations"][0]["timestamp"])
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
