"""REST APIs: declarative endpoints, pagination, retries, incremental cursors (no Dagster)."""

from medallion_platform.connectors.rest.client import (
    Credentials,
    RestClient,
    RestError,
    RestHttpError,
    RetriesExhausted,
)
from medallion_platform.connectors.rest.spec import RestEndpoint, RestSource
from medallion_platform.connectors.rest.sync import SyncReport, SyncState, sync_endpoint

__all__ = [
    "Credentials",
    "RestClient",
    "RestEndpoint",
    "RestError",
    "RestHttpError",
    "RestSource",
    "RetriesExhausted",
    "SyncReport",
    "SyncState",
    "sync_endpoint",
]
