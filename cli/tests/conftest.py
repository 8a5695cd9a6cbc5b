"""The CLI against the real stack: the consent service (API, relay, intake, rights workers)
and the audit appender and API on the session's PostgreSQL server and broker, one stack for
all the CLI's tests (the SDK tests' pattern, sdk/python/tests/conftest.py). Commands run
in-process through `typer.testing.CliRunner` with the environment a shell would have."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from typer.testing import CliRunner, Result

from consentry.cli.main import app
from consentry.consent.purposes.models import DEFAULT_PURPOSES
from consentry.devstack.postgres import drop_database
from consentry.devstack.pytest_plugin import environment_defaults, own_broker
from consentry.devstack.services import DEV_API_KEY, SERVICES, Service
from consentry.devstack.stack import DevStack, DevStackSettings
from consentry.sdk import Consentry

POLICY_VERSION = "2026-11"
_PROCESSES = {
    "consent": {"api", "relay", "intake", "rights", "rights-tracker"},
    "audit": {"appender", "api"},
}


def _services() -> list[Service]:
    return [
        dataclasses.replace(
            service,
            processes=tuple(p for p in service.processes if p.name in _PROCESSES[service.name]),
        )
        for service in SERVICES
        if service.name in _PROCESSES
    ]


@pytest.fixture(scope="package")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-stack-logs")


@pytest.fixture(scope="package")
def cli_bootstrap() -> Iterator[str]:
    """A broker of the stack's own (`own_broker`): on the session's, the rights tracker would
    first work through every other test's rights events."""
    with own_broker() as bootstrap:
        yield bootstrap


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def stack(pg_server_dsn: str, cli_bootstrap: str, log_dir: Path) -> AsyncIterator[DevStack]:
    suffix = secrets.token_hex(4)
    services = _services()
    names = {service.name: f"ct_{suffix}_cli_{service.name}" for service in services}
    settings = DevStackSettings.model_validate(
        {
            "database_url": pg_server_dsn,
            "kafka_bootstrap_servers": cli_bootstrap,
            **{f"{service.name}_port": 0 for service in services},
        }
    )
    # No subprocessors service: erasure requests wait for no recipient. Checkpoints every
    # second, so an export soon has a signed one.
    defaults = {
        "CONSENTRY_ERASURE_AWAIT_RECIPIENTS": "false",
        "CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "1",
    }
    try:
        with environment_defaults(defaults):
            async with DevStack(
                settings, services=services, database_names=names, app_roles=True, log_dir=log_dir
            ) as stack:
                yield stack
    finally:
        for name in names.values():
            await drop_database(pg_server_dsn, name)


@pytest.fixture(scope="package")
def env(stack: DevStack) -> dict[str, str]:
    """What a shell next to the dev stack would export (the dev tenant's key)."""
    return {
        "CONSENTRY_ENVIRONMENT": "development",
        "CONSENTRY_API_URL": stack.api_url("consent"),
        "CONSENTRY_AUDIT_URL": stack.api_url("audit"),
        "CONSENTRY_API_KEY": DEV_API_KEY,
        "CONSENTRY_DATABASE_URL": stack.database_dsn("consent"),
        "CONSENTRY_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
    }


@pytest.fixture(scope="package")
def policy(env: dict[str, str]) -> str:
    """The dev tenant's first policy version, published with the CLI itself."""
    notices = [f"--notice={purpose}=For {purpose}." for purpose in DEFAULT_PURPOSES]
    result = run(
        env,
        "policy",
        "publish",
        POLICY_VERSION,
        "--url=https://example.com/privacy/2026-11",
        "--effective-on=2026-11-01",
        *notices,
    )
    assert result.exit_code == 0, result.output
    return POLICY_VERSION


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[Consentry]:
    """The SDK on the dev tenant: how the tests look at what the CLI did."""
    with Consentry(env["CONSENTRY_API_KEY"], consent_url=env["CONSENTRY_API_URL"]) as sdk:
        yield sdk


@pytest.fixture
def subject_id() -> str:
    return f"cli-{secrets.token_hex(6)}@example.com"


def run(env: dict[str, str], *args: str) -> Result:
    """`consentry ARGS` in this process with `env` laid over the environment."""
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
