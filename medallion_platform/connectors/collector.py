"""Python's cyclic garbage collector paused around bulk work (no imports beyond the stdlib).

Why: a connector holds many short-lived objects at once (a ``consume()``'s 10,000 Kafka
``Message`` objects, a REST commit's parsed records), all tracked by the collector, which then
runs every 700 allocations and walks them (and every object of the process, Dagster's too) for
nothing: they die by reference count together. Measured: 1-1.5 s of CPU per 1M Kafka
messages, 0.5-0.7 s of about 7 s for a REST sync of 108k records. Cycles made meanwhile (an
exception's traceback) wait for the collector's next run.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for the block, back on after it (left alone if it was off)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
