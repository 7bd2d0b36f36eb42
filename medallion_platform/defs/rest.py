"""REST APIs in Dagster: a bronze asset per declared endpoint, a resource per API."""

from datetime import timedelta

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from medallion_platform.connectors.bronze import BRONZE_SCHEMA
from medallion_platform.connectors.rest import Credentials, RestClient, RestSource, sync_endpoint
from medallion_platform.connectors.rest.spec import RestEndpoint
from medallion_platform.defs.env import EnvResource, env_names
from medallion_platform.defs.metadata import table_metadata
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.warehouse.tables import describe_table


class RestApiResource(EnvResource):
    """An API's base URL and credential, read from the environment at run time."""

    base_url: str | None = Field(default=None, description="Base URL of the API.")
    token: str | None = Field(default=None, description="Bearer token or API key (secret).")
    username: str | None = None
    password: str | None = Field(default=None, description="Basic-auth password (secret).")

    def client(self, source: RestSource) -> RestClient:
        values = self.values(f"{source.name} API")
        credentials = Credentials(
            token=values["token"], username=values["username"], password=values["password"]
        )
        return RestClient(
            values["base_url"], source.auth, credentials, source.retry, headers=source.headers
        )


def rest_resource_key(source: RestSource) -> str:
    return f"rest_{source.name}"


def build_rest_resource(source: RestSource) -> RestApiResource:
    """The resource with the names of its variables: nothing secret is in the definitions."""
    auth = source.auth
    fields = {
        "base_url": source.base_url_env,
        "token": auth.token_env,
        "username": auth.username_env,
        "password": auth.password_env,
    }
    return RestApiResource(env=env_names(fields))


def rest_bronze_key(source: RestSource, endpoint: RestEndpoint) -> AssetKey:
    return AssetKey([BRONZE_SCHEMA, source.bronze_table(endpoint)])


def api_key(source: RestSource, endpoint: RestEndpoint) -> AssetKey:
    return AssetKey(["api", source.bronze_table(endpoint)])


def build_api_spec(source: RestSource, endpoint: RestEndpoint) -> AssetSpec:
    """The endpoint as an external asset, so lineage in the UI starts at the API."""
    return AssetSpec(
        api_key(source, endpoint),
        group_name="api",
        description=f"`GET {endpoint.path}` on {source.description.strip()} "
        f"{endpoint.description.strip()}",
        owners=[source.owner],
        kinds={"api", "rest"},
        tags={"layer": "api"},
        metadata={"path": endpoint.path, "base_url_env": source.base_url_env},
    )


def build_rest_bronze_asset(source: RestSource, endpoint: RestEndpoint) -> AssetsDefinition:
    """``bronze/<source>_<endpoint>``: every fetched record, raw JSON plus its fields as text."""
    resource_key = rest_resource_key(source)
    incremental = endpoint.incremental
    budget = source.budget_for(endpoint)
    how = (
        f"Incremental on `{incremental.cursor_field}` (from the committed high-water mark "
        f"minus {incremental.lookback_seconds}s of lookback)."
        if incremental
        else "Full re-read on each run."
    )

    @asset(
        key=rest_bronze_key(source, endpoint),
        deps=[api_key(source, endpoint)],
        group_name="bronze",
        description=(
            f"{endpoint.description.strip()}\n\nEvery record fetched from `GET {endpoint.path}`"
            " as received: `_raw` (the JSON) plus its top-level fields as text, with lineage "
            "(`_batch_id`, `_ingested_at`, `_source` = request URL + row). Pages are committed "
            f"{endpoint.pages_per_commit} at a time with the sync position: exactly once. {how} "
            f"A run reads at most {budget.max_pages} pages in {budget.max_seconds:g}s, then "
            "commits and leaves the rest to the next run (metadata `budget_reached`)."
        ),
        owners=[source.owner],
        kinds={"duckdb", "api"},
        tags={"layer": "bronze", "source": "rest"},
        metadata={"path": endpoint.path, "pagination": endpoint.pagination.type},
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=timedelta(minutes=source.freshness_minutes),
            warn_window=timedelta(minutes=source.freshness_minutes / 2),
        ),
        required_resource_keys={"warehouse", resource_key},
    )
    def _bronze(context) -> MaterializeResult:
        api: RestApiResource = getattr(context.resources, resource_key)
        warehouse: WarehouseResource = context.resources.warehouse
        wh = warehouse.warehouse()
        with api.client(source) as client:
            report = sync_endpoint(wh, source, endpoint, client, run_id=context.run_id)
        if report.resumed:
            context.log.info(f"Resumed an interrupted sync of {endpoint.name} where it stopped.")
        if report.budget_reached:
            context.log.warning(
                f"{endpoint.name}: budget {report.budget_reached} reached; the pages read are "
                "committed and the next run continues from there."
            )
        with wh.connect() as conn:
            desc = describe_table(conn, BRONZE_SCHEMA, report.table)
        return MaterializeResult(
            metadata={
                **table_metadata(desc),
                "rows_added": report.records,
                "pages": report.pages,
                "api_calls": report.api_calls,
                "retries": report.retries,
                "resumed": report.resumed,
                "complete": report.complete,
                "budget_reached": report.budget_reached or "(no)",
                "since": report.since if report.since is not None else "(full read)",
                "high_water_mark": report.high_water_mark
                if report.high_water_mark is not None
                else "(none)",
                "batch_ids": MetadataValue.json(report.batch_ids),
            }
        )

    return _bronze
