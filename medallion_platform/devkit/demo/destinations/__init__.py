"""Local emulators of the SaaS APIs that reverse-ETL syncs write to: Salesforce, HubSpot, Zendesk.

Each one speaks its API's real shapes (batch limits, per-record errors, rate-limit answers and
headers, auth failures, asynchronous jobs) on 127.0.0.1, keeps an inspectable store of what was
written and injects faults on demand, so a sync is tested end to end without the network. Run one
as a process with
``python -m medallion_platform.devkit.demo.destinations {salesforce,hubspot,zendesk}``.
"""

from medallion_platform.devkit.demo.destinations.common import (
    EmulatorStats,
    RateLimit,
    RequestRecord,
    SlidingWindowLimiter,
)
from medallion_platform.devkit.demo.destinations.hubspot import HubSpotEmulator
from medallion_platform.devkit.demo.destinations.salesforce import SalesforceEmulator
from medallion_platform.devkit.demo.destinations.zendesk import ZendeskEmulator

__all__ = [
    "EmulatorStats",
    "HubSpotEmulator",
    "RateLimit",
    "RequestRecord",
    "SalesforceEmulator",
    "SlidingWindowLimiter",
    "ZendeskEmulator",
]
