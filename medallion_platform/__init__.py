"""medallion_platform: an asset-oriented medallion data platform on Dagster and DuckDB.

The package root imports nothing, so ``import medallion_platform.warehouse`` (or any other
plain-Python core) never imports Dagster nor builds the code location. The code location is
``medallion_platform.definitions:defs``, built when Dagster loads it; ``dagster … -m
medallion_platform`` finds it through the lazy ``code_location`` attribute below.
"""

import logging

# A library logs; the application decides where. (Dagster's own logger reports to the run.)
logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = ("code_location",)


def __getattr__(name: str) -> object:
    # Not named ``defs``: the ``defs/`` subpackage takes that attribute once it is imported.
    if name == "code_location":
        from medallion_platform.definitions import defs

        return defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
