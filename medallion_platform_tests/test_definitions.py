"""The asset graph as a reviewed snapshot, and the UI's product surface on every asset.

A structural change (a key, a dependency, a group, a job, a sensor) shows up as a diff of
``snapshots/asset_graph.json``. Regenerate it on purpose with
``UPDATE_SNAPSHOTS=1 .venv/bin/pytest medallion_platform_tests/test_definitions.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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
            "pool": node.pools and sorted(node.pools),
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
        if key.path[0] == "silver":
            specs = [graph.get_check_spec(c) for c in node.check_keys]
            # Orphans only warn: a child whose parent is quarantined or late stays visible.
            assert specs and all(s.blocking != (s.name == "no_orphans") for s in specs), key


def test_packaged_definitions_load_for_the_workspace() -> None:
    """``workspace.yaml`` and ``dagster job execute -m medallion_platform`` load ``defs``."""
    import medallion_platform

    assert isinstance(medallion_platform.defs, Definitions)
    assert medallion_platform.defs.resolve_job_def("medallion_job") is not None
    workspace = (Path(__file__).parents[1] / "workspace.yaml").read_text()
    assert "module_name: medallion_platform" in workspace
