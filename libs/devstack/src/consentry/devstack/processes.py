"""A small supervisor for the dev stack's service processes (see `spawning` for the rules)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from consentry.devstack.spawning import death_signal_preexec, group_alive, signal_group

_TAIL_LINES = 40
_TAIL_BYTES = 16_384


@dataclass(frozen=True)
class ProcessSpec:
    """A child to supervise: argv, extra environment (over ours), optional HTTP readiness URL."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None


class ChildExitedError(RuntimeError):
    """A supervised child exited while it should have been running (or a one-shot failed)."""

    def __init__(self, name: str, returncode: int | None, tail: Sequence[str]) -> None:
        shown = "\n".join(f"    {line}" for line in tail) or "    (no output)"
        how = f"exited with code {returncode}"
        if returncode is not None and returncode < 0:
            how = f"was killed ({signal.strsignal(-returncode) or -returncode})"
        super().__init__(f"process {name!r} {how}; last output:\n{shown}")
        self.name = name
        self.returncode = returncode


class ProcessNotReadyError(RuntimeError):
    """A child did not answer HTTP 200 on its ready URL in time."""


@dataclass
class _Child:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process
    lines: deque[str]
    log: Path | None = None  # the child writes here itself (no pipe)
    pump: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None

    @property
    def tail(self) -> list[str]:
        """The child's last lines of output (for error messages)."""
        if self.log is None:
            return list(self.lines)
        try:
            with self.log.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return text.splitlines()[-_TAIL_LINES:]


