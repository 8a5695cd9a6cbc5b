"""The whole stack as separate processes, on the session's PostgreSQL server and broker.

The consent relay is left out of the supervised processes: tests start, kill and restart it
themselves (`relay` fixture).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from consentry.devstack.postgres import drop_database
from consentry.devstack.services import DEV_API_KEY, SERVICES, Service, child_env
from consentry.devstack.stack import DevStack, DevStackSettings


def _without_consent_relay() -> list[Service]:
    return [
        dataclasses.replace(
            service, processes=tuple(p for p in service.processes if p.name != "relay")
        )
        if service.name == "consent"
        else service
        for service in SERVICES
    ]


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def stack(pg_server_dsn: str, kafka_bootstrap: str) -> AsyncIterator[DevStack]:
    suffix = secrets.token_hex(4)
    names = {"consent": f"ct_{suffix}_e2e_consent", "audit": f"ct_{suffix}_e2e_audit"}
    settings = DevStackSettings(
        database_url=pg_server_dsn,
        kafka_bootstrap_servers=kafka_bootstrap,
        consent_port=0,
        audit_port=0,
    )
    # Checkpoint quickly: the children inherit this process's environment.
    previous = os.environ.get("CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS")
    os.environ["CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS"] = "0.5"
    try:
        # app_roles: the audit processes run with the restricted role even on a real server.
        async with DevStack(
            settings, services=_without_consent_relay(), database_names=names, app_roles=True
        ) as stack:
            yield stack
    finally:
        if previous is None:
            os.environ.pop("CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS", None)
        else:
            os.environ["CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS"] = previous
        for name in names.values():
            await drop_database(pg_server_dsn, name)


class Relay:
    """The consent outbox relay as a real process the test can kill -9 and restart."""

    def __init__(self, stack: DevStack) -> None:
        self._env = {
            **os.environ,
            **child_env(
                database_dsn=stack.database_dsn("consent"),
                bootstrap=stack.bootstrap,
                http_host="",
                http_port=None,
            ),
            "CONSENTRY_RELAY_BATCH_SIZE": "50",
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consentry.consent", "relay", env=self._env
        )

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), timeout=15)
        self.process = None
        return code


@pytest_asyncio.fixture(loop_scope="session")
async def relay(stack: DevStack) -> AsyncIterator[Relay]:
    relay = Relay(stack)
    await relay.start()
    yield relay
    if relay.process is not None:
        await relay.kill(signal.SIGTERM)


@pytest_asyncio.fixture(loop_scope="session")
async def consent_api(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.api_url("consent"),
        headers={"Authorization": f"Bearer {DEV_API_KEY}"},
        timeout=30,
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def audit_api(stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.api_url("audit"),
        headers={"Authorization": f"Bearer {DEV_API_KEY}"},
        timeout=30,
    ) as client:
        yield client
