"""Run one destination emulator as a process, for the demo and for clients in other processes.

    HUBSPOT_ACCESS_TOKEN=... python -m medallion_platform.devkit.demo.destinations hubspot

The token (and any other setting the destination's client reads, such as Zendesk's agent
email) comes from the environment variables the client declares (never the command line,
where ``ps`` shows it). The base URL is printed on stdout once the server accepts connections;
it serves until SIGTERM or SIGINT. ``--help`` lists the destinations and their variables.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from medallion_platform.devkit.demo.destinations import emulator_secrets, emulators
from medallion_platform.devkit.demo.http_emulator import EmulatorServer, serve_until_signal
from medallion_platform.reverse_etl.destinations import destination_info


def _parser() -> argparse.ArgumentParser:
    apis = emulators()
    secrets = {name: [s.name for s in emulator_secrets(name)] for name in apis}
    parser = argparse.ArgumentParser(
        prog="python -m medallion_platform.devkit.demo.destinations",
        description="Serve a reverse-ETL destination emulator on 127.0.0.1. The token clients "
        "must present is read from the environment: "
        + ", ".join(f"{' '.join('$' + e for e in envs)} ({name})" for name, envs in secrets.items())
        + ".",
    )
    parser.add_argument("api", choices=sorted(apis), help="which API to emulate")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--rate-limit", type=int, help="requests allowed per window (default: the API's own)"
    )
    parser.add_argument("--rate-window", type=float, help="the rate-limit window in seconds")
    parser.add_argument(
        "--no-rate-limit", action="store_true", help="turn the default rate limit off"
    )
    for emulator in apis.values():
        emulator.add_arguments(parser)
    return parser


def settings_from(api: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The emulator's settings (by client argument) from the variables the client reads; a
    missing secret is ``KeyError`` naming the variable. The address is the emulator's own."""
    settings: dict[str, str] = {}
    checked = emulator_secrets(api)
    for setting in destination_info(api).env:
        value = environ.get(setting.name, "")
        if setting.address:
            continue
        if value:
            settings[setting.option] = value
        elif setting in checked:
            raise KeyError(setting.name)
    return settings


def build(args: argparse.Namespace, settings: Mapping[str, str]) -> EmulatorServer:
    """The emulator the arguments describe (not started)."""
    return emulators()[args.api].build(args, settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args.api, os.environ)
    except KeyError as missing:
        parser.error(f"${missing.args[0]} must be set to the token clients will present")
    serve_until_signal(build(args, settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
