"""A worker's /healthz and /readyz beside its metrics, against the real PostgreSQL and broker."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from consentry.eventing import health, metrics
from consentry.eventing.health import DependencySettings, Health, dependency_checks

pytestmark = pytest.mark.integration


async def _get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        return await client.get(path)


async def test_ready_when_postgresql_and_the_broker_answer(
    pg_server_dsn: str, kafka_bootstrap: str
) -> None:
    checks = dependency_checks(
        DependencySettings(database_url=pg_server_dsn, kafka_bootstrap_servers=kafka_bootstrap)
    )
    assert sorted(checks) == ["broker", "database"]
    server, _ = health.serve(
        0, "127.0.0.1", Health(asyncio.get_running_loop(), checks), metrics.REGISTRY
    )
    try:
        port = server.server_port
        live = await _get(port, "/healthz")
        assert (live.status_code, live.json()) == (200, {"status": "ok", "loop": "ok"})
        ready = await _get(port, "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"loop": "ok", "database": "ok", "broker": "ok"}
        scraped = await _get(port, "/metrics")
        assert scraped.status_code == 200
        assert "consentry_dead_letters" in scraped.text
    finally:
        server.shutdown()
        server.server_close()


async def test_not_ready_names_the_dependency_that_does_not_answer(pg_server_dsn: str) -> None:
    checks = dependency_checks(
        DependencySettings(database_url=pg_server_dsn, kafka_bootstrap_servers="127.0.0.1:9")
    )
    server, _ = health.serve(
        0, "127.0.0.1", Health(asyncio.get_running_loop(), checks), metrics.REGISTRY
    )
    try:
        ready = await _get(server.server_port, "/readyz")
        assert ready.status_code == 503
        document = ready.json()
        assert document["status"] == "unavailable"
        assert document["checks"]["database"] == "ok"
        assert document["checks"]["broker"].startswith("failed: ")
        # Alive all the same: the process is not stuck, its broker is away.
        assert (await _get(server.server_port, "/healthz")).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_blocked_event_loop_is_not_alive() -> None:
    loop = asyncio.new_event_loop()  # never run: as a worker stuck in a blocking call
    try:
        alive, document = Health(loop, {}).liveness()
        assert not alive
        assert document == {"status": "unavailable", "loop": "failed: TimeoutError"}
    finally:
        loop.close()
