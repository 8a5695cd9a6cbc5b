"""Running a long-lived worker process: stop cleanly on SIGTERM/SIGINT; metrics on a port."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from consentry.eventing import metrics, tracing
from consentry.eventing.logs import get_logger
from consentry.eventing.settings import load_settings

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
    """Run `worker(stop)` until it returns; SIGTERM or SIGINT sets `stop`. With
    `CONSENTRY_METRICS_PORT` set, the process's metrics are served there (`GET /metrics`)."""
    settings = load_settings(metrics.MetricsSettings)
    tracing.configure(settings.service_name)  # only when OTEL_* variables ask for it
    server = metrics.serve_metrics(settings)
    if server is not None:
        log.info("serving metrics", port=server.server_port)
    asyncio.run(_run(worker))