async def http_status(url: str, seconds: float = 2.0) -> int | None:
    """GET an `http://` URL and return its status code, or None if it cannot be reached."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    try:
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            try:
                writer.write(request.encode("ascii"))
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    fields = status_line.split()
    return int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else None


class Supervisor:
    """Start children, stream their output with a name prefix, stop them by process group.

    Nothing is restarted: a child that exits on its own is reported loudly, every other child
    is stopped, and `wait()` raises `ChildExitedError`.
    """

    def __init__(
        self,
        *,
        out: TextIO | None = None,
        log_dir: Path | None = None,
        ready_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._out = out if out is not None else sys.stdout
        self._log_dir = log_dir
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._children: list[_Child] = []
        self._failure: ChildExitedError | None = None
        self._failed = asyncio.Event()
        self._stop_task: asyncio.Task[None] | None = None

    @property
    def pids(self) -> dict[str, int]:
        """Pid (= process-group id) of every started child, by name."""
        return {child.spec.name: child.proc.pid for child in self._children}

    @property
    def failure(self) -> ChildExitedError | None:
        """The unexpected exit that brought the supervisor down, if any."""
        return self._failure

    async def start(self, specs: Sequence[ProcessSpec]) -> None:
        """Spawn every spec in order, then wait until each one's ready URL answers 200."""
        width = max([len(spec.name) for spec in specs] + [len(c.spec.name) for c in self._children])
        for spec in specs:
            self._children.append(await self._spawn(spec, width))
        started = self._children[-len(specs) :] if specs else []
        await asyncio.gather(*(self._wait_ready(child) for child in started))

    async def wait(self) -> None:
        """Block until a child exits unexpectedly, then raise its `ChildExitedError`."""
        await self._failed.wait()
        if self._stop_task is not None:
            await self._stop_task
        assert self._failure is not None
        raise self._failure

    async def run(self, spec: ProcessSpec) -> None:
        """Run a one-shot child to completion; raise `ChildExitedError` if it fails."""
        child = await self._spawn(spec, len(spec.name), one_shot=True)
        self._children.append(child)
        returncode = await child.proc.wait()
        if child.pump is not None:  # the last lines belong in the error message
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.pump), 2.0)
        if returncode != 0:
            raise ChildExitedError(spec.name, returncode, child.tail)

    async def stop(self) -> None:
        """SIGTERM every child's process group, SIGKILL what is left after the timeout."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop_all())
        await asyncio.shield(self._stop_task)  # a cancelled caller does not abort the stop

    async def _stop_all(self) -> None:
        for child in self._children:
            signal_group(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        for child in reversed(self._children):
            while group_alive(child.proc.pid) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling: there is no event for "group is empty"
            signal_group(child.proc.pid, signal.SIGKILL)
        for child in self._children:
            await child.proc.wait()
            for task in (child.pump, child.watcher):
                if task is not None:
                    # a grandchild that escaped the group may hold the pipe open: give up on it
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(task, 2.0)

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _spawn(self, spec: ProcessSpec, width: int, *, one_shot: bool = False) -> _Child:
        if self._stop_task is not None:
            raise RuntimeError("this supervisor is stopped; use a new one")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        # With a log directory the child writes its log file itself: its output never waits
        # for this event loop (a test's synchronous code may hold the loop for minutes, and a
        # full pipe would block the child). Otherwise a pipe, pumped to our output prefixed.
        log = None if self._log_dir is None else self._log_dir / f"{spec.name}.log"
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with contextlib.ExitStack() as files:
                stdout: Any = (
                    asyncio.subprocess.PIPE if log is None else files.enter_context(log.open("ab"))
                )
                proc = await asyncio.create_subprocess_exec(
                    *spec.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=death_signal_preexec(signal.SIGTERM),
                )
        except OSError as err:
            raise RuntimeError(
                f"cannot start process {spec.name!r} ({spec.argv[0]}): {err}"
            ) from err
        child = _Child(spec, proc, deque(maxlen=_TAIL_LINES), log)
        if log is None:
            child.pump = asyncio.create_task(self._pump(child, width))
        if not one_shot:
            child.watcher = asyncio.create_task(self._watch(child))
        return child

    async def _pump(self, child: _Child, width: int) -> None:
        assert child.proc.stdout is not None
        prefix = f"{child.spec.name:<{width}} | "
        pending = b""
        while chunk := await child.proc.stdout.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._emit(child, prefix, raw.decode("utf-8", "replace"))
        if pending:
            self._emit(child, prefix, pending.decode("utf-8", "replace"))

    def _emit(self, child: _Child, prefix: str, line: str) -> None:
        child.lines.append(line)
        with contextlib.suppress(OSError, ValueError):  # e.g. `make run | head`: keep running
            self._out.write(prefix + line + "\n")
            self._out.flush()

    async def _watch(self, child: _Child) -> None:
        returncode = await child.proc.wait()
        if self._stop_task is not None or self._failure is not None:
            return
        if child.pump is not None:  # let the last lines arrive before reporting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.pump), 2.0)
        self._failure = ChildExitedError(child.spec.name, returncode, child.tail)
        banner = "!" * 72
        self._out.write(f"{banner}\nsupervisor: {self._failure}\nsupervisor: stopping all\n")
        self._out.write(f"{banner}\n")
        self._out.flush()
        self._stop_task = asyncio.create_task(self._stop_all())
        self._failed.set()

    async def _wait_ready(self, child: _Child) -> None:
        url = child.spec.ready_url
        if url is None:
            return
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            if child.proc.returncode is not None or self._failure is not None:
                raise self._failure or ChildExitedError(
                    child.spec.name, child.proc.returncode, child.tail
                )
            if await http_status(url, seconds=1.0) == 200:
                return
            await asyncio.sleep(0.1)
        tail = "\n".join(f"    {line}" for line in child.tail) or "    (no output)"
        raise ProcessNotReadyError(
            f"process {child.spec.name!r} did not answer 200 at {url} within "
            f"{self._ready_timeout:.0f}s; last output:\n{tail}"
        )


async def run_once(spec: ProcessSpec, *, out: TextIO | None = None) -> None:
    """Run a one-shot command (e.g. migrations) with prefixed output; raise if it fails."""
    async with Supervisor(out=out) as supervisor:  # stopping reaps what it left in its group
        await supervisor.run(spec)
