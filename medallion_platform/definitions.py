"""The code location: every asset, check, sensor and job, built from the declared config.

``build_definitions`` takes the platform home and the configuration as arguments so tests can
build the same graph on a temporary home; ``defs`` is the packaged one for ``MEDALLION_HOME``.
"""

from __future__ import annotations

from dagster import (
    AssetKey,
    AssetSelection,
    Definitions,
    define_asset_job,
    in_process_executor,
)

from medallion_platform.config import PlatformConfig, platform_config
from medallion_platform.defs.files import (
    bronze_key,
    build_bronze_file_asset,
    build_landing_spec,
    build_landing_zone_sensor,
)
from medallion_platform.defs.gold import build_gold_asset, build_gold_key_check, gold_key
from medallion_platform.defs.io_manager import WarehouseIOManager
from medallion_platform.defs.resources import LandingZoneResource, WarehouseResource
from medallion_platform.defs.silver import build_silver_assets, quarantine_key, silver_key
from medallion_platform.settings import PlatformSettings

MAIN_JOB = "medallion_job"


def _downstream_of_feeds(config: PlatformConfig) -> dict[str, list[AssetKey]]:
    """Per feed: its bronze asset and everything built from it (for the sensor's runs)."""
    result = {}
    for feed in config.feeds:
        contract = config.contract(feed.contract)
        keys = [bronze_key(feed), silver_key(contract), quarantine_key(contract)]
        reached = {f"silver.{contract.name}"}
        changed = True
        while changed:  # gold models may read other gold models
            changed = False
            for model in config.gold_models:
                if f"gold.{model.name}" not in reached and reached & set(model.depends_on):
                    reached.add(f"gold.{model.name}")
                    keys.append(gold_key(model))
                    changed = True
        result[feed.name] = keys
    return result


def build_definitions(
    settings: PlatformSettings | None = None, config: PlatformConfig | None = None
) -> Definitions:
    settings = settings or PlatformSettings.from_env()
    config = config or platform_config()
    feeds_by_contract = {feed.contract: feed for feed in config.feeds}

    assets: list = [build_landing_spec(feed) for feed in config.feeds]
    assets += [build_bronze_file_asset(feed) for feed in config.feeds]
    assets += [
        build_silver_assets(c, bronze_key(feeds_by_contract[c.name]))
        for c in config.contracts
        if c.name in feeds_by_contract
    ]
    assets += [build_gold_asset(model) for model in config.gold_models]
    checks = [build_gold_key_check(model) for model in config.gold_models]

    jobs = [
        define_asset_job(
            MAIN_JOB,
            selection=AssetSelection.all() - AssetSelection.groups("landing"),
            description="Everything: bronze ingestion, silver contracts, gold models and checks.",
        ),
        define_asset_job(
            "bronze_job", selection=AssetSelection.groups("bronze"), description="Bronze only."
        ),
        define_asset_job(
            "silver_job",
            selection=AssetSelection.groups("silver", "quarantine"),
            description="Silver contracts and quarantine, from what bronze already holds.",
        ),
        define_asset_job(
            "gold_job", selection=AssetSelection.groups("gold"), description="Gold models only."
        ),
    ]
    sensors = [build_landing_zone_sensor(config.feeds, MAIN_JOB, _downstream_of_feeds(config))]

    warehouse_path = str(settings.warehouse_path)
    duckdb_config = {
        k: v
        for k, v in {
            "memory_limit": settings.duckdb_memory_limit,
            "threads": settings.duckdb_threads,
        }.items()
        if v
    }
    io_manager = WarehouseIOManager(database=warehouse_path, connection_config=duckdb_config)
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        sensors=sensors,
        resources={
            "warehouse": WarehouseResource(
                path=warehouse_path,
                memory_limit=settings.duckdb_memory_limit,
                threads=settings.duckdb_threads,
            ),
            "landing_zone": LandingZoneResource(path=str(settings.landing_dir)),
            # Gold assets name it explicitly; it is also the default for any new asset.
            "warehouse_io_manager": io_manager,
            "io_manager": io_manager,
        },
        # DuckDB has one writer and the machine two cores: steps run one after another in the
        # run process (a multiprocess executor costs ~2 s a step and contends for the lock).
        executor=in_process_executor,
    )


defs = build_definitions()
