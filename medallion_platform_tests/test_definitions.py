"""The asset graph as a reviewed snapshot, and the UI's product surface on every asset.

A structural change (a key, a dependency, a group, a job, a sensor) shows up as a diff of
``snapshots/asset_graph.json``. Regenerate it on purpose with
``UPDATE_SNAPSHOTS=1 .venv/bin/pytest medallion_platform_tests/test_definitions.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import Definitions

from medallion_platform.definitions import build_definitions
from medallion_platform.settings import PlatformSettings

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def _graph(defs: Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(d.to_user_string() for d in node.parent_keys),
            "kinds": sorted(node.kinds),
            "checks": sorted(c.name for c in node.check_keys),
            "pool": sorted(node.pools or ()) or None,
            "freshness": node.freshness_policy is not None,
        }
    jobs = {}
    for job in defs.resolve_all_job_defs():
        if job.name.startswith("__"):
            continue
        selected = job.asset_layer.selected_asset_keys
        jobs[job.name] = sorted(k.to_user_string() for k in selected)
    sensors = {
        s.name: {
            # An automation-condition sensor targets assets, not a job.
            "job": s.job_name if s.has_jobs else None,
            "default_status": s.default_status.value,
        }
        for s in defs.sensors or []
    }
    return {"assets": assets, "jobs": jobs, "sensors": sensors}


def test_asset_graph_matches_snapshot(tmp_path: Path) -> None:
    """Keys, deps, groups, checks, jobs and sensors are exactly what was reviewed."""
    current = _graph(build_definitions(PlatformSettings(home=tmp_path)))
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_asset_is_described_owned_and_kinded(tmp_path: Path) -> None:
    """The UI is a product surface: no asset without description, owner, kind, layer tag."""
    graph = build_definitions(PlatformSettings(home=tmp_path)).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 40, name
        assert node.owners, name
        assert node.kinds, name
        if key.path[0] not in ("landing", "api"):  # external sources; every other one a table
            assert "duckdb" in node.kinds, name
        assert node.tags.get("layer") == key.path[0], name
        assert node.group_name == key.path[0], name


def test_gold_assets_have_freshness_policies_and_silver_checks_block(tmp_path: Path) -> None:
    graph = build_definitions(PlatformSettings(home=tmp_path)).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.path[0] == "gold":
            assert node.freshness_policy is not None, key
        if key.path[0] == "silver":  # contract checks block; warnings (drift) do not
            specs = [graph.get_check_spec(c) for c in node.check_keys]
            # Warnings only: drift, and orphans (a child whose parent is quarantined or late
            # stays visible).
            warnings = {"schema_drift", "no_orphans"}
            assert specs and all(s.blocking for s in specs if s.name not in warnings), key
            assert not any(s.blocking for s in specs if s.name in warnings), key


def test_every_silver_and_gold_column_is_described_before_any_run(tmp_path: Path) -> None:
    """The catalog shows column descriptions from the definitions alone: silver from the
    contracts, gold declared by the model or inherited through column lineage; and each gold
    asset points at `medallion lineage`."""
    graph = build_definitions(PlatformSettings(home=tmp_path)).resolve_asset_graph()
    described = {}
    for key in graph.get_all_asset_keys():
        if key.path[0] not in ("silver", "gold", "quarantine"):
            continue
        name = key.to_user_string()
        schema = graph.get(key).metadata.get("dagster/column_schema")
        assert schema is not None, name
        schema = getattr(schema, "schema", schema)  # TableSchemaMetadataValue or TableSchema
        columns = {c.name: c.description for c in schema.columns}
        assert columns and all(text and text.strip() for text in columns.values()), name
        described[name] = columns
        if key.path[0] == "gold":
            assert f"medallion lineage {name} --columns" in graph.get(key).description, name
    # A contract's own words, inherited by the gold column the SKU passes through.
    assert described["silver/products"]["sku"] == "Stock-keeping unit"
    assert described["gold/dim_product"]["sku"] == "Stock-keeping unit"
    # A declared gold column, and one the lineage says is computed.
    assert described["gold/customer_360"]["lifetime_value"].startswith("Gross revenue minus")
    assert described["gold/fct_order_items"]["line_total"].startswith("Computed from")
    assert described["silver/customers_history"]["valid_from"].startswith("When this version")


def test_a_model_describing_a_column_it_does_not_produce_is_refused(tmp_path: Path) -> None:
    from medallion_platform.config import platform_config
    from medallion_platform.defs.columns import model_descriptions

    config = platform_config()
    models = [
        m.model_copy(update={"columns": {"lifetime_valeu": "typo"}})
        if m.name == "customer_360"
        else m
        for m in config.sql_models
    ]
    with pytest.raises(
        ValueError, match=r"gold\.customer_360: columns: lifetime_valeu not produced"
    ):
        model_descriptions(models, config.contracts)


def test_packaged_definitions_load_for_the_workspace() -> None:
    """``workspace.yaml`` and ``dagster job execute -m medallion_platform`` find the code
    location the way Dagster does (module members), built lazily."""
    from dagster._core.workspace.autodiscovery import loadable_targets_from_python_module

    import medallion_platform

    for module in ("medallion_platform", "medallion_platform.definitions"):
        (target,) = loadable_targets_from_python_module(module, working_directory=None)
        loaded = target.target_definition()
        assert isinstance(loaded, Definitions)
        assert loaded.resolve_job_def("medallion_job") is not None
    assert "code_location" in dir(medallion_platform)
    workspace = (Path(__file__).parents[1] / "workspace.yaml").read_text()
    assert "module_name: medallion_platform.definitions" in workspace


CORE_PACKAGES = (
    "medallion_platform.connectors.cdc.pgoutput",
    "medallion_platform.connectors.files",
    "medallion_platform.connectors.rest",
    "medallion_platform.connectors.streams",
    "medallion_platform.connectors.cdc",
    "medallion_platform.contracts",
    "medallion_platform.warehouse",
    "medallion_platform.reverse_etl.engine",
    "medallion_platform.gold",
    "medallion_platform.lineage.columns",
)


@pytest.mark.parametrize("module", CORE_PACKAGES)
def test_plain_python_cores_import_no_dagster(module: str) -> None:
    """Each core imported in a fresh interpreter leaves ``dagster`` out of ``sys.modules``
    (the package root builds nothing; the Dagster layer is ``defs/`` and ``definitions``)."""
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", f"{module} imports Dagster: {out[:300]}"


# What ships as the product: everything but the dev harness (``devkit``) and the CLI, whose
# dev commands (demo, services, dev) import the harness inside themselves.
PRODUCT_PACKAGES = (
    "medallion_platform.connectors",
    "medallion_platform.contracts",
    "medallion_platform.warehouse",
    "medallion_platform.gold",
    "medallion_platform.defs",
    "medallion_platform.definitions",
    "medallion_platform.reverse_etl",
    "medallion_platform.ml",
    "medallion_platform.reports",
    "medallion_platform.lineage",
    "medallion_platform.config",
    "medallion_platform.status",
)

_IMPORT_ALL_CHECK_DEVKIT = """
import importlib, pkgutil, sys

def harness():
    return sorted(m for m in sys.modules if m.startswith("medallion_platform.devkit"))

for name in sys.argv[1:]:
    module = importlib.import_module(name)
    found = [name]
    if hasattr(module, "__path__"):
        found += [m.name for m in pkgutil.walk_packages(module.__path__, name + ".")]
    for each in found:
        importlib.import_module(each)
        if harness():
            print(f"{each} imports {harness()}")
            sys.exit(0)
from medallion_platform.definitions import build_definitions

build_definitions()  # what only runs when Dagster loads the code location
print(f"building the definitions imports {harness()}" if harness() else "clean")
"""


def test_the_product_never_imports_the_dev_harness(tmp_path: Path) -> None:
    """Every module of the product, imported one by one in a fresh interpreter, and the code
    location built there: ``medallion_platform.devkit`` stays out of ``sys.modules``, so the
    emulators, demo generators and local services never reach a production deployment."""
    env = {**os.environ, "MEDALLION_HOME": str(tmp_path / "home")}
    env.pop("MEDALLION_CONFIG_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL_CHECK_DEVKIT, *PRODUCT_PACKAGES],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    assert out.strip().splitlines()[-1] == "clean", out[-2000:]
