"""The clock-step hook: inert without its variables; steps one child's wall clock, live."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from consentry.devstack.clockstep import ENV_FILE, ENV_OFFSET, SHIM_DIR, ClockStep

# The child answers each line on stdin with its wall clock, its monotonic clock and whether
# time-machine is loaded. CLOCK_MONOTONIC is system-wide, so it compares with ours.
_PROBE = """
import sys, time
for _ in sys.stdin:
    print(time.time(), time.monotonic(), "time_machine" in sys.modules, flush=True)
"""


class Probe:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def ask(self) -> tuple[float, float, bool]:
        """(child wall clock - ours, child monotonic - ours, time-machine loaded)."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(b"?\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        wall, monotonic, loaded = line.decode().split()
        return float(wall) - time.time(), float(monotonic) - time.monotonic(), loaded == "True"


async def _probe(env: dict[str, str]) -> AsyncIterator[Probe]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROBE,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield Probe(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await process.wait()


async def test_a_child_without_the_variables_runs_on_the_true_clock() -> None:
    # The shim on the path is not enough: the variables switch it on.
    async for probe in _probe({"PYTHONPATH": str(SHIM_DIR)}):
        wall, _, loaded = await probe.ask()
        assert abs(wall) < 2
        assert not loaded


async def test_a_child_starts_with_an_offset_and_follows_live_steps(tmp_path: Path) -> None:
    clock = ClockStep(tmp_path, offset=-3600)
    assert clock.env[ENV_OFFSET] == "-3600.0"
    assert clock.env[ENV_FILE] == str(clock.path)
    async for probe in _probe(clock.env):
        await clock.wait_applied()
        wall, monotonic, loaded = await probe.ask()
        assert loaded
        assert abs(wall + 3600) < 2
        assert abs(monotonic) < 2  # a wall clock step never moves the monotonic clock
        clock.step(+7200)  # one step forwards, to +1 hour
        await clock.wait_applied()
        wall, monotonic, _ = await probe.ask()
        assert abs(wall - 3600) < 2
        assert abs(monotonic) < 2
        clock.step(-3600)  # back to the true time
        await clock.wait_applied()
        wall, _, _ = await probe.ask()
        assert abs(wall) < 2


def test_a_bad_offset_names_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "pass"],
        env={"PYTHONPATH": str(SHIM_DIR), ENV_OFFSET: "soon"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert f"{ENV_OFFSET}: want a number of seconds" in result.stderr
