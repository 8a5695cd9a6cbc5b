"""Embedded PostgreSQL: start, query, stop, leftovers; databases on a (session) server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from consentry.devstack.pgdata import OWNER_FILE, PostgresError, system_user
from consentry.devstack.postgres import (
    EmbeddedPostgres,
    database_dsn,
    drop_database,
    ensure_database,
    postgres_bin_dir,
    with_user,
)
from consentry.devstack.pytest_plugin import FreshDatabase
from consentry.devstack.spawning import free_port


async def _query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        if ";" in sql:
            return await conn.execute(sql)
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _postgres_pids(data: Path) -> list[int]:
    return [
        proc.pid
        for proc in psutil.process_iter(["name", "cmdline"])
        if proc.info["name"] == "postgres" and str(data) in (proc.info["cmdline"] or [])
    ]


def _gone(path: Path) -> bool:
    return not path.exists()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: as root, PostgreSQL runs as `pgserver`, which cannot traverse
    # /tmp/pytest-of-root (mode 0700).
    base = Path(tempfile.mkdtemp(prefix="ct-pgdata-"))
    base.chmod(0o755)
    yield base / "pgdata"
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.integration
async def test_throwaway_server_starts_answers_and_leaves_nothing_behind() -> None:
    server = EmbeddedPostgres(throwaway=True)
    dsn = server.start()
    try:
        assert dsn.startswith("postgresql://postgres@127.0.0.1:")
        assert await _query(dsn, "SELECT current_setting('server_version_num')::int / 10000") == 16
        assert await _query(dsn, "SHOW fsync") == "off"
        assert await _query(dsn, "SHOW max_connections") == "200"
        pid = server.pid
        assert pid is not None
        data = Path(str(await _query(dsn, "SHOW data_directory")))
    finally:
        server.stop()
    assert not psutil.pid_exists(pid)
    assert _postgres_pids(data) == []
    assert _gone(data)
    server.stop()  # idempotent


@pytest.mark.integration
async def test_a_durable_throwaway_server_keeps_crash_safety() -> None:
    server = EmbeddedPostgres(throwaway=True, durable=True)  # what the benchmarks use
    dsn = server.start()
    try:
        assert await _query(dsn, "SHOW fsync") == "on"
        assert await _query(dsn, "SHOW synchronous_commit") == "on"
    finally:
        server.stop()


@pytest.mark.integration
async def test_persistent_data_survives_a_restart(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as server:
        await _query(server.dsn, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        assert await _query(server.dsn, "SHOW fsync") == "on"
    with EmbeddedPostgres(data_dir) as server:
        assert await _query(server.dsn, "SELECT x FROM kept") == 42
    assert _postgres_pids(data_dir) == []


@pytest.mark.integration
def test_a_data_dir_in_use_is_refused(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir), pytest.raises(PostgresError, match="in use"):
        EmbeddedPostgres(data_dir).start()


@pytest.mark.integration
def test_an_orphaned_postgres_from_a_crashed_run_is_stopped(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir):
        pass  # initdb
    dead = subprocess.Popen(["true"])
    dead.wait()
    (data_dir / OWNER_FILE).write_text(str(dead.pid))  # its owner is gone
    user = system_user()
    subprocess.run(  # the shell exits at once: postgres is orphaned, as after a crash
        [
            *("/bin/sh", "-c", '"$0" -D "$1" -h 127.0.0.1 -p "$2" -k "$3" >/dev/null 2>&1 &'),
            *(str(postgres_bin_dir() / "postgres"), str(data_dir), str(free_port()), "/tmp"),
        ],
        check=True,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
    )
    for _ in range(100):
        if (orphans := _postgres_pids(data_dir)) and (data_dir / "postmaster.pid").exists():
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert orphans
    with EmbeddedPostgres(data_dir) as server:
        assert _postgres_pids(data_dir) == [server.pid]
    assert not any(_alive(pid) for pid in orphans)


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a parent that does not reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_throwaway_and_data_dir_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        EmbeddedPostgres(tmp_path, throwaway=True)
    with pytest.raises(ValueError, match="not both"):
        EmbeddedPostgres()


def test_database_dsn_replaces_only_the_database() -> None:
    server = "postgresql://app:s3cret@db.example:5433/postgres?sslmode=require"
    assert database_dsn(server, "consentry_audit") == (
        "postgresql://app:s3cret@db.example:5433/consentry_audit?sslmode=require"
    )
    assert database_dsn("postgresql://h", "x") == "postgresql://h/x"


@pytest.mark.parametrize("name", ["", "Upper", "1abc", 'a"b', "a-b", "a" * 64, "x; DROP"])
async def test_invalid_database_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        await ensure_database("postgresql://nowhere/postgres", name)


@pytest.mark.integration
async def test_ensure_database_is_idempotent_and_drop_forces(pg_server_dsn: str) -> None:
    name = f"ct_ensure_{os.getpid()}"
    dsn = await ensure_database(pg_server_dsn, name)
    assert await ensure_database(pg_server_dsn, name) == dsn
    assert await _query(dsn, "SELECT current_database()") == name
    holder = await asyncpg.connect(dsn)  # a session still connected: FORCE ends it
    try:
        await drop_database(pg_server_dsn, name)
        await drop_database(pg_server_dsn, name)  # already gone: fine
    finally:
        await holder.close()
    exists = f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    assert await _query(pg_server_dsn, exists) == 0


@pytest.mark.integration
async def test_fresh_database_fixture(fresh_database: FreshDatabase, pg_server_dsn: str) -> None:
    one, two = await fresh_database("consent"), await fresh_database("consent")
    assert one != two
    name = str(await _query(one, "SELECT current_database()"))
    assert name.startswith("ct_")
    assert name.endswith("_consent")
    with pytest.raises(ValueError, match="label"):
        await fresh_database("Bad-Label")


def test_with_user_replaces_only_the_user() -> None:
    assert with_user("postgresql://postgres@127.0.0.1:5432/db?x=1", "app") == (
        "postgresql://app@127.0.0.1:5432/db?x=1"
    )
    assert with_user("postgresql://owner:pw@h/db", "app") == "postgresql://app@h/db"
    with pytest.raises(ValueError, match="invalid database name"):
        with_user("postgresql://h/db", "bad role")
