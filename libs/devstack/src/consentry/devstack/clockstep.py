"""Step the wall clock of ONE dev-stack child process, for the fault suite (issue 8).

A real clock step (NTP correcting a drifted host, a VM resumed from a snapshot) moves the
wall clock only: `time.time()`, `datetime.now()`, never `time.monotonic()`. time-machine
patches exactly those at the C level in one process, so everything in that process (our
code, asyncpg, aiokafka, faust, structlog) sees the stepped clock, while asyncio's timers,
PostgreSQL's `now()` and the other processes keep the true time.

The child side is inert unless its environment asks for it. `ClockStep.env` gives a child:
- `PYTHONPATH` with `clockshim/` first, whose `sitecustomize` calls `install_from_environment()`
  when the interpreter starts (before `-m consentry.<service>` runs);
- `CONSENTRY_FAULT_CLOCK_OFFSET_SECONDS`: the offset at start (may be negative);
- `CONSENTRY_FAULT_CLOCK_FILE`: a file holding the offset; a daemon thread of the child reads
  it every 20 ms, steps the clock when it changes and writes the offset it applied to
  `<file>.applied`, which `ClockStep.wait_applied()` waits for (no sleeping on a guess).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import threading
import time
from pathlib import Path

ENV_OFFSET = "CONSENTRY_FAULT_CLOCK_OFFSET_SECONDS"
ENV_FILE = "CONSENTRY_FAULT_CLOCK_FILE"
SHIM_DIR = Path(__file__).with_name("clockshim")
_POLL_SECONDS = 0.02


def _read_offset(text: str, source: str) -> float:
    try:
        value = float(text.strip() or "0")
    except ValueError:
        raise ValueError(f"{source}: want a number of seconds, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{source}: want a finite number of seconds, got {value}")
    return value


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old or the new content, never a half-written file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    partial.replace(path)


def install_from_environment() -> bool:
    """Start travelling if `ENV_OFFSET` or `ENV_FILE` is set (else do nothing); True if so."""
    initial, control = os.environ.get(ENV_OFFSET), os.environ.get(ENV_FILE)
    if initial is None and control is None:
        return False
    import time_machine  # only here: a process without the variables never imports it

    applied = _read_offset(initial or "0", ENV_OFFSET)
    traveller = time_machine.travel(time.time() + applied, tick=True).start()
    print(f"clockstep: wall clock of pid {os.getpid()} offset {applied:+.3f}s", file=sys.stderr)
    if control is None:
        return True
    path = Path(control)
    _write_atomically(path.with_name(path.name + ".applied"), repr(applied))

    def follow() -> None:
        nonlocal applied
        while True:
            time.sleep(_POLL_SECONDS)  # a thread of its own: nothing to await
            with contextlib.suppress(OSError, ValueError):
                wanted = _read_offset(path.read_text(), str(path))
                if wanted != applied:
                    traveller.shift(wanted - applied)
                    applied = wanted
                    print(f"clockstep: wall clock stepped to {applied:+.3f}s", file=sys.stderr)
                    _write_atomically(path.with_name(path.name + ".applied"), repr(applied))

    threading.Thread(target=follow, name="clockstep", daemon=True).start()
    return True


class ClockStep:
    """The test's handle on one child's wall clock: `env` for the child, `step()` to move it."""

    def __init__(self, directory: Path, *, name: str = "clock", offset: float = 0.0) -> None:
        self.path = directory / f"{name}.offset"
        self.offset = float(offset)
        _write_atomically(self.path, repr(offset))

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that make a child follow this clock (laid over ours)."""
        path = os.pathsep.join(p for p in (str(SHIM_DIR), os.environ.get("PYTHONPATH")) if p)
        return {"PYTHONPATH": path, ENV_OFFSET: repr(self.offset), ENV_FILE: str(self.path)}

    def step(self, seconds: float) -> float:
        """Move the child's wall clock by `seconds` (negative: backwards); the new offset."""
        self.offset += seconds
        _write_atomically(self.path, repr(self.offset))
        return self.offset

    def applied(self) -> float | None:
        """The offset the child has applied (None: no child follows this clock yet)."""
        try:
            return _read_offset(self.path.with_name(self.path.name + ".applied").read_text(), "")
        except (OSError, ValueError):
            return None

    async def wait_applied(self, seconds: float = 10.0) -> None:
        """Wait until the child runs on the current offset."""
        async with asyncio.timeout(seconds):
            while self.applied() != self.offset:  # noqa: ASYNC110 - another process writes a file
                await asyncio.sleep(_POLL_SECONDS)
