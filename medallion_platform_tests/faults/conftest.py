"""Fixtures of the fault trials, and the summary of their outcomes at the end of the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from medallion_platform.devkit.brokers.redis_server import RedisServer
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.faults.harness import OUTCOMES, summary_lines
from medallion_platform_tests.reverse_etl import create_gold


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session's stream trials (each trial has its own stream)."""
    with RedisServer(tmp_path_factory.mktemp("fault-redis")) as server:
        yield server


@pytest.fixture(scope="session")
def empty_gold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with the gold tables the syncs read, empty; each trial starts from a copy
    (creating them means building the declared catalog: a few tenths of a second)."""
    path = tmp_path_factory.mktemp("gold") / "empty.duckdb"
    with Warehouse(path).connect() as conn:
        create_gold(conn, [])
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Trials per source, where they were killed, and what was lost, doubled or hung."""
    if not OUTCOMES:
        return
    terminalreporter.section("fault trials")
    for line in summary_lines(OUTCOMES):
        terminalreporter.write_line(line)
