"""Running a long-lived worker process: stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from consentry.eventing.logs import get_logger

log = get_logger(__name__)

Worker = Callable[[asyncio.Event], Awaitable[None]]


async def _run(worker: Worker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await worker(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run_worker(worker: Worker) -> None:
    """Run `worker(stop)` until it returns; SIGTERM or SIGINT sets `stop`."""
    asyncio.run(_run(worker))
