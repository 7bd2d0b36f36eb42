"""medallion_platform: an asset-oriented medallion data platform on Dagster and DuckDB.

The package is the Dagster code location; ``defs`` is its ``Definitions``.
"""

import logging

# A library logs; the application decides where. (Dagster's own logger reports to the run.)
logging.getLogger(__name__).addHandler(logging.NullHandler())

from medallion_platform.definitions import defs  # noqa: E402

__all__ = ["defs"]
