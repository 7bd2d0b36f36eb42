"""The writer lock: one writer at a time, released by the OS when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medallion_platform.warehouse import Warehouse, WarehouseBusyError
from medallion_platform.warehouse.writer_lock import (
    Holder,
    held_by_this_process,
    lock_path,
    read_holder,
    writer_lock,
)

HOLD = textwrap.dedent(
    """
    import sys, time
    from medallion_platform.warehouse.writer_lock import Holder, writer_lock

    with writer_lock(sys.argv[1], Holder.this_process("child holder", run_id="run-child")):
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
    print("released", flush=True)
    """
)


def _holder_process(warehouse: Path, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(warehouse), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "holding"
    return child


def test_a_killed_holder_releases_the_lock_at_once_and_is_reported_dead(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    child = _holder_process(warehouse, 600)
    try:
        held = read_holder(lock_path(warehouse))
        assert held is not None and held.pid == child.pid and not held.released
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        started = time.monotonic()
        with writer_lock(warehouse, Holder.this_process("next"), timeout_s=5) as died:
            assert time.monotonic() - started < 1.0
            assert died is not None and died.pid == child.pid and died.run_id == "run-child"
            assert died.process_is_gone()
            assert read_holder(lock_path(warehouse)).what == "next"
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
    # Released cleanly this time: the next holder is told nothing died.
    with writer_lock(warehouse, Holder.this_process("after")) as died:
        assert died is None


def test_a_waiter_is_told_who_holds_it_and_gives_up_with_the_holder_named(
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    child = _holder_process(warehouse, 30)
    seen: list[tuple[Holder | None, float]] = []
    try:
        with (
            pytest.raises(WarehouseBusyError) as busy,
            writer_lock(
                warehouse,
                Holder.this_process("waiter"),
                timeout_s=1.0,
                on_wait=lambda holder, waited: seen.append((holder, waited)),
                report_every_s=0.4,
            ),
        ):
            pytest.fail("took the lock while another process holds it")
        assert f"held by process {child.pid}" in str(busy.value)
        assert "run run-child (child holder" in str(busy.value)
        assert len(seen) >= 2 and seen[0][0] is not None and seen[0][0].pid == child.pid
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_an_interrupted_wait_stops_at_once(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    child = _holder_process(warehouse, 30)
    try:
        started = time.monotonic()
        with (
            pytest.raises(KeyboardInterrupt, match="writer lock"),
            writer_lock(warehouse, Holder.this_process("waiter"), interrupted=lambda: True),
        ):
            pytest.fail("took the lock while another process holds it")
        assert time.monotonic() - started < 1.0
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_the_lock_is_reentrant_within_a_process_and_serializes_warehouse_writers(
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with writer_lock(warehouse, Holder.this_process("run")):
        assert held_by_this_process(warehouse)
        # A connection opened while the run holds the lock shares it (no self-deadlock).
        with Warehouse(warehouse, lock_timeout_s=1).transaction() as conn:
            conn.execute("CREATE TABLE t AS SELECT 1 AS x")
        # Another process cannot write meanwhile, even between the run's connections.
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from medallion_platform.warehouse import Warehouse\n"
                "with Warehouse(sys.argv[1], lock_timeout_s=0.5).connect(): pass",
                str(warehouse),
            ],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "WarehouseBusyError" in probe.stderr
        assert f"held by process {os.getpid()}" in probe.stderr
    assert not held_by_this_process(warehouse)
    with Warehouse(warehouse, lock_timeout_s=1).connect() as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
