"""The whole stack as separate processes, on the session's PostgreSQL server and broker.

The consent relay and the audit appender are left out of the supervised processes: tests
start, kill and restart them themselves (`relay` and `appender` fixtures).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from consentry.consent.purposes.models import DEFAULT_PURPOSES
from consentry.devstack.postgres import drop_database, with_user
from consentry.devstack.pytest_plugin import own_broker
from consentry.devstack.services import DEV_API_KEY, SERVICES, Service, child_env
from consentry.devstack.stack import DevStack, DevStackSettings
from consentry.devstack.testing_workers import Worker

# Processes the tests run themselves, to kill and restart them.
UNSUPERVISED = {("consent", "relay"), ("audit", "appender")}


def _supervised() -> list[Service]:
    return [
        dataclasses.replace(
            service,
            processes=tuple(
                p for p in service.processes if (service.name, p.name) not in UNSUPERVISED
            ),
        )
        for service in SERVICES
    ]


@pytest.fixture(scope="package")
def log_dir() -> Iterator[Path]:
    """Where every process of the stack writes its output (`<service>.<process>.log`; the
    workers the tests run themselves too): tests search it for personal data."""
    with tempfile.TemporaryDirectory(prefix="consentry-e2e-logs-") as directory:
        yield Path(directory)


@pytest.fixture(scope="package")
def e2e_bootstrap() -> Iterator[str]:
    """A broker of the stack's own: a fresh embedded Tansu (the configured broker when
    `CONSENTRY_KAFKA_BOOTSTRAP_SERVERS` is set). The session's broker carries the other tests'
    events on the same topics, which the stack's consumers (the audit appender reads from the
    earliest offset) would otherwise work through first."""
    with own_broker() as bootstrap:
        yield bootstrap


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def stack(pg_server_dsn: str, e2e_bootstrap: str, log_dir: Path) -> AsyncIterator[DevStack]:
    suffix = secrets.token_hex(4)
    names = {service.name: f"ct_{suffix}_e2e_{service.name}" for service in SERVICES}
    settings = DevStackSettings.model_validate(
        {
            "database_url": pg_server_dsn,
            "kafka_bootstrap_servers": e2e_bootstrap,
            **{f"{service.name}_port": 0 for service in SERVICES},  # free ports
        }
    )
    # Checkpoint quickly: the children inherit this process's environment.
    previous = os.environ.get("CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS")
    os.environ["CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS"] = "0.5"
    try:
        # app_roles: the audit processes run with the restricted role even on a real server.
        async with DevStack(
            settings,
            services=_supervised(),
            database_names=names,
            app_roles=True,
            log_dir=log_dir,
        ) as stack:
            yield stack
    finally:
        if previous is None:
            os.environ.pop("CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS", None)
        else:
            os.environ["CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS"] = previous
        for name in names.values():
            await drop_database(pg_server_dsn, name)


# What the relay logs once it holds the outbox lock and publishes.
RELAY_ACTIVE = "relay active"


def service_worker(
    service: str,
    command: str,
    database_dsn: str,
    bootstrap: str,
    log_dir: Path,
    ready_line: str | None = None,
) -> Worker:
    """A service's worker as a real process the test can kill -9 and restart, on the stack's
    database and broker, logging to `<service>.<command>.log` in `log_dir`."""
    env = {
        **child_env(database_dsn=database_dsn, bootstrap=bootstrap, http_host="", http_port=None),
        "CONSENTRY_RELAY_BATCH_SIZE": "50",
    }
    return Worker.module(service, command, env=env, log_dir=log_dir, ready_line=ready_line)


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def appender(stack: DevStack, log_dir: Path) -> AsyncIterator[Worker]:
    """The audit appender, logged in with the append-only role like the supervised processes."""
    dsn = with_user(stack.database_dsn("audit"), "consentry_audit_app")
    appender = service_worker("audit", "appender", dsn, stack.bootstrap, log_dir)
    await appender.start()
    yield appender
    await appender.kill(signal.SIGTERM)


@pytest_asyncio.fixture(loop_scope="session")
async def relay(stack: DevStack, appender: Worker, log_dir: Path) -> AsyncIterator[Worker]:
    """The consent relay (and, through its fixture, the audit appender) running."""
    relay = service_worker(
        "consent",
        "relay",
        stack.database_dsn("consent"),
        stack.bootstrap,
        log_dir,
        ready_line=RELAY_ACTIVE,
    )
    await relay.start()
    yield relay
    await relay.kill(signal.SIGTERM)


# The dev tenant's first policy version: every default purpose and the extra purposes the
# tests use. The README's quick start publishes the same version (then answered 409).
POLICY_VERSION = "2026-11"
EXTRA_PURPOSES = tuple(f"purpose-{n}" for n in range(15))


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def dev_policy(stack: DevStack) -> str:
    """Publish the dev tenant's first policy version (once per stack)."""
    async with httpx.AsyncClient(
        base_url=stack.api_url("consent"),
        headers={"Authorization": f"Bearer {DEV_API_KEY}"},
        timeout=30,
    ) as client:
        for purpose in EXTRA_PURPOSES:
            created = await client.put(
                f"/v1/purposes/{purpose}", json={"title": purpose, "legal_basis": "consent"}
            )
            assert created.status_code in (200, 201), created.text
        published = await client.post(
            "/v1/policy-versions",
            json={
                "version": POLICY_VERSION,
                "url": "https://example.com/privacy/2026-11",
                "effective_on": "2026-11-01",
                "purposes": [
                    {"purpose": purpose, "notice": f"What we do for {purpose}."}
                    for purpose in (*DEFAULT_PURPOSES, *EXTRA_PURPOSES)
                ],
            },
        )
        assert published.status_code == 201, published.text
    return POLICY_VERSION


@pytest_asyncio.fixture(loop_scope="session")
async def consent_api(stack: DevStack, dev_policy: str) -> AsyncIterator[httpx.AsyncClient]:
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


async def wait_until_completed(
    consent_api: httpx.AsyncClient, request_id: str, seconds: float = 120
) -> dict[str, Any]:
    """Poll a rights request until it is completed; its last status document."""
    state: dict[str, Any] = {}
    try:
        async with asyncio.timeout(seconds):
            while state.get("state") != "completed":
                await asyncio.sleep(0.2)
                state = (await consent_api.get(f"/v1/rights-requests/{request_id}")).json()
    except TimeoutError:
        pytest.fail(f"the rights request did not complete: {state}")
    return state
