"""The code location: every asset, check, sensor and job, built from the declared config.

``build_definitions`` takes the platform home and the configuration as arguments so tests can
build the same graph on a temporary home; ``defs`` is the packaged one for ``MEDALLION_HOME``,
built only when Dagster loads it (``@definitions``), never as a side effect of an import.
"""

from __future__ import annotations

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
    definitions,
    in_process_executor,
)

from medallion_platform.config import PlatformConfig, platform_config
from medallion_platform.defs.cdc import (
    build_cdc_bronze_assets,
    build_cdc_resource,
    build_cdc_sensor,
    cdc_resource_key,
)
from medallion_platform.defs.columns import cached_model_descriptions
from medallion_platform.defs.files import (
    build_bronze_file_asset,
    build_landing_spec,
    build_landing_zone_sensor,
)
from medallion_platform.defs.gold import build_gold_asset, build_gold_checks
from medallion_platform.defs.io_manager import WarehouseIOManager
from medallion_platform.defs.ml import build_ml_assets
from medallion_platform.defs.reports import KPI_REPORT_DEPS, build_kpi_report_asset
from medallion_platform.defs.resources import LandingZoneResource, WarehouseResource
from medallion_platform.defs.rest import (
    build_api_spec,
    build_rest_bronze_asset,
    build_rest_resource,
    rest_resource_key,
)
from medallion_platform.defs.reverse_etl import (
    REVERSE_ETL_GROUP,
    build_reverse_etl_automation_sensor,
    build_reverse_etl_defs,
)
from medallion_platform.defs.silver import (
    build_orphans_check,
    build_silver_assets,
)
from medallion_platform.defs.streams import (
    build_event_stream_sensor,
    build_stream_bronze_asset,
    build_stream_resource,
    stream_resource_key,
)
from medallion_platform.settings import PlatformSettings

MAIN_JOB = "medallion_job"
EXTERNAL_GROUPS = ("landing", "api")


def downstream_of_bronze(config: PlatformConfig, table: str) -> list[AssetKey]:
    """A bronze table's asset and everything built from it: contracts, then SQL models."""
    return [AssetKey(t.split(".")) for t in config.table_graph().downstream(f"bronze.{table}")]


def _declares_kpi_report_inputs(config: PlatformConfig) -> bool:
    """The KPI report reads the demo's gold tables and churn scores: a configuration directory
    of a team's own (``MEDALLION_CONFIG_DIR``) without them simply has no report."""
    gold = {f"{m.layer}/{m.name}" for m in config.sql_models}
    needed = {"/".join(k.path) for k in KPI_REPORT_DEPS if k.path[0] == "gold"}
    return config.churn is not None and needed <= gold


