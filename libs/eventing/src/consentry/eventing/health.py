"""A worker's health next to its metrics: `GET /healthz` and `GET /readyz` on
`CONSENTRY_METRICS_PORT` (every other path answers the Prometheus metrics, as before).

`/healthz` (liveness): the process's event loop runs a trivial task within two seconds (a
worker stuck in a blocking call, or whose loop is gone, fails it). `/readyz` (readiness):
also its dependencies answer: PostgreSQL (`SELECT 1` on a new connection to
`CONSENTRY_DATABASE_URL`) and the broker (a metadata request to
`CONSENTRY_KAFKA_BOOTSTRAP_SERVERS`), each within `CHECK_SECONDS`; 503 with the failing
check named otherwise. The APIs have their own `/healthz` and `/readyz`
(`consentry.httpapi.server.health_router`), which check PostgreSQL only: with the
transactional outbox an API keeps accepting writes while the broker is away, so a broker
outage must not take it out of rotation.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import asyncpg
from aiokafka import AIOKafkaClient
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from consentry.eventing.settings import ConsentrySettings

CHECK_SECONDS = 2.0
Check = Callable[[], Awaitable[None]]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class DependencySettings(ConsentrySettings):
    """What a worker depends on, when it is configured (a worker may use only one)."""

    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None


async def database_ready(url: str) -> None:
    """PostgreSQL answers `SELECT 1` on a new connection."""
    conn = await asyncpg.connect(url, timeout=CHECK_SECONDS)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


async def broker_ready(bootstrap: str) -> None:
    """A broker of `bootstrap` answers a metadata request."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(CHECK_SECONDS * 1000),
        client_id="consentry-readiness",
    )
    try:
        await client.bootstrap()
    finally:
        await client.close()


def dependency_checks(settings: DependencySettings) -> dict[str, Check]:
    """The readiness checks of a worker with `settings`."""
    checks: dict[str, Check] = {}
    if settings.database_url:
        url = settings.database_url
        checks["database"] = lambda: database_ready(url)
    if settings.kafka_bootstrap_servers:
        bootstrap = settings.kafka_bootstrap_servers
        checks["broker"] = lambda: broker_ready(bootstrap)
    return checks


async def _alive() -> None:
    return None


async def _within(check: Check, seconds: float) -> None:
    await asyncio.wait_for(check(), seconds)


class Health:
    """Runs the checks on the worker's event loop `loop` for the HTTP server's threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, checks: Mapping[str, Check]) -> None:
        self._loop = loop
        self._checks = dict(checks)

    def _run(self, check: Check) -> str:
        """`check()` on the loop within `CHECK_SECONDS`: "ok" or "failed: <error>". The
        coroutine is made on the loop itself, so a loop that never gets to it (stuck) leaves
        nothing behind."""
        outcome: Future[None] = Future()

        def settle(task: asyncio.Task[None]) -> None:
            if outcome.done():
                return
            if task.cancelled():
                outcome.set_exception(TimeoutError())
            elif (error := task.exception()) is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(None)

        def start() -> None:
            if outcome.set_running_or_notify_cancel():  # False: the probe gave up already
                task = self._loop.create_task(_within(check, CHECK_SECONDS))
                task.add_done_callback(settle)

        try:
            self._loop.call_soon_threadsafe(start)
            outcome.result(timeout=CHECK_SECONDS + 1)
        except FutureTimeoutError:
            outcome.cancel()
            return "failed: TimeoutError"
        except Exception as exc:  # a probe reports, it does not raise
            return f"failed: {type(exc).__name__}"
        return "ok"

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """The event loop runs a task."""
        state = self._run(_alive)
        return state == "ok", {"status": "ok" if state == "ok" else "unavailable", "loop": state}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """The event loop and every dependency answer."""
        results = {"loop": self._run(_alive)}
        results |= {name: self._run(check) for name, check in self._checks.items()}
        ready = all(state == "ok" for state in results.values())
        return ready, {"status": "ok" if ready else "unavailable", "checks": results}


def wsgi_app(health: Health, metrics_app: Callable[..., Iterable[bytes]]) -> Any:
    """`/healthz` and `/readyz` from `health`, anything else from `metrics_app`."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, document = health.liveness() if path == "/healthz" else health.readiness()
            body = json.dumps(document).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        return metrics_app(environ, start_response)

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log line per probe or scrape on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


def serve(
    port: int, host: str, health: Health, registry: Any
) -> tuple[ThreadingWSGIServer, threading.Thread]:
    """Serve health and metrics on `host:port` from a daemon thread (port 0: a free one)."""
    server = make_server(
        host,
        port,
        wsgi_app(health, make_wsgi_app(registry)),
        ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="consentry-health", daemon=True)
    thread.start()
    return server, thread
