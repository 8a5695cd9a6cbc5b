"""Housekeeping around a PostgreSQL data directory: the OS user, leftovers, stale locks."""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import psutil

SYSTEM_USER = "pgserver"  # the user pgserver itself runs PostgreSQL as when we are root
OWNER_FILE = "devstack-owner.pid"  # in the data dir: the pid of the process that started postgres


class PostgresError(RuntimeError):
    """The embedded PostgreSQL could not be set up, started or reached."""


def system_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: when we are root, return (creating it) `pgserver`."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        command = ["useradd", "--system", "--no-create-home", SYSTEM_USER]
        subprocess.run(command, check=True, capture_output=True)  # noqa: S603
        return pwd.getpwnam(SYSTEM_USER)


def check_traversable(path: Path, uid: int) -> None:
    """Fail clearly if user `uid` cannot reach `path` (every parent it does not own needs o+x)."""
    for parent in path.resolve().parents:
        info = parent.stat()
        if info.st_uid != uid and not info.st_mode & 0o001:
            raise PostgresError(
                f"PostgreSQL runs as user {SYSTEM_USER!r} (we are root) and cannot reach {path}: "
                f"{parent} is not world-traversable (chmod o+x it, or use another directory)"
            )


def postmaster_ready(data: Path, pid: int) -> bool:
    """postmaster.pid names our process and its status line says `ready`."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def stop_leftovers(data: Path) -> None:
    """Stop an orphaned postgres still running on `data` from a crashed run; clear stale locks."""
    pid_file = data / "postmaster.pid"
    listed: int | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        listed = int(pid_file.read_text().splitlines()[0])
    found = [
        proc for proc in psutil.process_iter(["name", "cmdline"]) if _serves(proc, data, listed)
    ]
    owner: int | None = None
    with contextlib.suppress(OSError, ValueError):
        owner = int((data / OWNER_FILE).read_text())
    for proc in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            # Ours (OWNER_FILE) if its owner is alive; someone else's unless it is an orphan.
            owned = psutil.pid_exists(owner) if owner is not None else proc.ppid() != 1
            if owned:
                raise PostgresError(
                    f"{data} is in use by a running postgres (pid {proc.pid}, started by pid "
                    f"{owner or proc.ppid()}); is another dev stack running? stop it first"
                )
            proc.send_signal(signal.SIGINT)
            if not _gone(proc, 10):
                proc.kill()
                if not _gone(proc, 5):
                    raise PostgresError(f"could not stop the leftover postgres (pid {proc.pid})")
    if listed is not None and not found:
        pid_file.unlink(missing_ok=True)  # stale: its pid is dead or now another program's


def _gone(proc: psutil.Process, seconds: float) -> bool:
    """Wait until `proc` has exited; a zombie counts as gone (its parent, not us, reaps it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _serves(proc: psutil.Process, data: Path, listed: int | None) -> bool:
    """A postmaster whose command line says `-D data`, or the one postmaster.pid names."""
    with contextlib.suppress(psutil.Error, OSError):
        if proc.info["name"] != "postgres":
            return False
        cmd: list[str] = proc.info["cmdline"] or []
        if any(a == "-D" and b == str(data) for a, b in itertools.pairwise(cmd)):
            return True
        return proc.pid == listed and Path(proc.cwd()) == data  # postgres chdirs to its data
    return False
