"""Run one destination emulator as a process, for the demo and for clients in other processes.

    SALESFORCE_ACCESS_TOKEN=... python -m medallion_platform.devkit.demo.destinations salesforce
    HUBSPOT_ACCESS_TOKEN=...    python -m medallion_platform.devkit.demo.destinations hubspot
    ZENDESK_API_TOKEN=...       python -m medallion_platform.devkit.demo.destinations zendesk

The token comes from the environment (never the command line, where ``ps`` shows it). The base
URL is printed on stdout once the server accepts connections; it serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from medallion_platform.devkit.demo.destinations import hubspot, salesforce, zendesk
from medallion_platform.devkit.demo.destinations.common import (
    EmulatorServer,
    RateLimit,
    serve_until_signal,
)

TOKEN_ENVS = {
    "salesforce": salesforce.TOKEN_ENV,
    "hubspot": hubspot.TOKEN_ENV,
    "zendesk": zendesk.TOKEN_ENV,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medallion_platform.devkit.demo.destinations",
        description="Serve a reverse-ETL destination emulator on 127.0.0.1. The token clients "
        "must present is read from the environment: "
        + ", ".join(f"${env} ({name})" for name, env in TOKEN_ENVS.items())
        + ".",
    )
    parser.add_argument("api", choices=sorted(TOKEN_ENVS), help="which API to emulate")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--rate-limit",
        type=int,
        help="requests allowed per window (defaults: HubSpot 100/10 s, Zendesk 700/60 s, "
        "Salesforce none)",
    )
    parser.add_argument("--rate-window", type=float, help="the rate-limit window in seconds")
    parser.add_argument(
        "--no-rate-limit", action="store_true", help="turn the default rate limit off"
    )
    parser.add_argument(
        "--api-budget",
        type=int,
        default=salesforce.DEFAULT_API_BUDGET,
        help="Salesforce: the org's request budget (403 REQUEST_LIMIT_EXCEEDED beyond it)",
    )
    parser.add_argument(
        "--job-delay",
        type=float,
        default=zendesk.DEFAULT_JOB_DELAY,
        help="Zendesk: seconds a job stays queued before it runs",
    )
    return parser


def build(args: argparse.Namespace, token: str) -> EmulatorServer:
    """The emulator the arguments describe (not started)."""
    defaults = {
        "salesforce": None,
        "hubspot": hubspot.DEFAULT_RATE_LIMIT,
        "zendesk": zendesk.DEFAULT_RATE_LIMIT,
    }
    limit = defaults[args.api]
    if args.rate_limit is not None or args.rate_window is not None:
        base = limit or RateLimit(max_requests=100, window_seconds=1.0)
        limit = RateLimit(
            max_requests=base.max_requests if args.rate_limit is None else args.rate_limit,
            window_seconds=base.window_seconds if args.rate_window is None else args.rate_window,
        )
    if args.no_rate_limit:
        limit = None
    if args.api == "salesforce":
        return salesforce.SalesforceEmulator(
            token=token, port=args.port, api_budget=args.api_budget, rate_limit=limit
        )
    if args.api == "hubspot":
        return hubspot.HubSpotEmulator(token=token, port=args.port, rate_limit=limit)
    return zendesk.ZendeskEmulator(
        token=token,
        email=os.environ.get(zendesk.EMAIL_ENV) or zendesk.DEFAULT_EMAIL,
        port=args.port,
        rate_limit=limit,
        job_delay=args.job_delay,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    env = TOKEN_ENVS[args.api]
    token = os.environ.get(env, "")
    if not token:
        parser.error(f"${env} must be set to the token clients will present")
    serve_until_signal(build(args, token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
