"""Fixtures the reverse-ETL tests share: the three destination emulators and a connection to
the test warehouse (the session's real services come from the package conftest)."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from medallion_platform_tests.reverse_etl import Emulators, running_emulators


@pytest.fixture
def emulators() -> Iterator[Emulators]:
    yield from running_emulators()


@pytest.fixture
def conn(settings) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(settings.warehouse_path))
    yield connection
    connection.close()
