"""Running a long-lived worker process: stop cleanly on SIGTERM/SIGINT; metrics, liveness and
readiness on a port (`consentry.eventing.health`)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from consentry.eventing import health, metrics, tracing
from consentry.eventing.logs import get_logger
from consentry.eventing.settings import load_settings

log = get_logger(__name__)

Worker = Callable[[asyncio.Event], Awaitable[None]]


async def _run(worker: Worker, settings: metrics.MetricsSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    server = None
    if settings.metrics_port is not None:
        checks = health.dependency_checks(load_settings(health.DependencySettings))
        server, _ = health.serve(
            settings.metrics_port,
            settings.metrics_host,
            health.Health(loop, checks),
            metrics.REGISTRY,
        )
        log.info("serving metrics and health", port=server.server_port, checks=sorted(checks))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await worker(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if server is not None:
            server.shutdown()
            server.server_close()


def run_worker(worker: Worker) -> None:
    """Run `worker(stop)` until it returns; SIGTERM or SIGINT sets `stop`. With
    `CONSENTRY_METRICS_PORT` set, the process serves its metrics there (`GET /metrics`, any
    path), `GET /healthz` and `GET /readyz` (PostgreSQL and the broker answer)."""
    settings = load_settings(metrics.MetricsSettings)
    tracing.configure(settings.service_name)  # only when OTEL_* variables ask for it
    asyncio.run(_run(worker, settings))
