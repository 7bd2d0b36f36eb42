"""Destination clients (httpx) for the SaaS APIs the platform syncs to, and their registry.

A destination is one module in this package whose client class declares ``info`` (a
:class:`~.base.DestinationInfo`): its name, objects, identity fields, fields, batch limit,
sync options and environment. :func:`registry` finds them by scanning the package, so a new
destination is its module (plus its emulator under ``devkit/demo/destinations`` and its
``syncs.yaml`` lines): no list elsewhere names it. Sync validation, the Dagster resources,
``medallion services`` and the emulators' command line all read the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medallion_platform.reverse_etl.destinations.base import DestinationInfo
    from medallion_platform.reverse_etl.destinations.http import HttpDestination


@cache
def registry() -> dict[str, type[HttpDestination]]:
    """Every destination client of this package by its ``info.name`` (imported once)."""
    found: dict[str, type[HttpDestination]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and value.__module__ == module.__name__
                and "info" in value.__dict__
            ):
                name = value.info.name
                if name in found:
                    raise RuntimeError(
                        f"two destination clients are named {name!r}: "
                        f"{found[name].__qualname__} and {value.__qualname__}"
                    )
                found[name] = value
    return dict(sorted(found.items()))


def destination_names() -> tuple[str, ...]:
    return tuple(registry())


def destination_class(name: str) -> type[HttpDestination]:
    """The client class of destination ``name``; ``KeyError`` naming the known ones."""
    clients = registry()
    if name not in clients:
        raise KeyError(f"unknown destination {name!r}; known: {', '.join(clients)}")
    return clients[name]


def destination_info(name: str) -> DestinationInfo:
    return destination_class(name).info
