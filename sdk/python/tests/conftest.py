"""The SDK against the real stack: the consent service (API, relay, intake, rights workers)
and the preferences API on the session's PostgreSQL server and broker, one stack for all
the SDK's tests; plus a second consent API process with a tiny rate limit (the 429 tests)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from consentry.consent.purposes.models import DEFAULT_PURPOSES
from consentry.devstack.postgres import drop_database, with_user
from consentry.devstack.pytest_plugin import environment_defaults, own_broker
from consentry.devstack.services import (
    DEV_API_KEY,
    READY_PATH,
    SERVICES,
    Service,
    child_env,
)
from consentry.devstack.stack import DevStack, DevStackSettings

POLICY_VERSION = "2026-11"
_PROCESSES = {
    "consent": {"api", "relay", "intake", "rights", "rights-tracker"},
    "preferences": {"api", "directory"},
}


def _services() -> list[Service]:
    """The consent service answers its own rights requests; the preferences service here is
    its API and tenant directory only, so it is not waited for."""
    return [
        dataclasses.replace(
            service,
            processes=tuple(p for p in service.processes if p.name in _PROCESSES[service.name]),
            answers_rights=service.answers_rights and service.name == "consent",
        )
        for service in SERVICES
        if service.name in _PROCESSES
    ]


@pytest.fixture(scope="package")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sdk-stack-logs")


@pytest.fixture(scope="package")
def sdk_bootstrap() -> Iterator[str]:
    """A broker of the stack's own (`own_broker`): on the session's, the stack's consumers
    would first work through every other test's events."""
    with own_broker() as bootstrap:
        yield bootstrap


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def stack(pg_server_dsn: str, sdk_bootstrap: str, log_dir: Path) -> AsyncIterator[DevStack]:
    suffix = secrets.token_hex(4)
    services = _services()
    names = {service.name: f"ct_{suffix}_sdk_{service.name}" for service in services}
    settings = DevStackSettings.model_validate(
        {
            "database_url": pg_server_dsn,
            "kafka_bootstrap_servers": sdk_bootstrap,
            **{f"{service.name}_port": 0 for service in services},
        }
    )
    # No subprocessors service here: erasure requests wait for no recipient's answer.
    try:
        with environment_defaults({"CONSENTRY_ERASURE_AWAIT_RECIPIENTS": "false"}):
            async with DevStack(
                settings, services=services, database_names=names, app_roles=True, log_dir=log_dir
            ) as stack:
                await _publish_policy(stack.api_url("consent"))
                yield stack
    finally:
        for name in names.values():
            await drop_database(pg_server_dsn, name)


async def _publish_policy(consent_url: str) -> None:
    """The dev tenant's first policy version: what consent can be given under."""
    async with httpx.AsyncClient(
        base_url=consent_url, headers={"Authorization": f"Bearer {DEV_API_KEY}"}, timeout=30
    ) as client:
        published = await client.post(
            "/v1/policy-versions",
            json={
                "version": POLICY_VERSION,
                "url": "https://example.com/privacy/2026-11",
                "effective_on": "2026-11-01",
                "purposes": [{"purpose": p, "notice": f"For {p}."} for p in DEFAULT_PURPOSES],
            },
        )
        assert published.status_code == 201, published.text


@pytest.fixture(scope="package")
def consent_url(stack: DevStack) -> str:
    return stack.api_url("consent")


@pytest.fixture(scope="package")
def preferences_url(stack: DevStack) -> str:
    return stack.api_url("preferences")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def limited_consent_url(stack: DevStack, log_dir: Path) -> AsyncIterator[str]:
    """A second consent API process on the same database allowing 1 request a second (burst
    1) per key: the next request within the second is answered 429 with Retry-After."""
    port = _free_port()
    env = {
        **os.environ,
        **child_env(
            database_dsn=with_user(stack.database_dsn("consent"), "consentry_consent_app"),
            bootstrap=stack.bootstrap,
            http_host="127.0.0.1",
            http_port=port,
        ),
        "CONSENTRY_HTTP_RATE_LIMIT_PER_SECOND": "1",
        "CONSENTRY_HTTP_RATE_LIMIT_BURST": "1",
    }
    with (log_dir / "consent.limited-api.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consentry.consent", "api", env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as client, asyncio.timeout(60):
            while True:
                try:
                    if (await client.get(READY_PATH)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.returncode is None, "the rate-limited API exited"
                await asyncio.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=15)


@pytest.fixture
def subject_id() -> str:
    """A fresh subject identifier (the caller's own id of a person, e.g. an e-mail)."""
    return f"sdk-{secrets.token_hex(6)}@example.com"


@pytest.fixture(scope="package")
def readme_env(stack: DevStack) -> dict[str, str]:
    """What the README's examples read from the environment."""
    return {
        "CONSENTRY_API_KEY": DEV_API_KEY,
        "CONSENTRY_CONSENT_URL": stack.api_url("consent"),
        "CONSENTRY_PREFERENCES_URL": stack.api_url("preferences"),
        "CONSENTRY_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
    }
