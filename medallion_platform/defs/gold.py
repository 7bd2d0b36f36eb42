"""SQL models in Dagster (gold, and silver built from silver): one asset per declared model,
built by SQL inside the warehouse through the lazy IO-manager type."""

from datetime import timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetsDefinition,
    FreshnessPolicy,
    MetadataValue,
    asset,
    asset_check,
)

from medallion_platform.defs.constants import WAREHOUSE_POOL
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.gold import GoldModel
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.tables import SqlQuery


def gold_key(model: GoldModel) -> AssetKey:
    return AssetKey([model.layer, model.name])


def build_gold_asset(model: GoldModel) -> AssetsDefinition:
    """``<layer>/<name>``: the model's SELECT, materialized atomically by the IO manager."""

    @asset(
        key=gold_key(model),
        deps=[AssetKey(dep.split(".")) for dep in model.depends_on],
        group_name=model.layer,
        description=f"{model.description.strip()}\n\nGrain: {model.grain}.",
        owners=[model.owner],
        kinds={"duckdb", "sql"},
        tags={"layer": model.layer},
        metadata={
            "grain": model.grain,
            "key": ", ".join(model.key),
            "sql": MetadataValue.md(f"```sql\n{model.sql}\n```"),
        },
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=timedelta(hours=model.freshness_hours),
            warn_window=timedelta(hours=model.freshness_hours / 2),
        ),
        io_manager_key="warehouse_io_manager",
        pool=WAREHOUSE_POOL,
    )
    def _gold() -> SqlQuery:
        return SqlQuery(model.sql)

    return _gold


def build_gold_key_check(model: GoldModel):
    """The grain holds: the model's key is unique and never NULL."""
    keys = ", ".join(quote(k) for k in model.key)
    not_null = " OR ".join(f"{quote(k)} IS NULL" for k in model.key)

    @asset_check(
        asset=gold_key(model),
        name="grain_key_unique",
        blocking=model.layer == "silver",  # silver feeds gold: a broken grain stops it
        description=f"({', '.join(model.key)}) is unique and not NULL: one row per "
        f"{model.grain.removeprefix('one row per ')}.",
        pool=WAREHOUSE_POOL,
    )
    def _check(warehouse: WarehouseResource) -> AssetCheckResult:
        table = qualified(model.layer, model.name)
        with warehouse.warehouse().connect() as conn:
            duplicates = conn.execute(
                f"SELECT count(*) FROM (SELECT {keys} FROM {table} GROUP BY ALL "
                "HAVING count(*) > 1)"
            ).fetchone()[0]
            nulls = conn.execute(f"SELECT count(*) FROM {table} WHERE {not_null}").fetchone()[0]
        return AssetCheckResult(
            passed=duplicates == 0 and nulls == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"duplicate_keys": duplicates, "null_keys": nulls},
        )

    return _check