def build_definitions(
    settings: PlatformSettings | None = None, config: PlatformConfig | None = None
) -> Definitions:
    settings = settings or PlatformSettings.from_env()
    config = config or platform_config()
    producers = config.bronze_producers()

    assets: list = [build_landing_spec(feed) for feed in config.feeds]
    assets += [build_bronze_file_asset(feed, config.feeds) for feed in config.feeds]
    for source in config.rest_sources:
        assets += [build_api_spec(source, endpoint) for endpoint in source.endpoints]
        assets += [build_rest_bronze_asset(source, endpoint) for endpoint in source.endpoints]
    assets += [build_stream_bronze_asset(stream) for stream in config.streams]
    assets += [build_cdc_bronze_assets(source) for source in config.cdc_sources]
    assets += [
        build_silver_assets(c, AssetKey(["bronze", c.source]))
        for c in config.contracts
        if c.source in producers
    ]
    described = cached_model_descriptions(
        config.sql_models, config.contracts, settings.home / "cache"
    )
    assets += [
        build_gold_asset(model, described.get(f"{model.layer}.{model.name}"))
        for model in config.sql_models
    ]
    checks = [check for model in config.sql_models for check in build_gold_checks(model)]
    checks += [
        build_orphans_check(c) for c in config.contracts if c.references and c.source in producers
    ]
    if _declares_kpi_report_inputs(config):
        assets.append(build_kpi_report_asset(settings))
    sync_assets, sync_checks, destination_resources = build_reverse_etl_defs(config.syncs)
    assets += sync_assets
    checks += sync_checks
    if config.churn is not None:
        ml_assets, ml_checks = build_ml_assets(config.churn, settings.home)
        assets += ml_assets
        checks += ml_checks

    jobs = [
        define_asset_job(
            MAIN_JOB,
            # Syncs push to other teams' tools: they run on their own (automation sensor,
            # reverse_etl_job), not as a side effect of every load.
            selection=AssetSelection.all()
            - AssetSelection.groups(*EXTERNAL_GROUPS, REVERSE_ETL_GROUP),
            description="Everything from the sources to gold, the churn model and the KPI "
            "report (reverse-ETL syncs run in reverse_etl_job).",
        ),
        define_asset_job(
            "reverse_etl_job",
            selection=AssetSelection.groups(REVERSE_ETL_GROUP),
            description="Every reverse-ETL sync: gold and churn scores to Salesforce, HubSpot "
            "and Zendesk, sending only what changed.",
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
        define_asset_job(
            "ml_job",
            selection=AssetSelection.groups("ml", "reports"),
            description="Churn features, model and scores, then the KPI report, from gold.",
        ),
    ]
    for source in config.rest_sources:
        selection = [
            key
            for endpoint in source.endpoints
            for key in downstream_of_bronze(config, source.bronze_table(endpoint))
        ]
        jobs.append(
            define_asset_job(
                f"{source.name}_job",
                selection=AssetSelection.assets(*dict.fromkeys(selection)),
                description=f"Sync the {source.name} API and refresh what is built from it.",
            )
        )
    schedules = [
        ScheduleDefinition(
            name=f"{source.name}_schedule",
            cron_schedule=source.schedule,
            job_name=f"{source.name}_job",
            default_status=DefaultScheduleStatus.STOPPED,
            description=f"Sync the {source.name} API ({source.schedule}); turn it on in the UI "
            "once the API's environment variables are set.",
        )
        for source in config.rest_sources
    ]
    feed_selections = {
        feed.name: downstream_of_bronze(config, feed.bronze_table) for feed in config.feeds
    }
    sensors = [build_landing_zone_sensor(config.feeds, MAIN_JOB, feed_selections)]
    if config.streams:
        stream_selections = {
            s.name: downstream_of_bronze(config, s.bronze_table) for s in config.streams
        }
        sensors.append(build_event_stream_sensor(config.streams, MAIN_JOB, stream_selections))
    if config.cdc_sources:
        cdc_selections = {
            source.name: list(
                dict.fromkeys(
                    key
                    for table in source.tables
                    for key in downstream_of_bronze(config, source.bronze_table(table))
                )
            )
            for source in config.cdc_sources
        }
        sensors.append(build_cdc_sensor(config.cdc_sources, MAIN_JOB, cdc_selections))

    if config.syncs:
        sensors.append(build_reverse_etl_automation_sensor())

    warehouse_path = str(settings.warehouse_path)
    duckdb_config = {
        k: v
        for k, v in {
            "memory_limit": settings.duckdb_memory_limit,
            "threads": settings.duckdb_threads,
        }.items()
        if v
    }
    warehouse = WarehouseResource(
        path=warehouse_path,
        memory_limit=settings.duckdb_memory_limit,
        silver_memory_limit=settings.duckdb_silver_memory_limit,
        threads=settings.duckdb_threads,
        **_engine_fields(settings.home),
    )
    io_manager = WarehouseIOManager(
        database=warehouse_path,
        connection_config=duckdb_config,
        parquet_dir=str(settings.exports_dir),
        warehouse=warehouse,  # its engine builds the SQL outputs (gold on Spark, or DuckDB)
    )
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        sensors=sensors,
        schedules=schedules,
        resources={
            "warehouse": warehouse,
            "landing_zone": LandingZoneResource(path=str(settings.landing_dir)),
            **{rest_resource_key(src): build_rest_resource(src) for src in config.rest_sources},
            **{stream_resource_key(s): build_stream_resource(s) for s in config.streams},
            **{cdc_resource_key(s): build_cdc_resource(s) for s in config.cdc_sources},
            **destination_resources,
            # Gold assets name it explicitly; it is also the default for any new asset.
            "warehouse_io_manager": io_manager,
            "io_manager": io_manager,
        },
        # DuckDB has one writer and the machine two cores: steps run one after another in the
        # run process (a multiprocess executor costs ~2 s a step and contends for the lock).
        executor=in_process_executor,
    )


def _engine_fields(home) -> dict:
    """The engine choice from the environment (MEDALLION_ENGINE …), validated at load."""
    from medallion_platform.engines.settings import EngineSettings

    engine = EngineSettings.from_env(home)
    return {
        "engine": engine.engine,
        "spark_master": engine.spark_master,
        "spark_remote": engine.spark_remote,
        "lake": engine.lake,
        "spark_conf": engine.spark_conf,
    }


@definitions
def defs() -> Definitions:
    """The packaged configuration on ``MEDALLION_HOME`` (what workspace.yaml loads)."""
    return build_definitions()
