"""Embedded PostgreSQL 16 (binaries from the pgserver wheel), run as our own child process."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from consentry.devstack.child import ChildServer
from consentry.devstack.pgdata import (
    OWNER_FILE,
    PostgresError,
    check_traversable,
    postmaster_ready,
    stop_leftovers,
    system_user,
)
from consentry.devstack.spawning import (
    death_signal_preexec,
    scratch_dir,
)

_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOG_NAME = "devstack-postgres.log"
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def postgres_bin_dir() -> Path:
    """Directory of pgserver's PostgreSQL binaries, found without importing `pgserver`."""
    # Importing pgserver evaluates platformdirs at class-definition time, which emits a
    # RuntimeDirWarning when XDG_RUNTIME_DIR is unset; locating the package does not.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the pgserver package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, indented, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text) or "    (empty log)"


class EmbeddedPostgres(ChildServer):
    """A PostgreSQL server on a free loopback port, as a child process of ours.

    Persistent mode keeps `data_dir` across runs (initdb only when it is new). Throw-away mode
    (`throwaway=True`, no `data_dir`) uses a temporary directory, turns durability off for
    speed, and deletes everything on stop.
    """

    stop_signal = signal.SIGINT  # fast shutdown (SIGTERM would wait for every client)
    error = PostgresError
    what = "PostgreSQL"

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        throwaway: bool = False,
        durable: bool | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """`durable` (default: not `throwaway`) keeps PostgreSQL's crash safety (fsync,
        synchronous commit); a throw-away cluster for tests turns it off for speed, which a
        benchmark of commit-bound work must not do."""
        if throwaway == (data_dir is not None):
            raise ValueError("give a data_dir (persistent) or throwaway=True, not both")
        super().__init__(
            host=host, port=port, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self._data_dir = data_dir.resolve() if data_dir is not None else None
        self._throwaway = throwaway
        self._durable = (not throwaway) if durable is None else durable
        # self._scratch holds the socket dir (and the data dir when throw-away)

    @property
    def dsn(self) -> str:
        """Server DSN (`postgresql://postgres@127.0.0.1:PORT/postgres`) once started."""
        return self.address

    def _start(self) -> str:
        bin_dir = postgres_bin_dir()
        user = system_user()
        self._scratch = scratch_dir("consentry-pg-")  # short: socket paths must stay < 107
        data = self._data_dir or self._scratch / "pgdata"
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        if user is not None:
            for path in (self._scratch, data):
                os.chown(path, user.pw_uid, user.pw_gid)
            check_traversable(data, user.pw_uid)
            check_traversable(bin_dir, user.pw_uid)
        stop_leftovers(data)
        if not (data / "PG_VERSION").exists():
            self._initdb(bin_dir, data, user)
        port = self._spawn_on_a_port(lambda port: self._spawn(bin_dir, data, user, port))
        if port is not None:
            return f"postgresql://postgres@{self._host}:{port}/postgres"
        log = data / _LOG_NAME
        raise PostgresError(f"postgres failed to start; log {log}:\n{_tail(log)}")

    def _initdb(self, bin_dir: Path, data: Path, user: pwd.struct_passwd | None) -> None:
        if any(data.iterdir()):
            raise PostgresError(f"{data} is not empty and not a PostgreSQL data directory")
        base = [str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"]
        base += ["--encoding=utf8"]
        for locale in (["--locale=C.UTF-8"], ["--no-locale"]):  # C.UTF-8 is not everywhere
            result = subprocess.run(  # noqa: S603
                base + locale,
                capture_output=True,
                text=True,
                check=False,
                env=_child_env(),
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
            if result.returncode == 0:
                return
            for leftover in data.iterdir():  # initdb may leave a partial cluster behind
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        raise PostgresError(f"initdb failed for {data}:\n{result.stdout}\n{result.stderr}")

    def _spawn(self, bin_dir: Path, data: Path, user: pwd.struct_passwd | None, port: int) -> bool:
        """Start the postmaster; True once it accepts connections, False if it exited."""
        assert self._scratch is not None
        output = self._open_log(data / _LOG_NAME)
        (data / OWNER_FILE).write_text(str(os.getpid()))
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-h", self._host, "-p", str(port)]
        argv += ["-k", str(self._scratch), "-c", "max_connections=200"]
        if not self._durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", setting]
        self._proc = subprocess.Popen(  # noqa: S603
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # SIGINT = fast shutdown: clients disconnected, clean checkpoint.
            preexec_fn=death_signal_preexec(signal.SIGINT),  # noqa: PLW1509
            env=_child_env(),
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if postmaster_ready(data, self._proc.pid) and _accepts(self._host, port):
                return True
            time.sleep(0.02)
        raise PostgresError(
            f"postgres did not become ready within {self._start_timeout:.0f}s; "
            f"log {data / _LOG_NAME}:\n{_tail(data / _LOG_NAME)}"
        )


def _child_env() -> dict[str, str]:
    """A minimal environment for PostgreSQL: no PG* variables of ours leak into it."""
    return {name: os.environ[name] for name in _ENV_KEEP if name in os.environ}


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def database_dsn(server_dsn: str, name: str) -> str:
    """`server_dsn` with its database path replaced by `name` (query parameters kept)."""
    parts = urlsplit(server_dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("a postgresql:// URL is required (key=value DSNs are not supported)")
    return urlunsplit(parts._replace(path="/" + _checked_name(name)))


def with_user(dsn: str, user: str) -> str:
    """`dsn` with its user replaced by `user` (no password: trust or peer authentication)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{_checked_name(user)}@{host}"))


async def ensure_login_role(dsn: str, login: str, member_of: str) -> None:
    """Create the login role `login` unless it exists and make it a member of `member_of`.
    Roles are cluster-wide: stacks on one server (two test workers) may do both at once."""
    conn = await asyncpg.connect(dsn)
    try:
        with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            await conn.execute(f"CREATE ROLE {_checked_name(login)} LOGIN")
        with contextlib.suppress(asyncpg.UniqueViolationError):  # granted concurrently
            await conn.execute(f"GRANT {_checked_name(member_of)} TO {_checked_name(login)}")
    finally:
        await conn.close()


def _checked_name(name: str) -> str:
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"invalid database name {name!r} (want {_DATABASE_NAME.pattern})")
    return name


async def ensure_database(server_dsn: str, name: str) -> str:
    """Create database `name` on the server if it is missing; return its DSN."""
    quoted = f'"{_checked_name(name)}"'  # validated: no quote can be inside
    conn = await asyncpg.connect(server_dsn, timeout=10)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()
    return database_dsn(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting its sessions (WITH (FORCE))."""
    quoted = f'"{_checked_name(name)}"'
    conn = await asyncpg.connect(server_dsn, timeout=10)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()
