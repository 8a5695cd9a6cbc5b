"""`python -m consentry.devstack run`: the whole stack in the foreground (what `make run` calls)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from consentry.devstack.stack import STARTUP_FAILURES, DevStack, DevStackSettings


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the stack until Ctrl-C / SIGTERM; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m consentry.devstack")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="start PostgreSQL, the broker and every service; Ctrl-C stops them all"
    )
    run.add_argument("--log-dir", type=Path, help="write each process's output to DIR/NAME.log")
    run.add_argument(
        "--no-processes",
        action="store_true",
        help="only servers, databases, topics and migrations (no service processes)",
    )
    args = parser.parse_args(argv)
    try:
        settings = DevStackSettings()
    except ValidationError as err:
        print(f"devstack: invalid settings (CONSENTRY_* variables):\n{err}", file=sys.stderr)
        return 2
    return asyncio.run(_run(settings, log_dir=args.log_dir, processes=not args.no_processes))


async def _run(settings: DevStackSettings, *, log_dir: Path | None, processes: bool) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[str] = []
    running = False

    def on_signal(sig: signal.Signals) -> None:
        if received:
            print(f"devstack: {sig.name} again; still stopping (up to ~10 s)", flush=True)
            return
        received.append(sig.name)
        print(f"\ndevstack: {sig.name} received, stopping everything", flush=True)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with DevStack(settings, start_processes=processes, log_dir=log_dir) as stack:
            print(stack.describe(), "Ctrl-C stops everything.", sep="\n", flush=True)
            running = True
            await stack.wait()
    except asyncio.CancelledError:
        if not received:
            raise
        task.uncancel()
        print("devstack: stopped", flush=True)
        return 0
    except STARTUP_FAILURES as err:
        what = "stopped because a process failed" if running else "cannot start"
        print(f"devstack: {what}:\n{err}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
