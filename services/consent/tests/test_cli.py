"""The consent service's command line, run as a real process against a real database."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import asyncpg
import httpx
import psutil
import pytest

pytestmark = pytest.mark.integration


async def cli(dsn: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consentry.consent",
        *args,
        env={**os.environ, "CONSENTRY_DATABASE_URL": dsn},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode()


async def test_migrate_is_idempotent(consent_db: str) -> None:
    code, out = await cli(consent_db, "migrate")  # the fixture applied them already
    assert code == 0, out
    assert "consent database: 0 migration(s) applied" in out


async def test_replay_queues_published_events_again(
    client: httpx.AsyncClient, db: asyncpg.Connection, consent_db: str, published_policy: str
) -> None:
    for purpose in ("performance", "targeting"):
        response = await client.put(
            f"/v1/subjects/u/consents/{purpose}",
            json={"status": "given", "policy_version": "2026-01"},
        )
        assert response.status_code == 200
    await db.execute("UPDATE eventing_outbox SET published_at = now()")  # as the relay would

    code, out = await cli(consent_db, "replay", "--since", "2000-01-01")
    assert code == 0, out
    # The dev tenant's directory announcement, policy.published and 2 decisions.
    assert "4 event(s) queued for re-publication" in out
    assert await db.fetchval("SELECT count(*) FROM eventing_outbox WHERE published_at IS NULL") == 4

    code, out = await cli(consent_db, "replay", "--since", "2999-01-01T00:00:00+0000")
    assert "0 event(s) queued" in out


async def test_a_missing_setting_is_named(consent_db: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consentry.consent",
        "migrate",
        env={k: v for k, v in os.environ.items() if k != "CONSENTRY_DATABASE_URL"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    expected = "error: invalid configuration: CONSENTRY_DATABASE_URL: Field required"
    assert out.decode().strip() == expected


async def test_the_api_runs_as_several_worker_processes(consent_db: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "CONSENTRY_DATABASE_URL": consent_db,
        "CONSENTRY_ENVIRONMENT": "test",
        "CONSENTRY_DEV_API_KEY": "worker-test-key-0123456789",
        "CONSENTRY_HTTP_PORT": str(port),
        "CONSENTRY_HTTP_WORKERS": "2",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consentry.consent",
        "api",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async with asyncio.timeout(60):
                while True:
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
            tenant = await client.get(
                "/v1/tenant", headers={"Authorization": "Bearer worker-test-key-0123456789"}
            )
            assert tenant.status_code == 200, tenant.text
        workers = psutil.Process(process.pid).children(recursive=True)
        servers = [p for p in workers if "spawn_main" in " ".join(p.cmdline())]
        assert len(servers) == 2
    finally:
        process.terminate()
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, out.decode()[-2000:]
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in servers)
