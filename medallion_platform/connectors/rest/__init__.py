"""REST APIs: declarative endpoints, pagination, retries, incremental cursors (no Dagster)."""

from medallion_platform.connectors.rest.client import (
    Credentials,
    NotJsonResponse,
    RestClient,
    RestError,
    RestHttpError,
    RestRedirect,
    RetriesExhausted,
)
from medallion_platform.connectors.rest.pager import PaginationError, RepeatedPageError
from medallion_platform.connectors.rest.spec import RestEndpoint, RestSource, SyncBudget
from medallion_platform.connectors.rest.sync import SyncReport, SyncState, sync_endpoint

__all__ = [
    "Credentials",
    "NotJsonResponse",
    "PaginationError",
    "RepeatedPageError",
    "RestClient",
    "RestEndpoint",
    "RestError",
    "RestHttpError",
    "RestRedirect",
    "RestSource",
    "RetriesExhausted",
    "SyncBudget",
    "SyncReport",
    "SyncState",
    "sync_endpoint",
]
