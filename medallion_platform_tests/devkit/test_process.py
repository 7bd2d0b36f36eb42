"""The one local-process base of the dev harness, on real child processes: a server that
ignores SIGTERM is still stopped, one that dies at start-up is reported with its log, a
deadline is a deadline, and a detached process is found and stopped again by its pid."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medallion_platform.devkit.process import (
    LocalProcess,
    NotReady,
    ProcessExited,
    free_port,
    pid_alive,
    stop_pid,
)

# A child that says it is up, then ignores SIGTERM: only SIGKILL ends it.
STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('http://127.0.0.1:1', flush=True); print('started', file=sys.stderr, flush=True); "
    "time.sleep(120)"
)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    process = LocalProcess("stubborn", tmp_path / "stubborn.log")
    child = process.spawn(_python(STUBBORN), stdout=subprocess.PIPE)
    assert process.read_line(b"http", time.monotonic() + 30) == "http://127.0.0.1:1"
    started = time.monotonic()
    process.stop(timeout_s=0.5)
    assert child.returncode == -signal.SIGKILL  # reaped: no zombie left behind
    assert time.monotonic() - started < 10
    assert not process.running and process.pid is None
    assert child.stdout is not None and child.stdout.closed
    assert "started" in (tmp_path / "stubborn.log").read_text()  # stderr went to the log


def test_each_stop_signal_is_tried_before_sigkill(tmp_path: Path) -> None:
    """PostgreSQL's escalation: its shutdown mode's signal, then SIGQUIT, then SIGKILL."""
    # SIGQUIT back to its default: a shell without job control starts background commands
    # (`make test &`) with SIGINT and SIGQUIT ignored, and the child would inherit that.
    code = (
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "signal.signal(signal.SIGQUIT, signal.SIG_DFL); "
        "print('up', flush=True); time.sleep(120)"
    )
    process = LocalProcess("pg-like", tmp_path / "pg.log")
    child = process.spawn(_python(code), stdout=subprocess.PIPE)
    process.read_line(b"up", time.monotonic() + 30)
    process.stop(signals=(signal.SIGINT, signal.SIGQUIT), timeout_s=0.5, grace_s=10)
    assert child.returncode == -signal.SIGQUIT


def test_an_exit_before_ready_names_the_code_and_quotes_the_log(tmp_path: Path) -> None:
    code = "import sys; print('FATAL: invalid value for shared_buffers', flush=True); sys.exit(3)"
    process = LocalProcess("dying", tmp_path / "dying.log")
    process.spawn(_python(code))
    with pytest.raises(ProcessExited, match=r"(?s)dying exited with 3; .*dying\.log:\n.*FATAL"):
        process.wait_ready(lambda: False, time.monotonic() + 30)


def test_the_deadline_gives_the_last_reason_and_the_log(tmp_path: Path) -> None:
    process = LocalProcess("silent", tmp_path / "silent.log")
    process.spawn(_python("print('listening soon'); import time; time.sleep(120)"))

    def never() -> bool:
        raise NotReady("connection refused")

    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"(?s)silent on x not ready .*connection refused"):
            process.wait_ready(never, time.monotonic() + 0.5, where="x")
        assert time.monotonic() - started < 5
        assert process.running  # the caller decides: it is left as it is
    finally:
        process.stop()
    assert not process.running


def test_a_check_that_raises_gives_up_at_once(tmp_path: Path) -> None:
    process = LocalProcess("refused", tmp_path / "refused.log")
    process.spawn(_python("import time; time.sleep(120)"))

    def refused() -> bool:
        raise RuntimeError("rejects our password")

    try:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="rejects our password"):
            process.wait_ready(refused, time.monotonic() + 60)
        assert time.monotonic() - started < 5
    finally:
        process.stop()


def test_a_detached_process_is_stopped_later_by_its_pid(tmp_path: Path) -> None:
    process = LocalProcess("detached", tmp_path / "detached.log")
    process.spawn(_python(STUBBORN), stdout=subprocess.PIPE)
    process.read_line(b"http", time.monotonic() + 30)
    pid = process.detach()
    assert not process.running and pid_alive(pid)
    assert stop_pid(pid, timeout_s=0.5)  # SIGTERM is ignored: SIGKILL after 0.5 s
    assert not pid_alive(pid)
    assert stop_pid(pid) is False  # nothing left to stop


def test_the_log_is_appended_across_restarts_and_private(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "twice.log"
    process = LocalProcess("twice", log)
    for word in ("first", "second"):
        process.spawn(_python(f"print({word!r})")).wait(timeout=30)
        process.stop()
    assert log.read_text().split() == ["first", "second"]
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_read_line_skips_other_output_printed_in_the_same_write(tmp_path: Path) -> None:
    """A warning and the URL in one write: the URL is still found, not left in a buffer."""
    code = (
        "import sys, time; sys.stdout.write('warming up\\nhttp://127.0.0.1:2\\n'); "
        "sys.stdout.flush(); time.sleep(120)"
    )
    process = LocalProcess("chatty", tmp_path / "chatty.log")
    process.spawn(_python(code), stdout=subprocess.PIPE)
    try:
        assert process.read_line(b"http", time.monotonic() + 10) == "http://127.0.0.1:2"
    finally:
        process.stop()
