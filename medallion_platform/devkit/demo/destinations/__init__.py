"""Local emulators of the SaaS APIs that reverse-ETL syncs write to, one module per destination.

Each one speaks its API's real shapes (batch limits, per-record errors, rate-limit answers and
headers, auth failures, asynchronous jobs) on 127.0.0.1, keeps an inspectable store of what was
written and injects faults on demand, so a sync is tested end to end without the network. The
module of destination ``<name>`` is ``destinations/<name>.py`` and declares ``EMULATOR`` (an
:class:`~.common.EmulatorInfo`); the destinations themselves come from the clients' registry
(:func:`medallion_platform.reverse_etl.destinations.registry`), so no list here names them.
Run one as a process with ``python -m medallion_platform.devkit.demo.destinations <name>``.
"""

from __future__ import annotations

import importlib

from medallion_platform.devkit.demo.destinations.common import EmulatorInfo
from medallion_platform.devkit.demo.http_emulator import (
    EmulatorStats,
    RateLimit,
    RequestRecord,
    SlidingWindowLimiter,
)
from medallion_platform.reverse_etl.destinations import destination_info, destination_names
from medallion_platform.reverse_etl.destinations.base import EnvSetting


def emulator_info(name: str) -> EmulatorInfo:
    """The ``EMULATOR`` of destination ``name``'s emulator module."""
    if name not in destination_names():
        raise KeyError(f"unknown destination {name!r}; known: {', '.join(destination_names())}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.EMULATOR


def emulator_secrets(name: str) -> tuple[EnvSetting, ...]:
    """The secret settings destination ``name``'s emulator checks clients for (``services up``
    draws each fresh): the emulator's ``secrets``, else the client's required secrets."""
    wanted = emulator_info(name).secrets
    return tuple(
        setting
        for setting in destination_info(name).env
        if setting.secret and (setting.required if wanted is None else setting.option in wanted)
    )


def emulators() -> dict[str, EmulatorInfo]:
    """Every registered destination's emulator, by destination name."""
    return {name: emulator_info(name) for name in destination_names()}


__all__ = [
    "EmulatorInfo",
    "EmulatorStats",
    "RateLimit",
    "RequestRecord",
    "SlidingWindowLimiter",
    "emulator_info",
    "emulator_secrets",
    "emulators",
]
