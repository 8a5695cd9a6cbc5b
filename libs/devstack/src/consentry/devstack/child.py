"""A server that runs as our child process: the lifecycle PostgreSQL and Tansu share."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from consentry.devstack.spawning import free_port, port_is_free, signal_group


class ChildServer:
    """Start/stop, pid, context manager, log file and scratch directory of one server child.

    Subclasses implement `_start()` (return the address clients use) and set `stop_signal`
    (the signal that asks the server to shut down) and `error` (their exception class).
    """

    stop_signal: signal.Signals = signal.SIGTERM
    error: type[Exception] = RuntimeError
    what = "server"

    def __init__(self, *, host: str, port: int, start_timeout: float, stop_timeout: float) -> None:
        self._host = host
        self._port = port
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._scratch: Path | None = None
        self._address: str | None = None

    @property
    def pid(self) -> int | None:
        """Pid of the server (also its process-group id) while running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def address(self) -> str:
        """Where clients connect, once started."""
        if self._address is None:
            raise self.error(f"the embedded {self.what} is not started")
        return self._address

    def start(self) -> str:
        """Start the server (once) and return its address; on failure leave nothing behind."""
        if self._proc is None:
            try:
                self._address = self._start()
            except BaseException:
                self.stop()
                raise
        return self.address

    def stop(self) -> None:
        """Ask the server to stop; SIGKILL its process group after the timeout; clean up."""
        proc, self._proc, self._address = self._proc, None, None
        if proc is not None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        self._open_log(None)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self) -> str:
        raise NotImplementedError

    def _open_log(self, path: Path | None) -> IO[bytes] | None:
        """Close the current log file and open `path` (None: just close)."""
        if self._log is not None:
            self._log.close()
        self._log = path.open("wb") if path is not None else None
        return self._log

    def _spawn_on_a_port(self, spawn: Callable[[int], bool]) -> int | None:
        """Call `spawn(port)` until it returns True (a port race lost is retried); the port."""
        for attempt in range(3):
            port = self._port or free_port(self._host)
            if not port_is_free(self._host, port):
                raise self.error(f"port {port} on {self._host} is busy (use port=0 for any)")
            if spawn(port):
                return port
            if self._port or attempt == 2:  # a fixed port, or the last try
                break
        return None
