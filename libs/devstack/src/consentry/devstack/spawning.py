"""How the dev stack spawns and kills children: death signal, process groups, free ports.

Every child starts in its own session (`start_new_session=True`), so its pid is also its
process-group id and stopping it signals the whole group (grandchildren included). On Linux
each child also gets `PR_SET_PDEATHSIG`: if we are SIGKILLed, the kernel signals it. That is
best effort: it covers the direct child only (not grandchildren), and it fires when the
*thread* that spawned the child exits, so spawn from a long-lived thread (the main thread or
the event loop's thread, never a short-lived worker thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil

_PR_SET_PDEATHSIG = 1
_OWNER = ".owner"


def death_signal_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child receive `sig` when we die (Linux only, else None)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        # Runs in the child after fork and after `user=`/`group=` are applied (a credential
        # change would clear the setting), just before exec.
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # we died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Tell whether `host:port` can be bound (nobody listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT ok
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def group_alive(pgid: int) -> bool:
    """Tell whether any non-zombie process is left in process group `pgid`."""
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to process group `pgid`, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory `<tmp>/<prefix>*` (short path) owned by this process.

    Directories with the same prefix left behind by processes that died (SIGKILL: no
    cleanup ran) are deleted on the way.
    """
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        with contextlib.suppress(OSError, ValueError):
            if not psutil.pid_exists(int((old / _OWNER).read_text())):
                shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / _OWNER).write_text(str(os.getpid()))
    return path
