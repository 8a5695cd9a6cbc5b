"""A service process that a test owns: start it, kill it -9 mid-work, start it again.

The dev stack's `Supervisor` stops everything when one child exits, which is right for
`make run` and wrong for a test that kills a process on purpose: such processes run as
`Worker`s instead. Each appends its output to one log file across restarts, so a test can
wait for a line the new incarnation writes (`start(ready=...)`) and search every log for
personal data afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from consentry.devstack.processes import http_status
from consentry.devstack.spawning import death_signal_preexec

__all__ = ["Worker", "WorkerExitedError"]


class WorkerExitedError(RuntimeError):
    """The worker exited while the test waited for it to become ready."""


class Worker:
    """One process (`argv`, `env` laid over ours) the test can kill -9 and restart."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log: Path,
        ready_line: str | None = None,
        ready_url: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        self.ready_line = ready_line
        self.ready_url = ready_url
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @classmethod
    def module(
        cls,
        service: str,
        command: str,
        *,
        env: Mapping[str, str],
        log_dir: Path,
        ready_line: str | None = None,
        ready_url: str | None = None,
    ) -> Worker:
        """`python -m consentry.<service> <command>`, logging to `<service>.<command>.log`."""
        return cls(
            [sys.executable, "-m", f"consentry.{service}", command],
            env=env,
            log=log_dir / f"{service}.{command}.log",
            ready_line=ready_line,
            ready_url=ready_url,
        )

    @property
    def running(self) -> bool:
        """Started and not exited (a killed worker is not running until started again)."""
        return self.process is not None and self.process.returncode is None

    async def start(self, *, wait: bool = True, seconds: float = 120) -> None:
        """Start the process; with `wait`, until its ready line or URL answers (a busy
        machine takes seconds to import and connect: tests time their own work only)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:  # the child keeps its own descriptor
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                # Dies with the test process, even when the test process is killed -9.
                preexec_fn=death_signal_preexec(signal.SIGTERM),
            )
        self.starts += 1
        if wait:
            await self.wait_ready(offset, seconds)

    async def wait_ready(self, offset: int = 0, seconds: float = 120) -> None:
        """Wait until the ready line appears after `offset` in the log, or the URL answers."""
        if self.ready_line is None and self.ready_url is None:
            return
        async with asyncio.timeout(seconds):
            while not await self._ready(offset):
                if self.process is None or self.process.returncode is not None:
                    code = None if self.process is None else self.process.returncode
                    raise WorkerExitedError(f"{self.argv[2:]} exited ({code}): {self.tail()}")
                await asyncio.sleep(0.1)

    async def _ready(self, offset: int) -> bool:
        if self.ready_url is not None:
            return await http_status(self.ready_url, seconds=1.0) == 200
        assert self.ready_line is not None
        return self.ready_line in self.log.read_text(errors="replace")[offset:]

    async def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` and wait for the exit; its return code (None if it was not running)."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(sig)
        try:
            return await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            return await process.wait()

    def tail(self, chars: int = 2000) -> str:
        """The end of the log, for failure messages."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"
