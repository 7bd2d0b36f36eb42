"""DuckDB's ``memory_limit`` lowered for a block of statements, the warehouse's put back after.

DuckDB's buffer pool keeps every block it reads or writes until ``memory_limit`` forces it out,
and its sorts and windows take memory up to the same limit before they spill. Under the
warehouse's limit (a quarter of the machine by default) a long bronze load or a large silver
run therefore grows to that limit; under a lower one for the duration of the work, DuckDB
evicts and spills (to the warehouse's ``temp_directory``) instead.

DuckDB reads its limit back rounded (``6026MiB`` reads as ``5.8 GiB``), so the limit to put
back is the configured one, passed in, not what ``current_setting`` shows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import duckdb

log = logging.getLogger(__name__)

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def size_bytes(size: str) -> int | None:
    """A DuckDB size (``4GB``, ``6026MiB``, ``1.5 GiB``) in bytes; None if it is not one."""
    match = _SIZE.fullmatch(size)
    if not match:
        return None
    return int(float(match[1]) * _UNITS[(match[2] or "").lower()])


class MemoryBound(NamedTuple):
    """A lower ``memory_limit`` for some work, and the warehouse's configured one to restore."""

    configured: str
    """The warehouse's ``memory_limit`` as configured (``Warehouse.memory_limit``)."""
    bound: str | int
    """The limit for the work: a DuckDB size or bytes."""


@contextmanager
def memory_bound(
    conn: duckdb.DuckDBPyConnection, configured: str, bound: str | int, *, what: str
) -> Iterator[None]:
    """Run the block under ``bound`` of DuckDB memory, then restore ``configured``.

    A configured limit at or below the bound (or one that is not a size) is kept as it is.
    The limit belongs to the database instance, not to a transaction: it is set and restored
    through a cursor of its own, so it is restored even when the block's error aborted the
    caller's transaction (whose connection then refuses every statement until ROLLBACK), and
    a refused ``SET`` (more memory in use than the bound) cannot abort that transaction."""
    limit = size_bytes(configured)
    lower = bound if isinstance(bound, int) else size_bytes(bound)
    if limit is None or lower is None or limit <= lower:
        yield
        return
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SET memory_limit = '{lower}B'")
    except duckdb.Error as exc:  # more than that in use already: run under the configured one
        log.warning("%s keep memory_limit %s: %s", what, configured, exc)
        yield
        return
    try:
        yield
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f"SET memory_limit = '{limit}B'")
