"""One local process of the dev harness: spawned, awaited, stopped and found again by its pid.

Every local service (PostgreSQL, the Tansu broker, redis-server, the API emulators) is a child
process on 127.0.0.1 with the same life: spawned in its own session (a Ctrl-C of the test run
must not race our own shutdown) with its output appended to a log file, ready once a check
passes before a deadline (or failing with the log's tail when it exits first), stopped by pid
with escalation (its own shutdown signal, then SIGKILL) and waited for, or detached to outlive
us and be stopped later by its pid (``medallion services`` keeps it in the service's record,
``$MEDALLION_HOME/services/<name>.json``, its pidfile). This module is that life, once.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Self

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (a small race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def read_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` of a log, for an error message (``(no log)`` when there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs: reaps it first when it is our own exited child (a zombie would
    still answer ``kill(pid, 0)``), and works as well for a process another one started."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, and it has exited
    except ChildProcessError:
        pass  # not our child (started by another `medallion` process)
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def stop_pid(
    pid: int, *, signals: Sequence[signal.Signals] = (signal.SIGTERM,), timeout_s: float = 5.0
) -> bool:
    """Stop a process known only by its pid (one that outlived its starter): each of
    ``signals`` in turn, ``timeout_s`` apart, then SIGKILL. Returns whether it was running."""
    if not pid_alive(pid):
        return False
    for signum in (*signals, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
    return True


class NotReady(Exception):
    """Raised by a ready check for "not yet": the wait goes on, and its message is the reason
    given if the deadline passes."""


class ProcessExited(RuntimeError):
    """The process exited before it was ready (the message holds its log's tail)."""


class LocalProcess:
    """One child process: ``spawn``, ``wait_ready``, ``stop`` (or ``kill`` / ``detach``).

    ``name`` is how errors name it (``tansu``, ``postgres``); ``log_path`` receives its
    stdout and stderr, appended across restarts (0600: a server may log what a client sent).
    """

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = Path(log_path)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    @property
    def pid(self) -> int | None:
        """The pid while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        **popen: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session; stderr (and stdout, unless ``stdout`` is given,
        such as a pipe to read a ready line from) go to the log. ``popen`` passes on
        (``env``, ``cwd``, ``user``, ...)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if stdout == subprocess.PIPE:
            # Unbuffered, so no line read ahead hides in a buffer while ``read_line`` polls.
            popen.setdefault("bufsize", 0)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "ab") as log:
            self._process = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=log if stdout is None else stdout,
                stderr=log,
                start_new_session=True,
                **popen,
            )
        return self._process

    def wait_ready(self, check: Callable[[], bool], deadline: float, *, where: str = "") -> None:
        """Call ``check`` until it returns True (it may raise ``NotReady`` with a reason, or
        any other error to give up at once) or the monotonic ``deadline`` passes. The process
        exiting first is a ``ProcessExited``, the deadline a ``TimeoutError``; both name the
        log and quote its tail. The process is left as it is: the caller decides to stop it."""
        started = time.monotonic()
        last_error = "not started"
        while True:
            process = self._process
            if process is None:
                raise ProcessExited(f"{self.name} was stopped before it was ready")
            if process.poll() is not None:
                raise ProcessExited(
                    f"{self.name} exited with {process.returncode}; "
                    f"{self.log_path}:\n{read_tail(self.log_path)}"
                )
            try:
                if check():
                    return
            except NotReady as exc:
                last_error = str(exc) or last_error
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        at = f" on {where}" if where else ""
        raise TimeoutError(
            f"{self.name}{at} not ready after {time.monotonic() - started:.0f} s "
            f"({last_error}); {self.log_path}:\n{read_tail(self.log_path)}"
        )

    def read_line(self, prefix: bytes, deadline: float) -> str:
        """Wait for a line starting with ``prefix`` on the process's stdout (spawned with
        ``stdout=subprocess.PIPE``), such as the base URL an emulator prints once listening."""
        process = self._process
        assert process is not None and process.stdout is not None, "spawn with stdout=PIPE"

        def printed() -> bool:
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                if not selector.select(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
                    raise NotReady("nothing printed yet")
            line = process.stdout.readline()
            if line.startswith(prefix):
                found.append(line.decode().strip())
                return True
            if not line:
                process.wait(timeout=5)  # end of output: it is exiting
            raise NotReady(f"printed {line[:200]!r}")

        found: list[str] = []
        self.wait_ready(printed, deadline)
        return found[0]

    def stop(
        self,
        *,
        signals: Sequence[signal.Signals] = (signal.SIGTERM,),
        timeout_s: float = 5.0,
        grace_s: float = 5.0,
    ) -> None:
        """Send the first of ``signals`` and wait up to ``timeout_s``; then each further one
        with ``grace_s``; then SIGKILL, and wait until it is gone (no zombie left)."""
        process, self._process = self._process, None
        try:
            if process is None or process.poll() is not None:
                return
            for i, signum in enumerate(signals):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=timeout_s if i == 0 else grace_s)
                    return
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
        finally:
            self._close(process)

    def kill(self) -> None:
        """SIGKILL it and wait: a crash, for tests."""
        self.stop(signals=(), timeout_s=0)

    def detach(self) -> int:
        """Leave it running after this object is gone (``medallion services up``); return its
        pid, by which it is stopped later (``stop_pid``)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        self._close(process)  # it keeps its own ends of the pipes; we keep no handle to it
        return process.pid

    @staticmethod
    def _close(process: subprocess.Popen[bytes] | None) -> None:
        if process is not None:
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()


class Service:
    """Anything of the harness that is started and stopped (a local server process, an
    in-process API emulator): ``with Service(...) as service``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalServer(Service):
    """What every local server class shares around its ``LocalProcess``: its pid, and
    ``restart`` on the same port (so clients' addresses stay valid)."""

    _process: LocalProcess

    @property
    def pid(self) -> int | None:
        """Its pid while it runs."""
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    def restart(self) -> Self:
        self.stop()
        return self.start()


def stop_session(process: subprocess.Popen[Any], *, grace_s: float = 3.0) -> None:
    """Stop a child started with ``start_new_session=True`` and everything in its process
    group: SIGTERM to the child (its own graceful shutdown), up to ``grace_s`` to exit, then
    SIGKILL to whatever is left of the group, such as a gRPC code server ``dagster dev``
    leaves behind as an orphan."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
