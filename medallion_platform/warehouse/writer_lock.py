"""One writer at a time, by a lock the operating system releases when its holder dies.

DuckDB lets one process write the warehouse. Everything that writes it — a Dagster run (for
its whole length, so two runs never interleave their steps), a ``medallion`` command, a test —
first takes this lock: an ``fcntl`` lock on a file beside the warehouse. When the holder's
process ends in any way (exit, crash, SIGKILL, the OOM killer) the kernel releases the lock at
once, so nothing ever waits for a run that will never finish. (Dagster's concurrency pools
keep a dead run's slot until someone frees it by hand, and the waiting steps spin forever.)

The lock file says who holds it (pid, host, run, since when), so a waiter can say what it waits
for; a holder that stopped cleanly marks the file released, so the next holder can tell that
its predecessor died while holding the lock (and the Dagster layer marks that run failed).
The lock is re-entrant within a process: a run's resources and its connections share it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel


class WarehouseBusyError(RuntimeError):
    """Another process held the warehouse for longer than the caller was willing to wait."""


class Holder(BaseModel):
    """Who holds (or last held) the writer lock."""

    pid: int
    host: str
    since: datetime
    what: str = ""
    run_id: str | None = None
    released: bool = False

    @classmethod
    def this_process(cls, what: str, run_id: str | None = None) -> Holder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            since=datetime.now(UTC),
            what=what,
            run_id=run_id,
        )

    def describe(self) -> str:
        run = f"run {self.run_id} " if self.run_id else ""
        return (
            f"{run}({self.what or 'a writer'}, pid {self.pid} on {self.host}, "
            f"since {self.since:%Y-%m-%d %H:%M:%S} UTC)"
        )

    def process_is_gone(self) -> bool:
        """True only when this holder ran on this host and its process no longer exists."""
        return self.host == socket.gethostname() and not pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def lock_path(warehouse_path: Path | str) -> Path:
    return Path(f"{warehouse_path}.writer.lock")


WaitHook = Callable[[Holder | None, float], None]
"""Called while waiting, with the current holder (if readable) and the seconds waited so far."""


@dataclass
class _Held:
    fd: int
    holder: Holder
    depth: int = 1


_held: dict[Path, _Held] = {}
_registry_lock = threading.Lock()


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in a lock file (the last one, if it is free now); None if unknown."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return Holder.model_validate_json(text) if text.strip() else None
    except ValueError:
        return None


@contextmanager
def writer_lock(
    warehouse_path: Path | str,
    holder: Holder,
    *,
    timeout_s: float | None = None,
    on_wait: WaitHook | None = None,
    interrupted: Callable[[], bool] | None = None,
    report_every_s: float = 30.0,
    poll_s: float = 0.2,
) -> Iterator[Holder | None]:
    """Hold the warehouse's writer lock for the ``with`` block.

    Yields the previous holder's record when this call took the lock and that holder did not
    release it cleanly (its process died holding it), else None. Waits for ``timeout_s`` (None:
    for as long as it takes), calling ``on_wait`` at once and every ``report_every_s``; a
    KeyboardInterrupt while waiting (or ``interrupted()`` turning true, for hosts that defer
    SIGINT, as Dagster's run workers do) stops the wait. Re-entrant within the process.
    """
    path = lock_path(warehouse_path).absolute()
    with _registry_lock:
        held = _held.get(path)
        if held is not None:
            held.depth += 1
    if held is not None:
        try:
            yield None
        finally:
            _leave(path)
        return

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _wait_for(fd, path, timeout_s, on_wait, interrupted, report_every_s, poll_s)
    except BaseException:
        os.close(fd)
        raise
    previous = read_holder(path)
    _write(fd, holder)
    with _registry_lock:
        _held[path] = _Held(fd=fd, holder=holder)
    died = previous if previous is not None and not previous.released else None
    try:
        yield died
    finally:
        _leave(path)


def _wait_for(
    fd: int,
    path: Path,
    timeout_s: float | None,
    on_wait: WaitHook | None,
    interrupted: Callable[[], bool] | None,
    report_every_s: float,
    poll_s: float,
) -> None:
    warehouse = path.with_name(path.name.removesuffix(".writer.lock"))
    started = time.monotonic()
    next_report = started
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        waited = now - started
        current = read_holder(path)
        if timeout_s is not None and waited >= timeout_s:
            who = current.describe() if current else "another process"
            pid = f" (held by process {current.pid})" if current else ""
            raise WarehouseBusyError(
                f"The warehouse {warehouse} is being written by {who}{pid}, and stayed busy "
                f"for {timeout_s:g}s. DuckDB allows one writer at a time: wait for it to "
                "finish, then retry."
            )
        if on_wait is not None and now >= next_report:
            on_wait(current, waited)
            next_report = now + report_every_s
        if interrupted is not None and interrupted():
            raise KeyboardInterrupt(f"stopped waiting for the writer lock of {warehouse}")
        time.sleep(poll_s)


def _write(fd: int, holder: Holder) -> None:
    data = holder.model_dump_json().encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _leave(path: Path) -> None:
    with _registry_lock:
        held = _held[path]
        held.depth -= 1
        if held.depth:
            return
        del _held[path]
    try:
        _write(held.fd, held.holder.model_copy(update={"released": True}))
    finally:
        os.close(held.fd)  # closing the descriptor releases the lock


def held_by_this_process(warehouse_path: Path | str) -> bool:
    with _registry_lock:
        return lock_path(warehouse_path).absolute() in _held
